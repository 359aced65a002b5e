package perfuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/fakepeer"
)

// fakeSession starts a session with a scripted daemon that answers INIT
// with minor 31 and accepts DESTROY at the end.
func fakeSession(t *testing.T, opts ...Option) (*fakepeer.Peer, *Usermount) {
	t.Helper()
	p, conn := fakepeer.New(t)
	p.ServeInit(31, 128<<10, uint32(fuse.CAP_MAX_PAGES|fuse.CAP_ASYNC_READ))
	p.Expect(OpDestroy).AnyTimes()
	u, err := Attach(testCtx(t), conn, nil, opts...)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { u.Unmount(context.Background()) })
	return p, u
}

func attrOut(ino uint64, mode uint32, size uint64) fuse.AttrOut {
	return fuse.AttrOut{Attr: fuse.Attr{Ino: ino, Mode: mode, Size: size, Nlink: 1}}
}

func entryOut(nodeid uint64, mode uint32) fuse.EntryOut {
	return fuse.EntryOut{NodeId: nodeid, Attr: fuse.Attr{Ino: nodeid, Mode: mode, Nlink: 1}}
}

func TestInitFrame(t *testing.T) {
	p, conn := fakepeer.New(t)
	p.ServeInit(31, 1<<20, uint32(fuse.CAP_MAX_PAGES|fuse.CAP_SPLICE_WRITE|fuse.CAP_ASYNC_READ))
	cb, err := SocketCallbacks(conn, WithBufSize(DefaultBufSize))
	if err != nil {
		t.Fatal(err)
	}
	u, err := Init(cb, &MountInfo{Target: "/mnt", UID: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Umount(u)
	if u.InLoop() {
		t.Fatal("in loop before Mainloop")
	}
	// INIT goes through the reader that serves every later reply.
	if err := u.FsInit(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	r := p.Received()[0]
	if r.Op() != OpInit || r.Header.Unique != 2 || r.Header.NodeId != 0 ||
		r.Header.Uid != 0 || r.Header.Gid != 0 || r.Header.Pid != 0 || int(r.Header.Length) != len(r.Frame) {
		t.Errorf("INIT header %+v", r.Header)
	}
	in, ok := fakepeer.In[fuse.InitIn](r)
	if !ok || len(r.Payload) != 64 {
		t.Fatalf("INIT payload of %d bytes, want the kernel's 64", len(r.Payload))
	}
	if in.Major != 7 || in.Minor < 31 || in.MaxReadAhead != 32*4096 {
		t.Errorf("INIT offers %d.%d readahead %d", in.Major, in.Minor, in.MaxReadAhead)
	}
	must := uint32(fuse.CAP_ASYNC_READ | fuse.CAP_POSIX_LOCKS | fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_BIG_WRITES | fuse.CAP_MAX_PAGES | fuse.CAP_PARALLEL_DIROPS)
	never := uint32(fuse.CAP_SPLICE_READ | fuse.CAP_SPLICE_WRITE | fuse.CAP_SPLICE_MOVE)
	if in.Flags&must != must || in.Flags&never != 0 || in.Flags2 != 0 {
		t.Errorf("INIT flags %#x flags2 %#x", in.Flags, in.Flags2)
	}
	minor, flags, maxWrite, maxRead := u.Negotiated()
	if minor != 31 || flags&uint64(fuse.CAP_SPLICE_WRITE) != 0 || flags&uint64(fuse.CAP_MAX_PAGES) == 0 {
		t.Errorf("negotiated minor %d flags %#x", minor, flags)
	}
	if maxWrite != 1<<20 || maxRead != 256*4096 {
		t.Errorf("max_write %d max read %d, want 1 MiB each", maxWrite, maxRead)
	}
	if mi := u.MountInfo(); mi.Flags&(mountNoSuid|mountNoDev) != mountNoSuid|mountNoDev {
		t.Errorf("non-root mount flags %#x lack nosuid,nodev", mi.Flags)
	}
}

func TestInitReplies(t *testing.T) {
	for _, c := range []struct {
		name      string
		reply     func(unique uint64) []byte
		wantErr   error
		wantWrite int
	}{
		{"old minor 12, 24-byte reply", func(u uint64) []byte {
			return fakepeer.ReplyFrame(u, 0, fakepeer.InitOutBytes(fuse.InitOut{Major: 7, Minor: 12, MaxWrite: 65536}))
		}, nil, 65536},
		{"max_write 0 floors at a page", func(u uint64) []byte {
			return fakepeer.ReplyFrame(u, 0, fakepeer.InitOutBytes(fuse.InitOut{Major: 7, Minor: 31}))
		}, nil, 4096},
		{"max_write too big for the socket", func(u uint64) []byte {
			return fakepeer.ReplyFrame(u, 0, fakepeer.InitOutBytes(fuse.InitOut{Major: 7, Minor: 31, MaxWrite: 1 << 30}))
		}, nil, -1},
		{"minor 11", func(u uint64) []byte {
			return fakepeer.ReplyFrame(u, 0, fakepeer.InitOutBytes(fuse.InitOut{Major: 7, Minor: 11}))
		}, syscall.EPROTO, 0},
		{"major 8", func(u uint64) []byte {
			return fakepeer.ReplyFrame(u, 0, fakepeer.InitOutBytes(fuse.InitOut{Major: 8, Minor: 31}))
		}, syscall.EPROTO, 0},
		{"error", func(u uint64) []byte { return fakepeer.ReplyFrame(u, syscall.EPROTO) }, syscall.EPROTO, 0},
		{"ENOSYS", func(u uint64) []byte { return fakepeer.ReplyFrame(u, syscall.ENOSYS) }, syscall.ENOSYS, 0},
		{"short payload", func(u uint64) []byte { return fakepeer.ReplyFrame(u, 0, []byte{7, 0, 0, 0}) }, syscall.EPROTO, 0},
		{"minor 31 with 30 bytes", func(u uint64) []byte {
			b := fakepeer.InitOutBytes(fuse.InitOut{Major: 7, Minor: 31})
			return fakepeer.ReplyFrame(u, 0, b[:30])
		}, syscall.EPROTO, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, conn := fakepeer.New(t)
			p.Expect(OpInit).ReplyFunc(func(r fakepeer.Request) [][]byte { return [][]byte{c.reply(r.Header.Unique)} })
			u, err := Attach(testCtx(t), conn, nil, WithBufSize(1<<20))
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("Attach: %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer u.Unmount(context.Background())
			p.Expect(OpDestroy)
			_, _, maxWrite, _ := u.Negotiated()
			want := c.wantWrite
			if want < 0 {
				// Capped so a WRITE frame fits the socket's records.
				want = (u.maxFrame() - writeHeader) &^ 4095
			}
			if maxWrite != want {
				t.Errorf("max_write %d, want %d", maxWrite, want)
			}
		})
	}
}

// Eight requests are in flight together: the daemon holds its replies until
// it has all eight, then answers in reverse order.
func TestConcurrentRequestsInFlight(t *testing.T) {
	p, u := fakeSession(t)
	const n = 8
	p.HoldUntil(n)
	p.Expect(OpGetattr).Times(n).ReplyFunc(func(r fakepeer.Request) [][]byte {
		// Each reply carries its request's unique as the size, so a reply
		// delivered to the wrong waiter shows.
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, attrOut(1, syscall.S_IFDIR|0o755, r.Header.Unique))}
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := u.NodeGetattr(testCtx(t), &Cred{Uid: 1, Gid: 2, Pid: 3}, u.Root(), nil)
			if err != nil {
				errs <- err
				return
			}
			if out.Size%2 != 0 || out.Size < 2 {
				errs <- fmt.Errorf("reply for unique %d", out.Size)
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	seen := map[uint64]bool{}
	for _, r := range p.Received()[1:] {
		if r.Header.Uid != 1 || r.Header.Gid != 2 || r.Header.Pid != 3 {
			t.Errorf("credentials %+v", r.Header.Caller)
		}
		if r.Header.Unique%2 != 0 || seen[r.Header.Unique] {
			t.Errorf("unique %d odd or reused", r.Header.Unique)
		}
		seen[r.Header.Unique] = true
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// settle waits until cond holds, or reports false after a few seconds.
func settle(cond func() bool) bool {
	for i := 0; i < 300; i++ {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// A daemon that dies while eight goroutines wait: all get ENOTCONN, so does
// every later call, Mainloop returns, and no goroutine or fd is left.
func TestDaemonDeathFailsEveryWaiter(t *testing.T) {
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	p, conn := fakepeer.New(t)
	p.ServeInit(31, 128<<10, 0)
	const n = 8
	p.Expect(OpGetattr).Times(n).NoReply()
	u, err := Attach(testCtx(t), conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	loop := make(chan error, 1)
	go func() { loop <- u.Mainloop() }()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := u.NodeGetattr(context.Background(), nil, u.Root(), nil)
			errs <- err
		}()
	}
	settle(func() bool { return len(p.Received()) == n+1 })
	p.Kill()
	for i := 0; i < n; i++ {
		if err := <-errs; !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("waiter %d: %v, want ENOTCONN", i, err)
		}
	}
	if _, err := u.NodeGetattr(context.Background(), nil, u.Root(), nil); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("call after death: %v, want ENOTCONN", err)
	}
	select {
	case err := <-loop:
		if !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("Mainloop: %v, want ENOTCONN", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Mainloop still running after the daemon died")
	}
	if err := u.Unmount(context.Background()); err != nil {
		t.Errorf("Unmount after death: %v", err)
	}
	if !settle(func() bool { return runtime.NumGoroutine() <= goroutines+1 }) {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
	}
	// The peer's own end closes at its cleanup; ours must be closed now.
	if got := openFDs(t); got > fds+1 {
		t.Errorf("%d fds open, %d before", got, fds)
	}
}

func TestMalformedReplies(t *testing.T) {
	frame := func(u uint64, status int32, payload []byte) []byte {
		return fakepeer.RawFrame(fuse.OutHeader{Length: uint32(16 + len(payload)), Status: status, Unique: u}, payload)
	}
	good := func(u uint64) []byte { return fakepeer.ReplyFrame(u, 0, attrOut(1, syscall.S_IFDIR|0o755, 0)) }
	// A record that is not one whole frame fails the connection: no later
	// record can be trusted to start a frame (a spliced reply's pieces are
	// raw file data).
	for _, c := range []struct {
		name      string
		reply     func(u uint64) [][]byte
		want      error
		failsConn bool
	}{
		{"payload too short", func(u uint64) [][]byte { return [][]byte{frame(u, 0, make([]byte, 50))} }, syscall.EPROTO, false},
		{"payload too long", func(u uint64) [][]byte { return [][]byte{frame(u, 0, make([]byte, 200))} }, syscall.EPROTO, false},
		{"positive status", func(u uint64) [][]byte { return [][]byte{frame(u, 5, nil)} }, syscall.EPROTO, false},
		{"status out of range", func(u uint64) [][]byte { return [][]byte{frame(u, -5000, nil)} }, syscall.EPROTO, false},
		{"errno", func(u uint64) [][]byte { return [][]byte{frame(u, -int32(syscall.EACCES), nil)} }, syscall.EACCES, false},
		{"unknown unique first, then the reply", func(u uint64) [][]byte { return [][]byte{good(u + 1000), good(u)} }, nil, false},
		{"header length smaller than the record", func(u uint64) [][]byte {
			b := good(u)
			fuseLen := uint32(len(b) - 8)
			b[0], b[1], b[2], b[3] = byte(fuseLen), byte(fuseLen>>8), 0, 0
			return [][]byte{b}
		}, syscall.EPROTO, true},
		{"a record too short for a header, then the reply", func(u uint64) [][]byte { return [][]byte{{1, 2, 3}, good(u)} }, syscall.EPROTO, true},
		{"split in three records", func(u uint64) [][]byte { return fakepeer.Split(good(u), 16, 50) }, syscall.EPROTO, true},
		{"split that never completes", func(u uint64) [][]byte { return fakepeer.Split(good(u), 40)[:1] }, syscall.EPROTO, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, u := fakeSession(t)
			p.Expect(OpGetattr).ReplyFunc(func(r fakepeer.Request) [][]byte { return c.reply(r.Header.Unique) })
			_, err := u.NodeGetattr(testCtx(t), nil, u.Root(), nil)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.failsConn {
				if !errors.Is(err, syscall.ENOTCONN) {
					t.Fatalf("got %v, want the connection failed (ENOTCONN)", err)
				}
				if _, err := u.FsStatvfs(testCtx(t), nil); !errors.Is(err, syscall.ENOTCONN) {
					t.Fatalf("next request on a failed connection: %v, want ENOTCONN", err)
				}
				return
			}
			// The connection keeps serving.
			p.Expect(OpStatfs).Reply(fuse.StatfsOut{Bsize: 4096})
			if st, err := u.FsStatvfs(testCtx(t), nil); err != nil || st.Bsize != 4096 {
				t.Fatalf("next request: %+v %v", st, err)
			}
		})
	}
}

// Cancelling a call's context sends INTERRUPT for its unique (unique|1 as
// its own) and still takes the daemon's answer.
func TestInterrupt(t *testing.T) {
	p, u := fakeSession(t)
	var mu sync.Mutex
	var pending uint64
	p.Expect(OpGetattr).ReplyFunc(func(r fakepeer.Request) [][]byte {
		mu.Lock()
		pending = r.Header.Unique
		mu.Unlock()
		return nil
	})
	intr := p.Expect(OpInterrupt).ReplyFunc(func(r fakepeer.Request) [][]byte {
		in, _ := fakepeer.In[fuse.InterruptIn](r)
		mu.Lock()
		defer mu.Unlock()
		if in.Unique != pending || r.Header.Unique != pending|1 {
			return [][]byte{fakepeer.ReplyFrame(pending, syscall.EBADMSG)}
		}
		return [][]byte{fakepeer.ReplyFrame(pending, syscall.EINTR)}
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := u.NodeGetattr(ctx, nil, u.Root(), nil); errc <- err }()
	settle(func() bool { mu.Lock(); defer mu.Unlock(); return pending != 0 })
	cancel()
	<-intr.Done()
	if err := <-errc; !errors.Is(err, syscall.EINTR) {
		t.Fatalf("interrupted call: %v, want EINTR", err)
	}
}

func TestNotificationsGoToTheHandler(t *testing.T) {
	p, u := fakeSession(t)
	got := make(chan *Notification, 4)
	u.SetNotifyHandler(func(n *Notification) { got <- n })
	p.Send(fakepeer.NotifyFrame(int32(NotifyInvalEntry), uint64(1), uint32(3), uint32(0), []byte("abc\x00")))
	p.Send(fakepeer.NotifyFrame(99, uint64(1)))                                 // unknown: logged, dropped
	p.Send(fakepeer.NotifyFrame(int32(NotifyInvalInode), uint64(7), uint64(0))) // short: dropped
	p.Send(fakepeer.NotifyFrame(int32(NotifyInvalInode), uint64(7), uint64(0), uint64(100)))
	for _, want := range []Notification{{Code: NotifyInvalEntry, Parent: 1, Name: "abc"}, {Code: NotifyInvalInode, Nodeid: 7, Len: 100}} {
		select {
		case n := <-got:
			if n.Code != want.Code || n.Parent != want.Parent || n.Name != want.Name || n.Nodeid != want.Nodeid || n.Len != want.Len {
				t.Errorf("got %+v, want %+v", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s notification", want.Code)
		}
	}
	// The session still serves.
	p.Expect(OpStatfs).Reply(fuse.StatfsOut{})
	if _, err := u.FsStatvfs(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
}

func TestLookupFrameAndNames(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpLookup).Nodeid(1).Name("a").ReplyErrno(syscall.ENOENT)
	if _, err := u.NodeLookup(testCtx(t), &Cred{Uid: 5, Gid: 6, Pid: 7}, u.Root(), "a"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lookup a: %v, want ENOENT", err)
	}
	r := p.Received()[1]
	if !bytes.Equal(r.Payload, []byte("a\x00")) || r.Header.Uid != 5 || r.Header.Gid != 6 || r.Header.Pid != 7 {
		t.Errorf("LOOKUP payload %q header %+v", r.Payload, r.Header)
	}
	// A negative entry (nodeid 0) is ENOENT too, and counts nothing.
	p.Expect(OpLookup).Name("neg").Reply(fuse.EntryOut{})
	if _, err := u.NodeLookup(testCtx(t), nil, u.Root(), "neg"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("negative entry: %v", err)
	}
	for name, want := range map[string]error{
		"": syscall.EINVAL, "a/b": syscall.EINVAL, "a\x00b": syscall.EINVAL, string(make([]byte, 256)): syscall.EINVAL,
		string(bytes.Repeat([]byte("x"), 256)): syscall.ENAMETOOLONG,
	} {
		if _, err := u.NodeLookup(testCtx(t), nil, u.Root(), name); !errors.Is(err, want) {
			t.Errorf("lookup %q: %v, want %v", name, err, want)
		}
	}
	// Lookups count per entry; reclaim returns exactly that count.
	p.Expect(OpLookup).Name("f").Times(2).Reply(entryOut(9, syscall.S_IFREG|0o644))
	e1, err1 := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	e2, err2 := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err1 != nil || err2 != nil || e1.Node != e2.Node || u.Lookups(e1.Node) != 2 {
		t.Fatalf("lookups: %v %v, same node %v, count %d", err1, err2, e1.Node == e2.Node, u.Lookups(e1.Node))
	}
	forget := p.Expect(OpForget).Nodeid(9).Match(func(h *fuse.InHeader, payload []byte) error {
		if n := nativeEndian.Uint64(payload); n != 2 {
			return fmt.Errorf("nlookup %d, want 2", n)
		}
		return nil
	})
	if err := u.NodeReclaim(testCtx(t), e1.Node, 5); err != nil {
		t.Fatal(err)
	}
	<-forget.Done()
	if u.NodeByID(9) != nil || u.NodeReclaim(testCtx(t), u.Root(), 1) != nil {
		t.Error("forgotten node still known, or root reclaim failed")
	}
}

func TestReadAndReaddirChunks(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpLookup).Name("f").Reply(entryOut(5, syscall.S_IFREG|0o644))
	p.Expect(OpOpen).Nodeid(5).Match(func(h *fuse.InHeader, payload []byte) error {
		if f := nativeEndian.Uint32(payload); f != syscall.O_RDONLY {
			return fmt.Errorf("open flags %#x", f)
		}
		return nil
	}).Reply(fuse.OpenOut{Fh: 0})
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	h, err := u.NodeOpen(testCtx(t), nil, e.Node, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_EXCL)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, maxRead := u.Negotiated()
	maxRead = min(maxRead, spliceSafeRead)
	// Five pieces in flight together; the third is short (end of file),
	// and the result ends there.
	var mu sync.Mutex // the peer's goroutine records, the test reads
	var offsets []uint64
	p.Expect(OpRead).Nodeid(5).Times(5).ReplyFunc(func(r fakepeer.Request) [][]byte {
		in, _ := fakepeer.In[fuse.ReadIn](r)
		mu.Lock()
		offsets = append(offsets, in.Offset)
		mu.Unlock()
		n := int(in.Size)
		if in.Offset >= uint64(2*maxRead) {
			n = 10
		}
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, bytes.Repeat([]byte{byte(in.Offset / uint64(maxRead))}, n))}
	})
	buf := make([]byte, 5*maxRead)
	n, err := u.NodeRead(testCtx(t), nil, h, buf, 0)
	if err != nil || n != 2*maxRead+10 || buf[maxRead] != 1 || buf[2*maxRead+9] != 2 {
		t.Fatalf("read %d, %v", n, err)
	}
	mu.Lock()
	slices.Sort(offsets)
	if len(offsets) != 5 || offsets[1] != uint64(maxRead) || offsets[4] != uint64(4*maxRead) {
		t.Errorf("read offsets %v", offsets)
	}
	mu.Unlock()
	// A reply longer than asked is EPROTO.
	p.Expect(OpRead).ReplyFunc(func(r fakepeer.Request) [][]byte {
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, make([]byte, 200))}
	})
	if _, err := u.NodeRead(testCtx(t), nil, h, make([]byte, 100), 0); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("over-long read reply: %v", err)
	}
	p.Expect(OpRelease).Match(func(h *fuse.InHeader, payload []byte) error {
		if fh := nativeEndian.Uint64(payload); fh != 0 {
			return fmt.Errorf("fh %d", fh)
		}
		return nil
	})
	if err := u.NodeRelease(testCtx(t), h); err != nil {
		t.Fatal(err)
	}
	if err := u.NodeRelease(testCtx(t), h); !errors.Is(err, syscall.EBADF) {
		t.Errorf("second release: %v, want EBADF", err)
	}

	// READDIR resumes from the off of the last entry, and a cookie that
	// does not move is an error, not a loop.
	p.Expect(OpOpendir).Nodeid(1).Reply(fuse.OpenOut{Fh: 3})
	dh, err := u.NodeOpen(testCtx(t), nil, u.Root(), syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	var readdirOffsets []uint64
	p.Expect(OpReaddir).Times(3).ReplyFunc(func(r fakepeer.Request) [][]byte {
		in, _ := fakepeer.In[fuse.ReadIn](r)
		mu.Lock()
		readdirOffsets = append(readdirOffsets, in.Offset)
		mu.Unlock()
		switch in.Offset {
		case 0:
			return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, concat(dirent(1, 10, 4, "."), dirent(2, 20, 8, "x")))}
		case 20:
			return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, dirent(3, 30, 8, "y"))}
		}
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0)}
	})
	var names []string
	if err := u.NodeReaddir(testCtx(t), nil, dh, 0, func(d Dirent) bool { names = append(names, d.Name); return true }); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(readdirOffsets)
	mu.Unlock()
	if fmt.Sprint(names) != "[. x y]" || fmt.Sprint(got) != "[0 20 30]" {
		t.Errorf("names %v offsets %v", names, got)
	}
	p.Expect(OpReaddir).ReplyFunc(func(r fakepeer.Request) [][]byte {
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, dirent(3, 30, 8, "y"))}
	})
	if err := u.NodeReaddir(testCtx(t), nil, dh, 30, func(Dirent) bool { return true }); !errors.Is(err, syscall.EIO) {
		t.Errorf("stuck cookie: %v, want EIO", err)
	}
	p.Expect(OpReleasedir).Match(func(h *fuse.InHeader, payload []byte) error {
		if fh := nativeEndian.Uint64(payload); fh != 3 {
			return fmt.Errorf("fh %d", fh)
		}
		return nil
	})
	if err := u.NodeRelease(testCtx(t), dh); err != nil {
		t.Fatal(err)
	}
	// The lookup of f still held is given back at unmount.
	p.Expect(OpForget).Nodeid(5)
}

func TestUnsolicitedReplies(t *testing.T) {
	p, u := fakeSession(t)
	// Replies nobody waits for are handed to FsReq and dropped; the
	// session goes on.
	p.Send(fakepeer.ReplyFrame(12345, 0))
	p.Send(fakepeer.ReplyFrame(12347, syscall.ENOENT))
	p.Send(fakepeer.ReplyFrame(12349, syscall.EIO))
	p.Expect(OpStatfs).Reply(fuse.StatfsOut{Blocks: 7})
	if st, err := u.FsStatvfs(testCtx(t), nil); err != nil || st.Blocks != 7 {
		t.Fatalf("%+v %v", st, err)
	}
}

func TestUnmountHungDaemon(t *testing.T) {
	p, conn := fakepeer.New(t)
	p.ServeInit(31, 128<<10, 0)
	p.Expect(OpDestroy).NoReply()
	u, err := Attach(testCtx(t), conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = u.Unmount(ctx)
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Errorf("Unmount of a hung daemon: %v, want ETIMEDOUT", err)
	}
	select {
	case <-u.Done():
	default:
		t.Error("session not done after Unmount")
	}
	t.Logf("Unmount gave up after %v", time.Since(start).Round(time.Millisecond))
}

// A notification handler runs away from the socket reader: it may send
// requests of its own, and replies keep flowing meanwhile.
func TestNotificationHandlerMayCallBack(t *testing.T) {
	p, u := fakeSession(t)
	p.Expect(OpGetattr).AnyTimes().Reply(attrOut(1, syscall.S_IFDIR|0o755, 9))
	done := make(chan error, 1)
	u.SetNotifyHandler(func(*Notification) {
		_, err := u.NodeGetattr(testCtx(t), nil, u.Root(), nil)
		done <- err
	})
	p.Send(fakepeer.NotifyFrame(int32(NotifyInvalInode), uint64(1), uint64(0), uint64(0)))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a handler that calls back into the session deadlocked it")
	}
}

// A daemon that exits as soon as it has answered DESTROY ends the session
// cleanly: Mainloop returns nil.
func TestMainloopCleanAfterUnmount(t *testing.T) {
	for i := 0; i < 20; i++ {
		p, conn := fakepeer.New(t)
		p.ServeInit(31, 128<<10, 0)
		p.Expect(OpDestroy).ReplyFunc(func(r fakepeer.Request) [][]byte {
			go p.Kill()
			return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0)}
		})
		u, err := Attach(testCtx(t), conn, nil)
		if err != nil {
			t.Fatal(err)
		}
		loop := make(chan error, 1)
		go func() { loop <- u.Mainloop() }()
		if err := u.Unmount(testCtx(t)); err != nil {
			t.Fatalf("Unmount: %v", err)
		}
		if err := <-loop; err != nil {
			t.Fatalf("run %d: Mainloop after a clean unmount: %v", i, err)
		}
	}
}

func TestAttachSilentDaemonHonoursContext(t *testing.T) {
	p, conn := fakepeer.New(t)
	p.Expect(OpInit).NoReply()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Attach(ctx, conn, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Attach to a silent daemon: %v, want the deadline", err)
	}
}
