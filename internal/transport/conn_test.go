package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/peerutil"
	"github.com/perfuse-go/perfuse/internal/wire"
	"golang.org/x/sys/unix"
)

var le = binary.NativeEndian

// request builds a request frame with the given unique.
func request(op wire.Opcode, unique, nodeid uint64, payload []byte) []byte {
	f := make([]byte, inHeaderSize+len(payload))
	le.PutUint32(f, uint32(len(f)))
	le.PutUint32(f[4:], uint32(op))
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
func pair(t testing.TB, opts Options) (*Conn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(os.NewFile(uintptr(fds[0]), "client"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); unix.Close(fds[1]) })
	return c, fds[1]
}

func readReq(t testing.TB, fd int) []byte {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// exchange runs an Exchange in a goroutine and returns its result channel.
func exchange(c *Conn, ctx context.Context, frame []byte) chan result {
	ch := make(chan result, 1)
	go func() {
		f, err := c.Exchange(ctx, frame)
		ch <- result{frame: f, err: err}
	}()
	return ch
}

func waitResult(t *testing.T, ch chan result, bound time.Duration) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(bound):
		t.Fatalf("no answer within %v", bound)
		return result{}
	}
}

// A reply split over several records (as a splicing daemon sends one)
// cannot be parsed with certainty: it fails the connection and every
// waiter, and nobody keeps waiting.
func TestSplitReplyFailsTheConnection(t *testing.T) {
	c, peer := pair(t, Options{})
	a := exchange(c, context.Background(), request(wire.OpRead, 2, 1, nil))
	b := exchange(c, context.Background(), request(wire.OpGetattr, 4, 1, nil))
	readReq(t, peer)
	readReq(t, peer)
	whole := reply(2, 0, make([]byte, 100))
	unix.Write(peer, whole[:50])
	for _, ch := range []chan result{a, b} {
		r := waitResult(t, ch, 5*time.Second)
		if !errors.Is(r.err, syscall.ENOTCONN) || !errors.Is(r.err, syscall.EPROTO) {
			t.Fatalf("waiter: %v, want ENOTCONN wrapping EPROTO", r.err)
		}
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("connection still up after a split reply")
	}
}

// Two splicing threads interleave their pieces (A1 B1 A2 B2). The first
// piece already fails the connection: B1 is never glued onto A, and no
// waiter is left hanging.
func TestInterleavedSplitRepliesFailTheConnection(t *testing.T) {
	c, peer := pair(t, Options{})
	a := exchange(c, context.Background(), request(wire.OpRead, 2, 1, nil))
	b := exchange(c, context.Background(), request(wire.OpRead, 4, 1, nil))
	readReq(t, peer)
	readReq(t, peer)
	ra, rb := reply(2, 0, make([]byte, 200)), reply(4, 0, make([]byte, 200))
	for _, piece := range [][]byte{ra[:100], rb[:100], ra[100:], rb[100:]} {
		unix.Write(peer, piece)
	}
	for _, ch := range []chan result{a, b} {
		if r := waitResult(t, ch, 5*time.Second); r.err == nil || r.frame != nil {
			t.Fatalf("waiter got %d bytes, err %v: want an error", len(r.frame), r.err)
		}
	}
}

// File data that imitates a reply header with a pending unique is never
// delivered as that request's reply: the piece before it fails the
// connection first.
func TestFileDataImitatingAHeaderIsNeverDelivered(t *testing.T) {
	c, peer := pair(t, Options{})
	read := exchange(c, context.Background(), request(wire.OpRead, 2, 1, nil))
	victim := exchange(c, context.Background(), request(wire.OpGetattr, 4, 1, nil))
	readReq(t, peer)
	readReq(t, peer)
	forged := reply(4, 0, []byte("forged attributes, really file data"))
	data := append(make([]byte, 64), forged...)
	whole := reply(2, 0, data)
	unix.Write(peer, whole[:outHeaderSize+64])
	unix.Write(peer, forged)
	for _, ch := range []chan result{read, victim} {
		r := waitResult(t, ch, 5*time.Second)
		if bytes.Contains(r.frame, []byte("forged")) {
			t.Fatalf("file data delivered as a reply: %q", r.frame)
		}
		if r.err == nil {
			t.Fatal("waiter answered after a split reply")
		}
	}
}

// A context that has already ended fails before anything is sent.
func TestEndedContextSendsNothing(t *testing.T) {
	c, peer := pair(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 100 {
		if _, err := c.Exchange(ctx, request(wire.OpGetattr, uint64(2+2*i), 1, nil)); !errors.Is(err, context.Canceled) || !errors.Is(err, syscall.EINTR) {
			t.Fatalf("exchange with a cancelled context: %v", err)
		}
	}
	unix.SetNonblock(peer, true)
	if n, err := unix.Read(peer, make([]byte, 100)); err != unix.EAGAIN {
		t.Fatalf("the daemon received %d bytes (%v): a cancelled request was sent", n, err)
	}
}

// A daemon that drops a reply: after the deadline the request is
// interrupted, the caller waits the grace and leaves with the deadline's
// error. The reply that comes later goes to the unsolicited handler.
func TestLostReplyHonoursTheDeadline(t *testing.T) {
	late := make(chan []byte, 1)
	c, peer := pair(t, Options{InterruptGrace: 50 * time.Millisecond, Unsolicited: func(f []byte) { late <- f }})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ch := exchange(c, ctx, request(wire.OpGetattr, 2, 1, nil))
	readReq(t, peer)
	intr := readReq(t, peer)
	if wire.OpcodeOf(intr) != wire.OpInterrupt || le.Uint64(intr[inHeaderSize:]) != 2 {
		t.Fatalf("not an INTERRUPT of request 2: % x", intr)
	}
	r := waitResult(t, ch, 5*time.Second)
	if !errors.Is(r.err, context.DeadlineExceeded) || !errors.Is(r.err, syscall.ETIMEDOUT) {
		t.Fatalf("lost reply: %v, want the deadline's error", r.err)
	}
	unix.Write(peer, reply(2, 0, []byte("late")))
	select {
	case f := <-late:
		if le.Uint64(f[8:]) != 2 {
			t.Fatalf("late frame for unique %d", le.Uint64(f[8:]))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late reply never reached the unsolicited handler")
	}
	if got := c.Stats().Abandoned; got != 1 {
		t.Fatalf("%d abandoned requests counted, want 1", got)
	}
}

func TestDatagramPeerGoneIsENOTCONN(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(os.NewFile(uintptr(fds[0]), "client"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unix.Close(fds[1])
	if err := c.Send(context.Background(), request(wire.OpForget, 2, 1, nil)); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("send to a closed DGRAM peer: %v, want ENOTCONN", err)
	}
}

func TestOversizeFrameIsAnError(t *testing.T) {
	c, _ := pair(t, Options{})
	big := request(wire.OpWrite, 2, 1, make([]byte, c.MaxFrame()))
	start := time.Now()
	if _, err := c.Exchange(context.Background(), big); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("oversize frame: %v, want EMSGSIZE", err)
	}
	if err := c.Send(context.Background(), big); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("oversize send: %v, want EMSGSIZE", err)
	}
	if c.Err() != nil {
		t.Fatalf("connection failed by an oversize frame: %v", c.Err())
	}
	t.Logf("refused in %v", time.Since(start))
}

func TestPeerCloseFailsWaitersAndLaterCalls(t *testing.T) {
	c, peer := pair(t, Options{})
	errc := make(chan error, 1)
	go func() { _, err := c.Exchange(context.Background(), request(wire.OpGetattr, 2, 1, nil)); errc <- err }()
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
	if _, err := c.Exchange(context.Background(), request(wire.OpGetattr, 4, 1, nil)); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("later call: %v", err)
	}
	if err := c.Send(context.Background(), request(wire.OpForget, 6, 1, nil)); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("later send: %v", err)
	}
}

func TestDuplicateUniqueRefused(t *testing.T) {
	c, peer := pair(t, Options{})
	go c.Exchange(context.Background(), request(wire.OpGetattr, 2, 1, nil))
	readReq(t, peer)
	if _, err := c.Exchange(context.Background(), request(wire.OpGetattr, 2, 1, nil)); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("duplicate unique: %v", err)
	}
}

func TestInterruptEAGAINIsResent(t *testing.T) {
	c, peer := pair(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Exchange(ctx, request(wire.OpGetattr, 2, 1, nil)); errc <- err }()
	readReq(t, peer)
	cancel()
	first := readReq(t, peer)
	if wire.OpcodeOf(first) != wire.OpInterrupt || le.Uint64(first[8:]) != 3 || le.Uint64(first[inHeaderSize:]) != 2 {
		t.Fatalf("INTERRUPT frame % x", first)
	}
	unix.Write(peer, reply(3, -int32(syscall.EAGAIN), nil))
	second := readReq(t, peer)
	if wire.OpcodeOf(second) != wire.OpInterrupt {
		t.Fatalf("not re-sent: % x", second)
	}
	unix.Write(peer, reply(2, -int32(syscall.EINTR), nil))
	got := <-errc
	if got != nil {
		t.Fatalf("exchange: %v", got)
	}
}

// fuse-overlayfs splices its READ replies: a 128 KiB reply arrives as
// several records. A READ of 13 pages at an odd offset still comes as one
// record (the size perfuse asks for at most); the large one fails the
// connection instead of being joined.
func TestSplicedReplyFromFuseOverlayfs(t *testing.T) {
	lower := t.TempDir()
	data := bytes.Repeat([]byte("spliced!"), 32<<10)
	if err := os.WriteFile(lower+"/f", data, 0o644); err != nil {
		t.Fatal(err)
	}
	d := daemonpeer.FuseOverlayfs(t, lower, t.TempDir(), t.TempDir())
	c, err := New(d.Conn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	call := func(op wire.Opcode, unique, nodeid uint64, payload []byte) ([]byte, error) {
		t.Helper()
		r, err := c.Exchange(ctx, request(op, unique, nodeid, payload))
		if err != nil {
			return nil, err
		}
		if st := int32(le.Uint32(r[4:])); st != 0 {
			t.Fatalf("%s: status %d", op, st)
		}
		return r[outHeaderSize:], nil
	}
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	must(call(wire.OpInit, 2, 0, peerutil.InPayload(&fuse.InitIn{Major: 7, Minor: 31, MaxReadAhead: 128 << 10, Flags: fuse.CAP_DONT_MASK | fuse.CAP_BIG_WRITES | fuse.CAP_MAX_PAGES})))
	entry, _ := peerutil.Decode[fuse.EntryOut](must(call(wire.OpLookup, 4, 1, []byte("f\x00"))))
	open, _ := peerutil.Decode[fuse.OpenOut](must(call(wire.OpOpen, 6, entry.NodeId, peerutil.InPayload(&fuse.OpenIn{}))))
	const safe = 13 * 4096
	for i, off := range []int{0, 1, 4095, 2049} {
		got := must(call(wire.OpRead, uint64(8+2*i), entry.NodeId, peerutil.InPayload(&fuse.ReadIn{Fh: open.Fh, Offset: uint64(off), Size: safe})))
		if !bytes.Equal(got, data[off:off+safe]) {
			t.Fatalf("13-page read at offset %d: %d bytes, differing", off, len(got))
		}
	}
	_, err = call(wire.OpRead, 100, entry.NodeId, peerutil.InPayload(&fuse.ReadIn{Fh: open.Fh, Size: uint32(len(data))}))
	if !errors.Is(err, syscall.ENOTCONN) || !errors.Is(err, syscall.EPROTO) {
		t.Fatalf("spliced 256 KiB read: %v, want the connection failed (EPROTO)", err)
	}
}

// Whatever records a daemon sends, a waiter gets an answer or an error,
// and nothing hangs: a record that is not one whole frame fails the
// connection at once, so no input waits on a timer.
func FuzzRecords(f *testing.F) {
	f.Add(reply(2, 0, []byte("hello")), []byte{})
	f.Add(reply(2, 0, make([]byte, 100))[:50], reply(2, 0, make([]byte, 100))[50:])
	f.Add([]byte{1, 2, 3}, reply(0, 2, make([]byte, 24)))
	f.Add(reply(4, -5, nil), reply(2, 0, nil))
	f.Add(reply(3, -11, nil), reply(2, 0, nil))
	f.Fuzz(func(t *testing.T, rec1, rec2 []byte) {
		c, peer := pair(t, Options{Unsolicited: func([]byte) {}, InterruptGrace: -1})
		ch := exchange(c, context.Background(), request(wire.OpGetattr, 2, 1, nil))
		readReq(t, peer)
		for _, r := range [][]byte{rec1, rec2} {
			if len(r) > 0 {
				unix.Write(peer, r)
			}
		}
		unix.Write(peer, reply(2, 0, nil))
		select {
		case r := <-ch:
			if r.err == nil && (len(r.frame) < outHeaderSize || le.Uint64(r.frame[8:]) != 2 || int(le.Uint32(r.frame)) != len(r.frame)) {
				t.Fatalf("delivered a frame that does not answer request 2: % x", r.frame)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiter hung")
		}
	})
}

// A daemon that stops reading fills the socket: a caller whose frame cannot
// be sent leaves when its context ends, and the connection survives.
// Senders wait through the runtime poller: they pin no OS thread.
func TestBlockedSendHonoursContext(t *testing.T) {
	c, _ := pair(t, Options{})
	const n = 200
	threads := threadCount(t)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		frame := request(wire.OpWrite, uint64(2+2*i), 1, make([]byte, c.MaxFrame()-inHeaderSize))
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := c.Exchange(ctx, frame)
			errs <- err
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if now := threadCount(t); now > threads+20 {
		t.Errorf("%d threads with %d senders blocked, %d before: senders pin threads", now, n, threads)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, syscall.ETIMEDOUT) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("blocked send: %v, want ETIMEDOUT from the deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no blocked send gave up")
	}
	if c.Err() != nil {
		t.Fatalf("connection failed: %v", c.Err())
	}
}

// A fire-and-forget send to a daemon that stopped reading gives up after
// its deadline instead of blocking its sender forever.
func TestSendToAStoppedDaemonHonoursItsDeadline(t *testing.T) {
	c, _ := pair(t, Options{})
	frame := request(wire.OpForget, 0, 1, make([]byte, c.MaxFrame()-inHeaderSize))
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := c.Send(ctx, frame)
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("send %d: %v, want the deadline", i, err)
			}
			break
		}
		if i > 1000 {
			t.Fatal("the socket never filled")
		}
	}
}

// A daemon that answers every INTERRUPT with EAGAIN gets resends from one
// timer per request, and none after the caller's grace: no goroutine or
// thread per resend.
func TestInterruptEAGAINLoopIsBounded(t *testing.T) {
	c, peer := pair(t, Options{InterruptGrace: 300 * time.Millisecond})
	const n = 50
	ctx, cancel := context.WithCancel(context.Background())
	var chs []chan result
	for i := range n {
		chs = append(chs, exchange(c, ctx, request(wire.OpGetattr, uint64(2+2*i), 1, nil)))
	}
	for range n {
		readReq(t, peer)
	}
	goroutines, threads := runtime.NumGoroutine(), threadCount(t)
	cancel()
	stop := time.Now().Add(time.Second)
	interrupts, maxG := 0, 0
	unix.SetNonblock(peer, true)
	buf := make([]byte, 1<<16)
	for time.Now().Before(stop) {
		k, err := unix.Read(peer, buf)
		if err == unix.EAGAIN {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil || k < inHeaderSize || wire.OpcodeOf(buf) != wire.OpInterrupt {
			t.Fatalf("read %d bytes, %v: want INTERRUPTs", k, err)
		}
		interrupts++
		unix.Write(peer, reply(le.Uint64(buf[8:]), -int32(syscall.EAGAIN), nil))
		maxG = max(maxG, runtime.NumGoroutine())
	}
	for _, ch := range chs {
		if r := waitResult(t, ch, 5*time.Second); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("interrupted request: %v", r.err)
		}
	}
	if maxG > goroutines+n {
		t.Errorf("%d goroutines during the EAGAIN loop, %d before", maxG, goroutines)
	}
	if now := threadCount(t); now > threads+10 {
		t.Errorf("%d threads, %d before", now, threads)
	}
	// 300 ms of grace at one resend per 10 ms: at most ~30 per request.
	if interrupts < n || interrupts > n*40 {
		t.Errorf("%d INTERRUPTs for %d requests in 300 ms of grace", interrupts, n)
	}
	time.Sleep(100 * time.Millisecond)
	if k, err := unix.Read(peer, buf); err != unix.EAGAIN {
		t.Errorf("an INTERRUPT (%d bytes, %v) after every caller left", k, err)
	}
	t.Logf("%d INTERRUPTs, at most %d goroutines (%d before)", interrupts, maxG, goroutines)
}

// A daemon flooding notifications the handler cannot keep up with costs
// bounded memory: the excess is dropped and counted.
func TestUnsolicitedFloodIsBounded(t *testing.T) {
	release := make(chan struct{})
	c, peer := pair(t, Options{Unsolicited: func([]byte) { <-release }})
	defer close(release)
	big := reply(0, 4, make([]byte, 60000))
	for range 2000 {
		unix.Write(peer, big)
	}
	// Wait for the reader to have taken them all in.
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().DroppedUnsolic+int64(len(c.unsolQ)) < 1999 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if q := c.queued.Load(); q > unsolBytes {
		t.Fatalf("%d bytes queued, cap %d", q, unsolBytes)
	}
	if c.Stats().DroppedUnsolic == 0 {
		t.Fatal("nothing dropped from a flood of 120 MB")
	}
}

func threadCount(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// A READ's payload is received straight into the caller's buffer: the
// record's header is peeked at, and the payload lands in dst in place.
// Replies for others, and one too large for dst, still come whole.
func TestExchangeIntoReceivesInPlace(t *testing.T) {
	c, peer := pair(t, Options{})
	dst := make([]byte, 100)
	type into struct {
		reply   []byte
		inPlace bool
		err     error
	}
	got := make(chan into, 1)
	go func() {
		r, in, err := c.ExchangeInto(context.Background(), request(wire.OpRead, 2, 1, nil), dst)
		got <- into{r, in, err}
	}()
	other := exchange(c, context.Background(), request(wire.OpGetattr, 4, 1, nil))
	readReq(t, peer)
	readReq(t, peer)
	unix.Write(peer, reply(4, 0, []byte("attrs")))
	unix.Write(peer, reply(2, 0, []byte("file data")))
	r := <-got
	if r.err != nil || !r.inPlace || len(r.reply) != outHeaderSize || string(dst[:9]) != "file data" {
		t.Fatalf("ExchangeInto: %d-byte reply, in place %v, dst %q, %v", len(r.reply), r.inPlace, dst[:9], r.err)
	}
	if o := waitResult(t, other, 5*time.Second); o.err != nil || string(o.frame[outHeaderSize:]) != "attrs" {
		t.Fatalf("the other waiter: %q %v", o.frame, o.err)
	}
	go func() {
		r, in, err := c.ExchangeInto(context.Background(), request(wire.OpRead, 6, 1, nil), dst[:4])
		got <- into{r, in, err}
	}()
	readReq(t, peer)
	unix.Write(peer, reply(6, 0, []byte("too long for dst")))
	if r := <-got; r.err != nil || r.inPlace || string(r.reply[outHeaderSize:]) != "too long for dst" {
		t.Fatalf("reply larger than dst: %q in place %v, %v", r.reply, r.inPlace, r.err)
	}
	// A record longer than its header claims fails the connection, and the
	// claimed waiter with it: it never waits, nor keeps dst.
	go func() {
		r, in, err := c.ExchangeInto(context.Background(), request(wire.OpRead, 8, 1, nil), dst)
		got <- into{r, in, err}
	}()
	readReq(t, peer)
	lying := reply(8, 0, make([]byte, 50))
	le.PutUint32(lying, 30)
	unix.Write(peer, lying)
	if r := <-got; !errors.Is(r.err, syscall.EPROTO) {
		t.Fatalf("lying record: %v, want EPROTO", r.err)
	}
}

// A record longer than its header says, whose header fits the waiter's
// buffer exactly, is refused too: its tail is not silently dropped.
func TestExchangeIntoRefusesATruncatedRecord(t *testing.T) {
	c, peer := pair(t, Options{})
	dst := make([]byte, 34)
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.ExchangeInto(context.Background(), request(wire.OpRead, 2, 1, nil), dst)
		errc <- err
	}()
	readReq(t, peer)
	long := reply(2, 0, make([]byte, 100))
	le.PutUint32(long, uint32(outHeaderSize+len(dst)))
	unix.Write(peer, long)
	if err := <-errc; !errors.Is(err, syscall.EPROTO) {
		t.Fatalf("record longer than its header: %v, want EPROTO", err)
	}
}

// A context cancelled just as a slow send completes must not leave the
// write deadline in the past: the next sender on a full socket, with no
// deadline of its own, would fail at once and wait forever.
func TestCancelledSendLeavesNoStaleDeadline(t *testing.T) {
	c, peer := pair(t, Options{})
	frame := request(wire.OpRead, 2, 1, make([]byte, 100))
	buf := make([]byte, 1<<16)
	stale := 0
	for i := 0; i < 1000; i++ {
		for c.sendNow(frame, nil) == nil {
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.write(ctx, frame, nil) }()
		time.Sleep(50 * time.Microsecond)
		if i%2 == 0 {
			cancel()
			unix.Read(peer, buf) // room for one
		} else {
			go unix.Read(peer, make([]byte, 1<<16))
			for j := 0; j < i%50; j++ {
			}
			cancel()
		}
		<-done
		time.Sleep(200 * time.Microsecond)
		for { // drain
			if _, _, err := unix.Recvfrom(peer, buf, unix.MSG_DONTWAIT); err != nil {
				break
			}
		}
		if _, err := c.f.Write(frame); errors.Is(err, os.ErrDeadlineExceeded) {
			stale++
			// Consequence: the next slow-path Exchange without a deadline.
			for c.sendNow(frame, nil) == nil {
			}
			ch := exchange(c, context.Background(), request(wire.OpRead, 1000, 1, nil))
			time.Sleep(100 * time.Millisecond)
			for { // room again, and answer whatever comes
				n, _, err := unix.Recvfrom(peer, buf, unix.MSG_DONTWAIT)
				if err != nil {
					break
				}
				if n >= 16 && le.Uint64(buf[8:]) == 1000 {
					unix.Write(peer, reply(1000, 0, nil))
				}
			}
			select {
			case r := <-ch:
				t.Logf("exchange returned %v", r.err)
			case <-time.After(3 * time.Second):
				t.Fatalf("round %d: Exchange(Background) still blocked 3s after the socket has room: request never sent", i)
			}
			c.f.SetWriteDeadline(time.Time{})
		}
		unix.Recvfrom(peer, buf, unix.MSG_DONTWAIT)
	}
	t.Logf("stale write deadline left behind in %d of 1000 rounds", stale)
	if stale > 0 {
		// Now show the consequence: a slow-path Exchange with no deadline.
		t.Errorf("stale deadline seen %d times", stale)
	}
}

// The unsolicited queues of all connections together are bounded too: a
// user who opens many mounts on one relay cannot multiply the cap.
func TestUnsolicitedFloodIsBoundedAcrossConnections(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	big := reply(0, 4, make([]byte, 60000))
	var conns []*Conn
	for range 24 {
		c, peer := pair(t, Options{Unsolicited: func([]byte) { <-release }})
		conns = append(conns, c)
		go func() {
			for range 100 {
				unix.Write(peer, big)
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		dropped := int64(0)
		for _, c := range conns {
			dropped += c.Stats().DroppedUnsolic
		}
		if dropped > 0 && queuedAll.Load() >= unsolBytesAll-int64(len(big)) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if q := queuedAll.Load(); q > unsolBytesAll {
		t.Fatalf("%d bytes queued across connections, cap %d", q, unsolBytesAll)
	}
	t.Logf("%d MB queued across %d connections", queuedAll.Load()>>20, len(conns))
}

// A kernel request (InterruptOnly) is sent even when its context has
// already ended, and after INTERRUPT it waits for the daemon's answer past
// any grace: the kernel, whose caller got a signal, waits too.
func TestInterruptOnlyRequestIsSentAndAnswered(t *testing.T) {
	c, peer := pair(t, Options{InterruptGrace: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ch := exchange(c, InterruptOnly(ctx), request(wire.OpGetattr, 2, 1, nil))
	if req := readReq(t, peer); wire.OpcodeOf(req) != wire.OpGetattr {
		t.Fatalf("first frame % x, want the GETATTR", req)
	}
	if intr := readReq(t, peer); wire.OpcodeOf(intr) != wire.OpInterrupt {
		t.Fatalf("second frame % x, want its INTERRUPT", intr)
	}
	time.Sleep(100 * time.Millisecond) // well past the grace
	unix.Write(peer, reply(2, 0, []byte("attrs")))
	r := waitResult(t, ch, 5*time.Second)
	if r.err != nil || string(r.frame[outHeaderSize:]) != "attrs" {
		t.Fatalf("interrupted kernel request: %q, %v; want the daemon's answer", r.frame, r.err)
	}
}
