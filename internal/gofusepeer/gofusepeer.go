// Package gofusepeer serves a go-fuse filesystem over a SEQPACKET socketpair,
// for tests of a FUSE client against a real daemon in-process, with no mount
// and no privileges.
//
// go-fuse treats a mountpoint "/dev/fd/N" as "fd N is already a FUSE
// connection" (fuse/server.go parseFuseFd, fuse/mount_linux.go mount): it
// neither mounts nor runs fusermount, and wraps N itself in an *os.File that
// Serve closes when it returns. It does not dup N, so the daemon end must be
// left to go-fuse alone once NewServer is called; NewServer also closes it
// when INIT fails.
package gofusepeer

import (
	"context"
	"fmt"
	"log"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/peerutil"
)

// stopTimeout bounds the wait at cleanup for the server to stop after the
// client end is closed (it takes milliseconds).
const stopTimeout = 5 * time.Second

// ServeMem serves an in-memory tree of fs.MemRegularFile (mode 0644) and
// directories (0755): files maps slash-separated paths ("a/b/c.txt") to
// contents, and the directories on the way are created; a path ending in "/"
// makes just a directory. It returns the client end.
func ServeMem(t testing.TB, files map[string]string) *os.File {
	t.Helper()
	root := &memDir{files: files}
	return ServeRaw(t, fs.NewNodeFS(root, &fs.Options{}))
}

// memDir is a directory of ServeMem; files is set on the root only.
type memDir struct {
	fs.Inode
	files map[string]string
}

// Getattr gives directories permissions: a bare fs.Inode has mode 0.
func (d *memDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o755
	return 0
}

// OnAdd builds the tree when NewNodeFS adopts the root.
func (d *memDir) OnAdd(ctx context.Context) {
	for _, name := range slices.Sorted(maps.Keys(d.files)) {
		dir := &d.Inode
		parts := strings.Split(name, "/")
		for _, p := range parts[:len(parts)-1] {
			ch := dir.GetChild(p)
			if ch == nil {
				ch = dir.NewPersistentInode(ctx, &memDir{}, fs.StableAttr{Mode: fuse.S_IFDIR})
				dir.AddChild(p, ch, false)
			}
			dir = ch
		}
		if base := parts[len(parts)-1]; base != "" {
			f := &fs.MemRegularFile{Data: []byte(d.files[name]), Attr: fuse.Attr{Mode: 0o644}}
			dir.AddChild(base, dir.NewPersistentInode(ctx, f, fs.StableAttr{}), false)
		}
	}
}

// ServeLoopback serves dir through go-fuse's loopback filesystem. It returns
// the client end.
func ServeLoopback(t testing.TB, dir string) *os.File {
	t.Helper()
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ServeRaw(t, fs.NewNodeFS(root, &fs.Options{}))
}

// ServeLoopbackSplicing serves dir through go-fuse's loopback filesystem
// at go-fuse's defaults, splicing included: a READ reply of more than
// about 15 pages then arrives as several records, and concurrent ones
// interleave. It returns the client end.
func ServeLoopbackSplicing(t testing.TB, dir string) *os.File {
	t.Helper()
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ServeRawSplicing(t, fs.NewNodeFS(root, &fs.Options{}))
}

// ServeRawSplicing serves raw at go-fuse's defaults, splicing included.
func ServeRawSplicing(t testing.TB, raw fuse.RawFileSystem) *os.File {
	t.Helper()
	return serve(t, raw, fuse.MountOptions{}, true)
}

// ServeRaw serves raw with go-fuse's default mount options. It returns the
// client end.
func ServeRaw(t testing.TB, raw fuse.RawFileSystem) *os.File {
	t.Helper()
	return ServeRawOptions(t, raw, fuse.MountOptions{})
}

// ServeRawOptions serves raw with opts, except that splicing and direct
// mounts are always off: go-fuse would splice READ replies into several
// records, and a direct mount would call mount(2) on "/dev/fd/N". Its Logger,
// if nil, logs to t while the test runs. It returns the client end.
//
// NewServer reads INIT synchronously, so the server starts in a goroutine and
// the client sends INIT when it likes. At cleanup the client end is closed
// (if the test did not), which ends Serve, and the goroutine is waited for.
func ServeRawOptions(t testing.TB, raw fuse.RawFileSystem, opts fuse.MountOptions) *os.File {
	t.Helper()
	return serve(t, raw, opts, false)
}

func serve(t testing.TB, raw fuse.RawFileSystem, opts fuse.MountOptions, splice bool) *os.File {
	t.Helper()
	client, fd, err := peerutil.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	opts.DisableSplice = !splice
	opts.DirectMount, opts.DirectMountStrict = false, false
	tl := &testLog{t: t}
	if opts.Logger == nil {
		opts.Logger = log.New(tl, "go-fuse: ", 0)
	}
	mountPoint := fmt.Sprintf("/dev/fd/%d", fd)

	done := make(chan struct{})
	go func() {
		defer close(done)
		srv, err := fuse.NewServer(raw, mountPoint, &opts)
		if err != nil {
			// The client closed before a successful INIT; go-fuse has
			// closed fd.
			tl.Write([]byte(fmt.Sprintf("NewServer: %v", err)))
			return
		}
		srv.Serve()
	}()
	t.Cleanup(func() {
		client.Close()
		select {
		case <-done:
		case <-time.After(stopTimeout):
			t.Errorf("gofusepeer: go-fuse server still running %v after the client end closed", stopTimeout)
		}
		tl.stop()
	})
	return client
}

// testLog forwards go-fuse's log lines to t until stop, so that a server that
// outlives its test does not log to a finished test (which panics).
type testLog struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}
