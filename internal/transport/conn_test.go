package transport

import (
	"bytes"
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/peerutil"
	"golang.org/x/sys/unix"
)

// request builds a request frame with the given unique.
func request(op uint32, unique, nodeid uint64, payload []byte) []byte {
	f := make([]byte, inHeaderSize+len(payload))
	le.PutUint32(f, uint32(len(f)))
	le.PutUint32(f[4:], op)
	le.PutUint64(f[8:], unique)
	le.PutUint64(f[16:], nodeid)
	copy(f[inHeaderSize:], payload)
	return f
}

func reply(unique uint64, status int32, payload []byte) []byte {
	f := make([]byte, outHeaderSize+len(payload))
	le.PutUint32(f, uint32(len(f)))
	le.PutUint32(f[4:], uint32(status))
	le.PutUint64(f[8:], unique)
	copy(f[outHeaderSize:], payload)
	return f
}

// pair returns a Conn on one end of a socketpair and the raw other end.
func pair(t *testing.T, unsolicited func([]byte)) (*Conn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(os.NewFile(uintptr(fds[0]), "client"), unsolicited, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); unix.Close(fds[1]) })
	return c, fds[1]
}

func readReq(t *testing.T, fd int) []byte {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestPreLoopExchangeReadsItself(t *testing.T) {
	unsol := make(chan []byte, 4)
	c, peer := pair(t, func(f []byte) { unsol <- f })
	go func() {
		req := make([]byte, 4096)
		n, _ := unix.Read(peer, req)
		u := le.Uint64(req[8:n])
		// A notification first: it goes to the unsolicited handler, read by
		// the waiting caller itself since no reader goroutine runs yet.
		unix.Write(peer, reply(0, 2, make([]byte, 24)))
		unix.Write(peer, reply(u, 0, []byte("ok")))
	}()
	got, err := c.Exchange(context.Background(), request(26, 2, 0, nil))
	if err != nil || !bytes.Equal(got[outHeaderSize:], []byte("ok")) {
		t.Fatalf("%q %v", got, err)
	}
	select {
	case f := <-unsol:
		if le.Uint64(f[8:]) != 0 {
			t.Errorf("unsolicited frame for unique %d", le.Uint64(f[8:]))
		}
	case <-time.After(5 * time.Second):
		t.Error("notification not handed over")
	}
}

func TestPreLoopExchangeHonoursContext(t *testing.T) {
	c, peer := pair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Exchange(ctx, request(26, 2, 0, nil)); !errors.Is(err, syscall.EINTR) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent peer: %v, want EINTR from the deadline", err)
	}
	// The connection still works afterwards.
	go func() {
		readReq(t, peer)
		req := readReq(t, peer)
		unix.Write(peer, reply(le.Uint64(req[8:]), 0, nil))
	}()
	if _, err := c.Exchange(context.Background(), request(26, 4, 0, nil)); err != nil {
		t.Fatalf("next exchange: %v", err)
	}
}

// Frames that come between the pieces of a split reply stand alone; the
// split reply is still joined.
func TestFramesBetweenSplitPieces(t *testing.T) {
	unsol := make(chan []byte, 4)
	c, peer := pair(t, func(f []byte) { unsol <- f })
	c.Start()
	errc := make(chan error, 2)
	got := make(chan []byte, 2)
	for _, u := range []uint64{2, 4} {
		go func() {
			r, err := c.Exchange(context.Background(), request(3, u, 1, nil))
			errc <- err
			got <- r
		}()
	}
	readReq(t, peer)
	readReq(t, peer)
	full := reply(2, 0, bytes.Repeat([]byte{7}, 104))
	unix.Write(peer, full[:40])
	unix.Write(peer, reply(0, 2, make([]byte, 24))) // a notification
	unix.Write(peer, reply(4, 0, []byte("other")))  // another waiter's reply
	unix.Write(peer, reply(5, -int32(syscall.EAGAIN), nil)[:16])
	unix.Write(peer, full[40:])
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		r := <-got
		if le.Uint64(r[8:]) == 2 && !bytes.Equal(r, full) || le.Uint64(r[8:]) == 4 && string(r[16:]) != "other" {
			t.Errorf("reply % x", r)
		}
	}
	select {
	case <-unsol:
	case <-time.After(5 * time.Second):
		t.Error("notification lost")
	}
	if c.SplitReplies() != 1 {
		t.Errorf("%d split replies joined, want 1", c.SplitReplies())
	}
}

func TestSplitReplyThatStopsFailsItsWaiter(t *testing.T) {
	c, peer := pair(t, nil)
	c.Start()
	errc := make(chan error, 1)
	go func() { _, err := c.Exchange(context.Background(), request(3, 2, 1, nil)); errc <- err }()
	readReq(t, peer)
	unix.Write(peer, reply(2, 0, make([]byte, 100))[:40])
	select {
	case err := <-errc:
		if !errors.Is(err, syscall.EPROTO) {
			t.Fatalf("abandoned split reply: %v, want EPROTO", err)
		}
	case <-time.After(partialTimeout + 5*time.Second):
		t.Fatal("waiter of an abandoned split reply still waits")
	}
	if c.Err() != nil {
		t.Fatalf("connection failed: %v", c.Err())
	}
}

func TestDatagramPeerGoneIsENOTCONN(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(os.NewFile(uintptr(fds[0]), "client"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Start()
	unix.Close(fds[1])
	if err := c.Send(request(2, 2, 1, nil)); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("send to a closed DGRAM peer: %v, want ENOTCONN", err)
	}
}

func TestOversizeFrameIsAnError(t *testing.T) {
	c, _ := pair(t, nil)
	c.Start()
	big := request(16, 2, 1, make([]byte, c.MaxFrame()))
	start := time.Now()
	if _, err := c.Exchange(context.Background(), big); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("oversize frame: %v, want EMSGSIZE", err)
	}
	if err := c.Send(big); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("oversize send: %v, want EMSGSIZE", err)
	}
	if c.Err() != nil {
		t.Fatalf("connection failed by an oversize frame: %v", c.Err())
	}
	t.Logf("refused in %v", time.Since(start))
}

func TestPeerCloseFailsWaitersAndLaterCalls(t *testing.T) {
	c, peer := pair(t, nil)
	c.Start()
	errc := make(chan error, 1)
	go func() { _, err := c.Exchange(context.Background(), request(3, 2, 1, nil)); errc <- err }()
	readReq(t, peer)
	unix.Close(peer)
	if err := <-errc; !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("waiter: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if _, err := c.Exchange(context.Background(), request(3, 4, 1, nil)); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("later call: %v", err)
	}
	if err := c.Send(request(2, 6, 1, nil)); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("later send: %v", err)
	}
}

func TestDuplicateUniqueRefused(t *testing.T) {
	c, peer := pair(t, nil)
	c.Start()
	go c.Exchange(context.Background(), request(3, 2, 1, nil))
	readReq(t, peer)
	if _, err := c.Exchange(context.Background(), request(3, 2, 1, nil)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("duplicate unique: %v", err)
	}
}

func TestInterruptEAGAINIsResent(t *testing.T) {
	c, peer := pair(t, nil)
	c.Start()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Exchange(ctx, request(3, 2, 1, nil)); errc <- err }()
	readReq(t, peer)
	cancel()
	first := readReq(t, peer)
	if le.Uint32(first[4:]) != opInterrupt || le.Uint64(first[8:]) != 3 || le.Uint64(first[inHeaderSize:]) != 2 {
		t.Fatalf("INTERRUPT frame % x", first)
	}
	unix.Write(peer, reply(3, -int32(syscall.EAGAIN), nil))
	second := readReq(t, peer)
	if le.Uint32(second[4:]) != opInterrupt {
		t.Fatalf("not re-sent: % x", second)
	}
	unix.Write(peer, reply(2, -int32(syscall.EINTR), nil))
	got := <-errc
	if got != nil {
		t.Fatalf("exchange: %v", got)
	}
}

// fuse-overlayfs splices its READ replies: one 128 KiB reply arrives as
// several records, which the transport joins by the header's length.
func TestJoinsSplicedRepliesFromFuseOverlayfs(t *testing.T) {
	lower := t.TempDir()
	data := bytes.Repeat([]byte("spliced!"), 32<<10)
	if err := os.WriteFile(lower+"/f", data, 0o644); err != nil {
		t.Fatal(err)
	}
	d := daemonpeer.FuseOverlayfs(t, lower, t.TempDir(), t.TempDir())
	c, err := New(d.Conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	call := func(op uint32, unique, nodeid uint64, payload []byte) []byte {
		t.Helper()
		r, err := c.Exchange(ctx, request(op, unique, nodeid, payload))
		if err != nil {
			t.Fatalf("op %d: %v", op, err)
		}
		if st := int32(le.Uint32(r[4:])); st != 0 {
			t.Fatalf("op %d: status %d", op, st)
		}
		return r[outHeaderSize:]
	}
	call(26, 2, 0, peerutil.InPayload(&fuse.InitIn{Major: 7, Minor: 31, MaxReadAhead: 128 << 10, Flags: fuse.CAP_DONT_MASK | fuse.CAP_BIG_WRITES | fuse.CAP_MAX_PAGES}))
	c.Start()
	entry, _ := peerutil.Decode[fuse.EntryOut](call(1, 4, 1, []byte("f\x00")))
	open, _ := peerutil.Decode[fuse.OpenOut](call(14, 6, entry.NodeId, peerutil.InPayload(&fuse.OpenIn{})))
	got := call(15, 8, entry.NodeId, peerutil.InPayload(&fuse.ReadIn{Fh: open.Fh, Size: uint32(len(data))}))
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, differing from the %d written", len(got), len(data))
	}
	if c.SplitReplies() == 0 {
		t.Fatal("the READ reply came whole: this daemon no longer splices, the join is untested here")
	}
	t.Logf("%d split replies joined", c.SplitReplies())
}

func FuzzRecords(f *testing.F) {
	f.Add(reply(2, 0, []byte("hello")), []byte{})
	f.Add(reply(2, 0, make([]byte, 100))[:50], reply(2, 0, make([]byte, 100))[50:])
	f.Add([]byte{1, 2, 3}, reply(0, 2, make([]byte, 24)))
	f.Add(reply(4, -5, nil), reply(2, 0, nil))
	f.Fuzz(func(t *testing.T, rec1, rec2 []byte) {
		c, peer := pair(t, func([]byte) {})
		c.Start()
		errc := make(chan error, 1)
		go func() { _, err := c.Exchange(context.Background(), request(3, 2, 1, nil)); errc <- err }()
		readReq(t, peer)
		for _, r := range [][]byte{rec1, rec2} {
			if len(r) > 0 {
				unix.Write(peer, r)
			}
		}
		// Whatever came, a well-formed reply then arrives: the waiter must
		// get an answer (that one, or an error) and nothing may hang.
		unix.Write(peer, reply(2, 0, nil))
		unix.Write(peer, reply(2, 0, nil))
		select {
		case <-errc:
		case <-time.After(5 * time.Second):
			unix.Close(peer)
			select {
			case <-errc:
			case <-time.After(5 * time.Second):
				t.Fatal("waiter hung even after the peer closed")
			}
		}
	})
}

// A daemon that stops reading fills the socket: a caller whose frame cannot
// be sent leaves when its context ends, and the connection survives.
func TestBlockedSendHonoursContext(t *testing.T) {
	c, _ := pair(t, nil)
	c.Start()
	const n = 64
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		frame := request(16, uint64(2+2*i), 1, make([]byte, c.MaxFrame()-inHeaderSize))
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err := c.Exchange(ctx, frame)
			errs <- err
		}()
	}
	// Requests that were sent wait for an answer that never comes (until
	// cleanup closes the connection); those that could not be sent return.
	select {
	case err := <-errs:
		if !errors.Is(err, syscall.EINTR) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("blocked send: %v, want EINTR from the deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no blocked send gave up")
	}
	if c.Err() != nil {
		t.Fatalf("connection failed: %v", c.Err())
	}
}
