package perfuse

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/fakepeer"
)

// A daemon that never answers: the caller's deadline holds. The request
// is interrupted, the caller waits the grace and leaves with the
// deadline's error.
func TestDaemonThatNeverAnswersHonoursTheDeadline(t *testing.T) {
	p, u := fakeSession(t, WithInterruptGrace(100*time.Millisecond))
	p.Expect(OpGetattr).NoReply()
	intr := p.Expect(OpInterrupt).NoReply()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := u.NodeGetattr(ctx, nil, u.Root(), nil)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("unanswered GETATTR: %v, want the deadline's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	select {
	case <-intr.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("no INTERRUPT sent")
	}
}

// WithRequestTimeout bounds every request of a session, as a deadline on
// each call's context would.
func TestRequestTimeoutBoundsEveryRequest(t *testing.T) {
	p, u := fakeSession(t, WithRequestTimeout(100*time.Millisecond), WithInterruptGrace(50*time.Millisecond))
	p.Expect(OpStatfs).NoReply()
	p.Expect(OpInterrupt).NoReply()
	if _, err := u.FsStatvfs(context.Background(), nil); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("unanswered STATFS: %v, want ETIMEDOUT", err)
	}
}

// A reply that comes after its caller has gone is still accounted for:
// the lookup it carries is forgotten, the open it carries released.
func TestLateRepliesAreUndone(t *testing.T) {
	p, u := fakeSession(t, WithInterruptGrace(20*time.Millisecond))
	p.Expect(OpInterrupt).AnyTimes().NoReply()
	late := func(r fakepeer.Request, parts ...any) [][]byte {
		time.Sleep(300 * time.Millisecond) // past the caller's deadline and grace
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, parts...)}
	}
	p.Expect(OpLookup).Name("f").ReplyFunc(func(r fakepeer.Request) [][]byte {
		return late(r, entryOut(7, syscall.S_IFREG|0o644))
	})
	forget := p.Expect(OpForget).Nodeid(7).Match(func(h *fuse.InHeader, payload []byte) error {
		if n := nativeEndian.Uint64(payload); n != 1 {
			return errors.New("FORGET of more than the one late lookup")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := u.NodeLookup(ctx, nil, u.Root(), "f"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("late LOOKUP: %v, want the deadline", err)
	}
	select {
	case <-forget.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the late entry was never forgotten")
	}

	p.Expect(OpLookup).Name("g").Reply(entryOut(8, syscall.S_IFREG|0o644))
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "g")
	if err != nil {
		t.Fatal(err)
	}
	p.Expect(OpOpen).Nodeid(8).ReplyFunc(func(r fakepeer.Request) [][]byte {
		return late(r, fuse.OpenOut{Fh: 42})
	})
	release := p.Expect(OpRelease).Nodeid(8).Match(func(h *fuse.InHeader, payload []byte) error {
		if fh := nativeEndian.Uint64(payload); fh != 42 {
			return errors.New("RELEASE of another handle")
		}
		return nil
	}).Reply()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := u.NodeOpen(ctx2, nil, e.Node, os.O_RDONLY); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("late OPEN: %v, want the deadline", err)
	}
	select {
	case <-release.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the late open was never released")
	}
	if got := u.Counters()["Late replies undone"]; got != 2 {
		t.Errorf("%d late replies undone, want 2", got)
	}
	p.Expect(OpForget).Nodeid(8).AnyTimes()
}

// A daemon whose readdir cookies cycle (1, 2, 1, …) would be read
// forever: the repeat is found and the listing fails with EIO.
func TestReaddirCyclingCookiesIsEIO(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpOpendir).Nodeid(RootID).Reply(fuse.OpenOut{Fh: 3})
	p.Expect(OpReaddir).AnyTimes().ReplyFunc(func(r fakepeer.Request) [][]byte {
		in, _ := fakepeer.In[fuse.ReadIn](r)
		next := uint64(1)
		if in.Offset == 1 {
			next = 2
		}
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, dirent(9, next, 8, "x"))}
	})
	p.Expect(OpReleasedir).AnyTimes().Reply()
	h, err := u.NodeOpen(testCtx(t), nil, u.Root(), os.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	err = u.NodeReaddir(testCtx(t), nil, h, 0, func(Dirent) bool { entries++; return true })
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("cycling cookies: %v after %d entries, want EIO", err, entries)
	}
	if entries > 3 {
		t.Errorf("%d entries read before the cycle was found", entries)
	}
}

// A read of several pieces stops sending once its context has ended.
func TestReadStopsSendingAfterItsContextEnds(t *testing.T) {
	p, u := fakeSession(t, WithInterruptGrace(-1))
	p.Expect(OpLookup).Reply(entryOut(5, syscall.S_IFREG|0o644))
	p.Expect(OpOpen).Reply(fuse.OpenOut{Fh: 1})
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	h, err := u.NodeOpen(testCtx(t), nil, e.Node, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.Expect(OpRead).AnyTimes().ReplyFunc(func(r fakepeer.Request) [][]byte {
		cancel()
		return nil
	})
	p.Expect(OpInterrupt).AnyTimes().NoReply()
	buf := make([]byte, 64*spliceSafeRead)
	if _, err := u.NodeRead(ctx, nil, h, buf, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("read: %v, want the cancellation", err)
	}
	n := 0
	for _, r := range p.Received() {
		if r.Op() == OpRead {
			n++
		}
	}
	if n > readPiecesInFlight {
		t.Errorf("%d READs sent for a read cancelled at its first: want at most the %d in flight", n, readPiecesInFlight)
	}
	p.Expect(OpRelease).AnyTimes().Reply()
	p.Expect(OpForget).AnyTimes()
}

// A request made with a nil *Cred is this process's.
func TestNilCredIsTheCallingProcess(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpGetattr).Match(func(h *fuse.InHeader, _ []byte) error {
		if h.Pid != uint32(os.Getpid()) || h.Uid != uint32(os.Getuid()) || h.Gid != uint32(os.Getgid()) {
			return errors.New("header credentials are not this process's")
		}
		return nil
	}).Reply(attrOut(1, syscall.S_IFDIR|0o755, 0))
	if _, err := u.NodeGetattr(testCtx(t), nil, u.Root(), nil); err != nil {
		t.Fatal(err)
	}
}

// A daemon whose cookies cycle, listing DT_UNKNOWN entries that are gone
// when looked up: one ReadDir(1) of the io/fs view calls NodeReaddir again
// and again, each call too short to see the cycle itself. The view keeps
// the cookies it resumed from and fails with EIO.
func TestIOFSReadDirCyclingCookiesAcrossCalls(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpGetattr).AnyTimes().Reply(attrOut(1, syscall.S_IFDIR|0o755, 0))
	p.Expect(OpOpendir).AnyTimes().Reply(fuse.OpenOut{Fh: 3})
	var readdirs atomic.Int64
	p.Expect(OpReaddir).AnyTimes().ReplyFunc(func(r fakepeer.Request) [][]byte {
		readdirs.Add(1)
		in, _ := fakepeer.In[fuse.ReadIn](r)
		o := in.Offset
		d := append(dirent(9, o%2+1, 0, "a"), dirent(10, (o+1)%2+1, 0, "b")...)
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, d)}
	})
	p.Expect(OpLookup).AnyTimes().ReplyErrno(syscall.ENOENT)
	p.Expect(OpReleasedir).AnyTimes().Reply()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	f, err := u.FS(ctx, nil).Open(".")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ents, err := f.(fs.ReadDirFile).ReadDir(1)
	t.Logf("ReadDir(1) = %d entries, %v after %v and %d READDIRs", len(ents), err, time.Since(start), readdirs.Load())
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("ReadDir(1) on cycling cookies: %v, want EIO", err)
	}
	if readdirs.Load() > 10 {
		t.Errorf("cookie cycle not detected across the view's READDIRs: %d sent", readdirs.Load())
	}
}

// Writes on one node are serialised, but a write waiting behind one the
// daemon holds still leaves on its own deadline.
func TestWriteBehindAHeldWriteHonoursItsDeadline(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpLookup).Reply(entryOut(5, syscall.S_IFREG|0o644))
	p.Expect(OpOpen).Reply(fuse.OpenOut{Fh: 1})
	p.Expect(OpWrite).AnyTimes().NoReply()
	p.Expect(OpInterrupt).AnyTimes().NoReply()
	p.Expect(OpRelease).AnyTimes().Reply()
	p.Expect(OpForget).AnyTimes()
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	h, err := u.NodeOpen(testCtx(t), nil, e.Node, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	first, cancelFirst := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancelFirst()
	go u.NodeWrite(first, nil, h, []byte("a"), 0, 0, 0)
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = u.NodeWrite(ctx, nil, h, []byte("b"), 1, 0, 0)
	took := time.Since(start)
	t.Logf("second write with a 300ms deadline: %v after %v", err, took)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second write: %v, want its deadline", err)
	}
	if took > 3*time.Second {
		t.Errorf("second write returned %v after its 300ms deadline", took)
	}
}

// A node reclaimed while open keeps its lookup until its last release, as
// the kernel never forgets an open node: daemons rely on it (go-fuse
// panics on the RELEASE of a forgotten node).
func TestReclaimOfAnOpenNodeWaitsForItsRelease(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpLookup).Reply(entryOut(5, syscall.S_IFREG|0o644))
	p.Expect(OpOpen).Nodeid(5).Reply(fuse.OpenOut{Fh: 1})
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	h, err := u.NodeOpen(testCtx(t), nil, e.Node, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.NodeReclaim(testCtx(t), e.Node, 1); err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Received() {
		if r.Op() == OpForget {
			t.Fatal("FORGET sent while the node is open")
		}
	}
	release := p.Expect(OpRelease).Nodeid(5).Reply()
	forget := p.Expect(OpForget).Nodeid(5)
	if err := u.NodeRelease(testCtx(t), h); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*fakepeer.Expectation{release, forget} {
		select {
		case <-e.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%v not sent after the last release", e)
		}
	}
	var order []Opcode
	for _, r := range p.Received() {
		if r.Op() == OpRelease || r.Op() == OpForget {
			order = append(order, r.Op())
		}
	}
	if len(order) != 2 || order[0] != OpRelease || order[1] != OpForget {
		t.Fatalf("sent %v, want RELEASE then FORGET", order)
	}
}
