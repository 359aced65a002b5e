package kernel_test

import (
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/fakepeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"github.com/perfuse-go/perfuse/internal/peerutil"
	"github.com/perfuse-go/perfuse/internal/wire"
	"golang.org/x/sys/unix"
)

// A daemon that floods NOTIFY_RETRIEVE and stops reading its socket costs
// the relay a bounded number of goroutines and bounded memory: at most a
// few retrieves are served at once, their NOTIFY_REPLY sends give up on
// their deadline, and the rest are dropped and counted. (Before, each
// retrieve had its own goroutine and buffer, and a user's daemon drove a
// root perfused to 2.8 GB in a second.)
func TestRelayRetrieveFloodIsBounded(t *testing.T) {
	kerneltest.NeedMount(t)
	// Serve INIT and the mount's first requests, then stop reading.
	client, daemon, stop := rawDaemon(t, nil)
	r := kerneltest.Mount(t, client, kernel.Config{})
	stop()
	var before runtime.MemStats
	// Twice: what earlier tests left in sync.Pools survives one GC (the
	// victim cache), and a large baseline lets the GC leave as much garbage
	// again before it runs, which the measure below would count.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	const flood = 20000
	sent := 0
	deadline := time.Now().Add(10 * time.Second)
	for sent < flood && time.Now().Before(deadline) {
		f := fakepeer.NotifyFrame(5, fuse.NotifyRetrieveOut{NotifyUnique: uint64(sent + 1), Nodeid: 1, Size: 1 << 20})
		if _, err := unix.Write(daemon, f); err == unix.EAGAIN {
			time.Sleep(time.Millisecond)
			continue
		} else if err != nil {
			t.Fatalf("notify: %v", err)
		}
		sent++
	}
	time.Sleep(500 * time.Millisecond)
	var after runtime.MemStats
	runtime.GC() // what the flood left live, not what it churned
	runtime.ReadMemStats(&after)
	g := runtime.NumGoroutine()
	dropped := r.M.FS().RetrievesDropped()
	t.Logf("%d retrieves sent, %d dropped; goroutines %d -> %d; heap %d -> %d MB",
		sent, dropped, goroutines, g, before.HeapAlloc>>20, after.HeapAlloc>>20)
	if g > goroutines+50 {
		t.Errorf("%d goroutines after the flood, %d before", g, goroutines)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 100<<20 {
		t.Errorf("heap grew by %d MB", grew>>20)
	}
	if dropped == 0 {
		t.Error("no retrieve dropped from a flood by a daemon that does not read")
	}
}

// A reply that cannot be parsed with certainty (here a GETATTR reply cut
// into two records, as a splicing daemon sends one) fails the whole
// connection through the relay: the caller gets an error, the session
// ends, and the mount is removed. Nobody is left waiting.
func TestRelaySplitReplyEndsTheMount(t *testing.T) {
	kerneltest.NeedMount(t)
	split := make(chan struct{})
	client, _, _ := rawDaemon(t, func(attr []byte) [][]byte {
		select {
		case <-split:
			return [][]byte{attr[:50], attr[50:]}
		default:
			return [][]byte{attr}
		}
	})
	r := kerneltest.Mount(t, client, kernel.Config{})
	close(split)
	errc := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		errc <- unix.Stat(r.Dir+"/.", &st)
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("stat answered from a split reply")
		}
		t.Logf("stat: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("stat still waiting 10 s after a split reply")
	}
	select {
	case err := <-r.MainErr:
		if err == nil {
			t.Error("the session ended cleanly after a split reply")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the session still runs 10 s after a split reply")
	}
	deadline := time.Now().Add(10 * time.Second)
	for kerneltest.Mounted(r.Dir) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if kerneltest.Mounted(r.Dir) {
		t.Error("the mount is still there 10 s after its connection failed")
	}
}

// rawDaemon is a minimal daemon on a socket pair for the relay: it answers
// INIT, GETATTR with a directory's attributes (as records getattr makes
// of the reply; nil: the reply whole), FORGETs with nothing and the rest
// with ENOENT. stop makes it stop reading, for good; the daemon end is
// closed at cleanup.
func rawDaemon(t *testing.T, getattr func(reply []byte) [][]byte) (client *os.File, daemon int, stop func()) {
	t.Helper()
	client, daemon, err := peerutil.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(daemon) })
	unix.SetNonblock(daemon, true)
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 1<<20)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, err := unix.Read(daemon, buf)
			if err == unix.EAGAIN {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil || n < wire.InHeaderSize {
				return
			}
			h, _ := peerutil.Decode[fuse.InHeader](buf[:n])
			var records [][]byte
			switch wire.Opcode(h.Opcode) {
			case wire.OpInit:
				records = [][]byte{fakepeer.ReplyFrame(h.Unique, 0, fakepeer.InitOutBytes(fuse.InitOut{
					Major: 7, Minor: 31, MaxWrite: 1 << 20, MaxReadAhead: 128 << 10, MaxPages: 256, Flags: fuse.CAP_MAX_PAGES,
				}))}
			case wire.OpGetattr:
				attr := fakepeer.ReplyFrame(h.Unique, 0, fuse.AttrOut{Attr: fuse.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}})
				records = [][]byte{attr}
				if getattr != nil {
					records = getattr(attr)
				}
			case wire.OpForget, wire.OpBatchForget:
			default:
				records = [][]byte{fakepeer.ReplyFrame(h.Unique, syscall.ENOENT)}
			}
			for _, r := range records {
				unix.Write(daemon, r)
			}
		}
	}()
	var once sync.Once
	return client, daemon, func() { once.Do(func() { close(quit); <-stopped }) }
}
