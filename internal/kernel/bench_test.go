package kernel_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"golang.org/x/sys/unix"
)

// benchMount mounts a go-fuse loopback of a directory holding a 1 MiB
// file, with no kernel caching of entries or attributes, either directly
// or through the relay, and returns the file's path in the mount.
func benchMount(b *testing.B, relay bool) string { return benchMountSplice(b, relay, false) }

// benchMountSplice is benchMount with the daemon splicing its READ
// replies (relay only: a direct mount never splices to a socket).
func benchMountSplice(b *testing.B, relay, splice bool) string {
	kerneltest.NeedMount(b)
	backing := b.TempDir()
	if err := os.WriteFile(filepath.Join(backing, "f"), make([]byte, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	root, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		b.Fatal(err)
	}
	zero := time.Duration(0)
	raw := gofs.NewNodeFS(root, &gofs.Options{EntryTimeout: &zero, AttrTimeout: &zero})
	if relay {
		conn := gofusepeer.ServeRaw(b, raw)
		if splice {
			conn = gofusepeer.ServeRawSplicing(b, raw)
		}
		r := kerneltest.Mount(b, conn, kernel.Config{})
		return filepath.Join(r.Dir, "f")
	}
	mnt := b.TempDir()
	srv, err := fuse.NewServer(raw, mnt, &fuse.MountOptions{DirectMountStrict: true})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if srv.Unmount() != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return filepath.Join(mnt, "f")
}

func benchStat(b *testing.B, relay bool) {
	p := benchMount(b, relay)
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	b.ResetTimer()
	for b.Loop() {
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRead(b *testing.B, relay, splice bool) {
	p := benchMountSplice(b, relay, splice)
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		// O_DIRECT keeps the page cache out: every read goes to the daemon.
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Pread(fd, buf, 0); err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

func BenchmarkDirectFstat(b *testing.B) { benchStat(b, false) }
func BenchmarkRelayFstat(b *testing.B)  { benchStat(b, true) }
func BenchmarkDirectRead(b *testing.B)  { benchRead(b, false, false) }
func BenchmarkRelayRead(b *testing.B)   { benchRead(b, true, false) }

// BenchmarkRelayReadSplicing is BenchmarkRelayRead with a daemon that
// splices its READ replies (go-fuse's default).
func BenchmarkRelayReadSplicing(b *testing.B) { benchRead(b, true, true) }
