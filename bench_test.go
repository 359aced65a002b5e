package perfuse

import (
	"context"
	"fmt"
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
			if h, _ := c.Call(OpGetattr, RootID, in); h.Status != 0 {
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

// BenchmarkRead reads a file of the go-fuse loopback daemon, with
// splicing off and on (go-fuse's default), 128 KiB and 1 MiB per call.
// perfuse asks for at most 13 pages per READ, several in flight, so that a
// spliced reply is one record; raw-client/128K is one 128 KiB READ per
// call on a non-splicing daemon, what an uncapped client would send: the
// ratio to perfuse/splice-off/128K is the cost of the cap.
func BenchmarkRead(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 1<<20)
	if err := os.WriteFile(dir+"/f", data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("raw-client/128K", func(b *testing.B) {
		c := peerutil.NewClient(b, gofusepeer.ServeLoopback(b, dir))
		c.Init(31, fuse.CAP_ASYNC_READ|fuse.CAP_BIG_WRITES|fuse.CAP_MAX_PAGES)
		h, p := c.Call(OpLookup, RootID, []byte("f\x00"))
		e, _ := peerutil.Decode[fuse.EntryOut](p)
		if h.Status != 0 {
			b.Fatal(h.Status)
		}
		h, p = c.Call(OpOpen, e.NodeId, peerutil.InPayload(&fuse.OpenIn{}))
		o, _ := peerutil.Decode[fuse.OpenOut](p)
		in := peerutil.InPayload(&fuse.ReadIn{Fh: o.Fh, Size: 128 << 10})
		b.SetBytes(128 << 10)
		b.ResetTimer()
		for range b.N {
			if h, p := c.Call(OpRead, e.NodeId, in); h.Status != 0 || len(p) != 128<<10 {
				b.Fatal(h.Status, len(p))
			}
		}
	})
	for _, splice := range []bool{false, true} {
		name := "splice-off"
		if splice {
			name = "splice-on"
		}
		for _, size := range []int{128 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("perfuse/%s/%dK", name, size>>10), func(b *testing.B) {
				conn := gofusepeer.ServeLoopback(b, dir)
				if splice {
					conn = gofusepeer.ServeLoopbackSplicing(b, dir)
				}
				u := benchSession(b, conn)
				ctx := context.Background()
				e, err := u.NodeLookup(ctx, nil, u.Root(), "f")
				if err != nil {
					b.Fatal(err)
				}
				h, err := u.NodeOpen(ctx, nil, e.Node, os.O_RDONLY)
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					if n, err := u.NodeRead(ctx, nil, h, buf, 0); err != nil || n != size {
						b.Fatal(n, err)
					}
				}
			})
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

// BenchmarkWrite128K writes 128 KiB per call to a go-fuse loopback
// daemon. The data goes to the socket by writev after the request's
// header, not copied into a frame.
func BenchmarkWrite128K(b *testing.B) {
	dir := b.TempDir()
	u := benchSession(b, gofusepeer.ServeLoopback(b, dir))
	ctx := context.Background()
	e, h, err := u.NodeCreate(ctx, nil, u.Root(), "f", os.O_RDWR|os.O_CREATE, 0o644, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer u.NodeReclaim(ctx, e.Node, 1)
	defer u.NodeRelease(ctx, h)
	data := make([]byte, 128<<10)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if n, err := u.NodeWrite(ctx, nil, h, data, 0, 0, 0); err != nil || n != len(data) {
			b.Fatal(n, err)
		}
	}
}
