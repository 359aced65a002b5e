package nfsexport

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkRead256MiB reads one 256 MiB file of the go-fuse loopback (in
// process) two ways in one run: with nfs-cp through the NFS export (into
// /dev/shm, so the copy's own writes cost little), and mount-free through
// the op table in reads of 1 MiB, as a Go program or "perfuse cat" would.
//
//	go test -run '^$' -bench Read256MiB -benchtime 5x ./nfsexport/
func BenchmarkRead256MiB(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, randReader{}, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	u := loopback(b, dir)

	b.Run("nfs-cp", func(b *testing.B) {
		nfscp, err := exec.LookPath("nfs-cp")
		if err != nil {
			b.Skip("nfs-cp not installed: apt-get install libnfs-utils")
		}
		_, port := serve(b, u, Options{ReadOnly: true})
		shm, err := os.MkdirTemp("/dev/shm", "nfsbench-")
		if err != nil {
			b.Skip("no /dev/shm:", err)
		}
		defer os.RemoveAll(shm)
		url := fmt.Sprintf("nfs://127.0.0.1//big?nfsport=%d&mountport=%d&version=3&auto-traverse-mounts=0", port, port)
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			dst := filepath.Join(shm, fmt.Sprint(i))
			if out, err := exec.Command(nfscp, url, dst).CombinedOutput(); err != nil {
				b.Fatalf("nfs-cp: %v\n%s", err, out)
			}
			os.Remove(dst)
		}
	})
	b.Run("optable", func(b *testing.B) {
		ctx := context.Background()
		e, err := u.NodeLookup(ctx, nil, u.Root(), "big")
		if err != nil {
			b.Fatal(err)
		}
		defer u.NodeReclaim(ctx, e.Node, 1)
		buf := make([]byte, 1<<20)
		b.SetBytes(size)
		for b.Loop() {
			h, err := u.NodeOpen(ctx, nil, e.Node, os.O_RDONLY)
			if err != nil {
				b.Fatal(err)
			}
			var off int64
			for {
				n, err := u.NodeRead(ctx, nil, h, buf, off)
				if err != nil {
					b.Fatal(err)
				}
				off += int64(n)
				if n < len(buf) {
					break
				}
			}
			u.NodeRelease(ctx, h)
			if off != size {
				b.Fatalf("read %d bytes; want %d", off, size)
			}
		}
	})
}

// randReader is cheap incompressible-looking bytes.
type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	x := uint64(len(p))*0x9e3779b97f4a7c15 + 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
	return len(p), nil
}
