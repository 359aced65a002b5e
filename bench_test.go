package perfuse

import (
	"context"
	"os"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"github.com/perfuse-go/perfuse/internal/peerutil"
)

// Compare BenchmarkGetattr/perfuse with BenchmarkGetattr/raw-client (a
// hand-written one-request-at-a-time client on the same kind of socket and
// daemon) and read the ratio: the cost of perfuse's session, matching and
// checks on top of the socket.
func BenchmarkGetattr(b *testing.B) {
	files := map[string]string{"f": "x"}
	b.Run("raw-client", func(b *testing.B) {
		c := peerutil.NewClient(b, gofusepeer.ServeMem(b, files))
		c.Init(31, fuse.CAP_ASYNC_READ)
		in := peerutil.InPayload(&fuse.GetAttrIn{})
		b.ResetTimer()
		for range b.N {
			if h, _ := c.Call(uint32(OpGetattr), RootID, in); h.Status != 0 {
				b.Fatal(h.Status)
			}
		}
	})
	b.Run("perfuse", func(b *testing.B) {
		u := benchSession(b, gofusepeer.ServeMem(b, files))
		ctx := context.Background()
		b.ResetTimer()
		for range b.N {
			if _, err := u.NodeGetattr(ctx, nil, u.Root(), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("perfuse-parallel", func(b *testing.B) {
		u := benchSession(b, gofusepeer.ServeMem(b, files))
		ctx := context.Background()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := u.NodeGetattr(ctx, nil, u.Root(), nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRead128K reads 128 KiB per call from a go-fuse loopback daemon.
func BenchmarkRead128K(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 128<<10)
	if err := os.WriteFile(dir+"/f", data, 0o644); err != nil {
		b.Fatal(err)
	}
	u := benchSession(b, gofusepeer.ServeLoopback(b, dir))
	ctx := context.Background()
	e, err := u.NodeLookup(ctx, nil, u.Root(), "f")
	if err != nil {
		b.Fatal(err)
	}
	h, err := u.NodeOpen(ctx, nil, e.Node, os.O_RDONLY)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, len(data))
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if n, err := u.NodeRead(ctx, nil, h, buf, 0); err != nil || n != len(data) {
			b.Fatal(n, err)
		}
	}
}

func benchSession(b *testing.B, conn *os.File) *Usermount {
	u, err := Attach(context.Background(), conn, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { u.Unmount(context.Background()) })
	return u
}
