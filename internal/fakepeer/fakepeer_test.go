package fakepeer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/peerutil"
	"github.com/perfuse-go/perfuse/internal/wire"
)

// recorder stands in for the test when a case checks what the peer reports:
// it collects Errorf calls and runs cleanups when told to.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	cleanups []func()
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// finish runs the cleanups, last first, and returns the errors reported.
func (r *recorder) finish() []string {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
	return r.errs
}

// newRecorded starts a peer whose reports go to a recorder; the real test's
// cleanup makes sure it is finished.
func newRecorded(t *testing.T) (*recorder, *Peer, *os.File) {
	rec := &recorder{TB: t}
	t.Cleanup(func() { rec.finish() })
	p, conn := New(rec)
	return rec, p, conn
}

// readRecord reads one record from conn as it arrived, without joining.
func readRecord(t *testing.T, conn *os.File, timeout time.Duration) ([]byte, error) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1<<20)
	n, err := conn.Read(buf)
	return buf[:n], err
}

func wantErrors(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("peer reported %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("report %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

func TestLookupAnsweredWithErrnoAndRecordedExactly(t *testing.T) {
	p, conn := New(t)
	p.Expect(wire.OpLookup).Nodeid(1).Name("a").ReplyErrno(syscall.ENOENT)
	c := peerutil.NewClient(t, conn)

	h, payload := c.Call(wire.OpLookup, 1, peerutil.CString("a"))
	if h.Status != -int32(syscall.ENOENT) || h.Length != 16 || len(payload) != 0 {
		t.Errorf("reply = %+v payload %x, want status -ENOENT, length 16, no payload", h, payload)
	}
	got := p.Received()
	if len(got) != 1 {
		t.Fatalf("received %d requests, want 1", len(got))
	}
	r := got[0]
	want := fuse.InHeader{Length: 42, Opcode: uint32(wire.OpLookup), Unique: h.Unique, NodeId: 1, Caller: r.Header.Caller}
	if r.Header != want || string(r.Payload) != "a\x00" || !bytes.Equal(r.Frame[40:], r.Payload) || len(r.Frame) != 42 {
		t.Errorf("received %+v payload %q, want %+v payload \"a\\x00\"", r.Header, r.Payload, want)
	}
	if names := r.Names(); !slices.Equal(names, []string{"a"}) {
		t.Errorf("Names() = %q, want [a]", names)
	}
}

func TestReplyEncodesStructsRaw(t *testing.T) {
	p, conn := New(t)
	entry := fuse.EntryOut{NodeId: 7, Generation: 1, Attr: fuse.Attr{Ino: 7, Size: 5, Mode: syscall.S_IFREG | 0o644}}
	open := fuse.OpenOut{Fh: 3}
	p.Expect(wire.OpCreate).Nodeid(1).Name("f").Reply(entry, open)
	c := peerutil.NewClient(t, conn)

	h, payload := c.Call(wire.OpCreate, 1, peerutil.InPayload(fuse.CreateIn{Flags: uint32(os.O_RDWR), Mode: 0o644}), peerutil.CString("f"))
	if h.Status != 0 || int(h.Length) != 16+len(payload) || len(payload) != 128+16 {
		t.Fatalf("reply = %+v with %d payload bytes, want status 0 and 144 bytes", h, len(payload))
	}
	gotEntry, _ := peerutil.Decode[fuse.EntryOut](payload)
	gotOpen, _ := peerutil.Decode[fuse.OpenOut](payload[128:])
	if gotEntry != entry || gotOpen != open {
		t.Errorf("decoded %+v %+v, want %+v %+v", gotEntry, gotOpen, entry, open)
	}
}

func TestServeInitSizesReplyByMinor(t *testing.T) {
	for _, tc := range []struct{ minor, size int }{{12, 24}, {22, 24}, {23, 64}, {31, 64}} {
		t.Run(fmt.Sprint("minor", tc.minor), func(t *testing.T) {
			p, conn := New(t)
			p.ServeInit(uint32(tc.minor), 64<<10, fuse.CAP_ASYNC_READ|fuse.CAP_BIG_WRITES)
			out, n := peerutil.NewClient(t, conn).Init(31, fuse.CAP_ASYNC_READ)
			want := fuse.InitOut{Major: 7, Minor: uint32(tc.minor), MaxReadAhead: 128 << 10,
				Flags: fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES, MaxWrite: 64 << 10, TimeGran: 1}
			if tc.size == 24 {
				want.TimeGran = 0 // beyond the 24 bytes of old minors
			}
			if n != tc.size || out != want {
				t.Errorf("INIT reply %d bytes %+v, want %d bytes %+v", n, out, tc.size, want)
			}
		})
	}
}

func TestExpectationsMatchByNameAndMatchFunc(t *testing.T) {
	p, conn := New(t)
	p.Expect(wire.OpLookup).Name("a").ReplyErrno(syscall.ENOENT)
	p.Expect(wire.OpLookup).Name("b").ReplyErrno(syscall.EACCES)
	p.Expect(wire.OpRead).Match(func(h *fuse.InHeader, payload []byte) error {
		if in, _ := peerutil.Decode[fuse.ReadIn](append(peerutil.Bytes(*h), payload...)); in.Offset != 4096 {
			return fmt.Errorf("offset %d", in.Offset)
		}
		return nil
	}).Reply([]byte("data"))
	p.Expect(wire.OpRename).Nodeid(1).Name("old", "new").ReplyErrno(syscall.EXDEV)
	c := peerutil.NewClient(t, conn)

	if h, _ := c.Call(wire.OpLookup, 1, peerutil.CString("b")); h.Status != -int32(syscall.EACCES) {
		t.Errorf("LOOKUP(b) status %d, want -EACCES", h.Status)
	}
	if h, _ := c.Call(wire.OpLookup, 1, peerutil.CString("a")); h.Status != -int32(syscall.ENOENT) {
		t.Errorf("LOOKUP(a) status %d, want -ENOENT", h.Status)
	}
	if h, data := c.Call(wire.OpRead, 5, peerutil.InPayload(fuse.ReadIn{Offset: 4096, Size: 4})); h.Status != 0 || string(data) != "data" {
		t.Errorf("READ = %+v %q, want status 0 \"data\"", h, data)
	}
	rename := append(peerutil.InPayload(fuse.LinkIn{Oldnodeid: 1}), "old\x00new\x00"...) // fuse_rename_in: newdir only
	if h, _ := c.Call(wire.OpRename, 1, rename); h.Status != -int32(syscall.EXDEV) {
		t.Errorf("RENAME status %d, want -EXDEV", h.Status)
	}
	r := p.Received()[1]
	if in, ok := In[fuse.ReadIn](p.Received()[2]); !ok || in.Offset != 4096 || in.Size != 4 || in.NodeId != 5 {
		t.Errorf("In[ReadIn] = %+v, %v", in, ok)
	}
	if r.String() != fmt.Sprintf(`LOOKUP unique=%d nodeid=1 len=42 names=["a"]`, r.Header.Unique) {
		t.Errorf("String() = %q", r.String())
	}
}

func TestUnexpectedRequestAnsweredENOSYSAndReported(t *testing.T) {
	rec, p, conn := newRecorded(t)
	c := peerutil.NewClient(t, conn)
	p.Expect(wire.OpLookup).Name("a").ReplyErrno(syscall.ENOENT)

	if h, _ := c.Call(wire.OpLookup, 1, peerutil.CString("b")); h.Status != -int32(syscall.ENOSYS) {
		t.Errorf("unexpected LOOKUP answered with status %d, want -ENOSYS", h.Status)
	}
	wantErrors(t, rec.finish(),
		`unexpected request LOOKUP unique=2 nodeid=1 len=42 names=["b"]`+
			"\n\tdid not match expectation LOOKUP names=[\"a\"] (fakepeer_test.go:",
		`unmet expectation LOOKUP names=["a"]`)
}

func TestTimesAndAnyTimes(t *testing.T) {
	rec, p, conn := newRecorded(t)
	c := peerutil.NewClient(t, conn)
	p.Expect(wire.OpGetattr).Times(2).ReplyErrno(syscall.EIO)
	p.Expect(wire.OpForget).AnyTimes()

	for i := range 3 {
		c.Send(wire.OpForget, 9, peerutil.InPayload(fuse.ForgetIn{Nlookup: 1}))
		h, _ := c.Call(wire.OpGetattr, 1, peerutil.InPayload(fuse.GetAttrIn{}))
		want := -int32(syscall.EIO)
		if i == 2 {
			want = -int32(syscall.ENOSYS)
		}
		if h.Status != want {
			t.Errorf("GETATTR #%d: status %d, want %d", i, h.Status, want)
		}
	}
	wantErrors(t, rec.finish(), "unexpected request GETATTR")
}

func TestForgetAndInterruptGetNoReply(t *testing.T) {
	p, conn := New(t)
	p.Expect(wire.OpForget).Nodeid(5)
	read := p.Expect(wire.OpRead).NoReply()
	// The interrupt's answer is the interrupted request's: EINTR.
	p.Expect(wire.OpInterrupt).ReplyFunc(func(r Request) [][]byte {
		in, _ := In[fuse.InterruptIn](r)
		return [][]byte{ReplyFrame(in.Unique, syscall.EINTR)}
	})
	c := peerutil.NewClient(t, conn)

	c.Send(wire.OpForget, 5, peerutil.InPayload(fuse.ForgetIn{Nlookup: 1}))
	u := c.Send(wire.OpRead, 5, peerutil.InPayload(fuse.ReadIn{Size: 10}))
	<-read.Done()
	c.Send(wire.OpInterrupt, 0, peerutil.InPayload(fuse.InterruptIn{Unique: u}))
	h, _ := c.Recv()
	if h.Unique != u || h.Status != -int32(syscall.EINTR) {
		t.Errorf("first reply %+v, want the READ's (unique %d) with -EINTR", h, u)
	}
	if rec, err := readRecord(t, conn, 50*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("extra record %x (err %v), want none", rec, err)
	}
}

func TestRawRepliesSentAsGiven(t *testing.T) {
	p, conn := New(t)
	p.Expect(wire.OpRead).ReplyFunc(func(r Request) [][]byte {
		return Split(ReplyFrame(r.Header.Unique, 0, bytes.Repeat([]byte("x"), 100)), 20, 30)
	})
	p.Expect(wire.OpGetattr).ReplyRaw([]byte{1, 2, 3}, RawFrame(fuse.OutHeader{Length: 99, Status: 5, Unique: 12345}, nil))
	c := peerutil.NewClient(t, conn)

	u := c.Send(wire.OpRead, 2, peerutil.InPayload(fuse.ReadIn{Size: 100}))
	var sizes []int
	var joined []byte
	for range 3 {
		rec, err := readRecord(t, conn, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(rec))
		joined = append(joined, rec...)
	}
	if !slices.Equal(sizes, []int{20, 30, 66}) || !bytes.Equal(joined, ReplyFrame(u, 0, bytes.Repeat([]byte("x"), 100))) {
		t.Errorf("split READ reply: records %v, want [20 30 66] making one frame", sizes)
	}

	c.Send(wire.OpGetattr, 1, peerutil.InPayload(fuse.GetAttrIn{}))
	short, _ := readRecord(t, conn, 5*time.Second)
	bad, _ := readRecord(t, conn, 5*time.Second)
	h, _ := peerutil.Decode[fuse.OutHeader](bad)
	if !bytes.Equal(short, []byte{1, 2, 3}) || h != (fuse.OutHeader{Length: 99, Status: 5, Unique: 12345}) || len(bad) != 16 {
		t.Errorf("raw records %x and %x (%+v), want 010203 and the header as given", short, bad, h)
	}
}

func TestHoldUntilAnswersTogetherInReverse(t *testing.T) {
	p, conn := New(t)
	p.HoldUntil(3)
	p.Expect(wire.OpGetattr).Times(3).ReplyFunc(func(r Request) [][]byte {
		return [][]byte{ReplyFrame(r.Header.Unique, 0, fuse.AttrOut{Attr: fuse.Attr{Ino: r.Header.NodeId}})}
	})
	c := peerutil.NewClient(t, conn)

	var sent []uint64
	for i := range 3 {
		if i == 2 {
			if rec, err := readRecord(t, conn, 50*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("reply %x (err %v) before the third request, want none", rec, err)
			}
		}
		sent = append(sent, c.Send(wire.OpGetattr, uint64(10+i), peerutil.InPayload(fuse.GetAttrIn{})))
	}
	var got []uint64
	for range 3 {
		h, payload := c.Recv()
		out, _ := peerutil.Decode[fuse.AttrOut](payload)
		if out.Ino != 10+(h.Unique/2-1) {
			t.Errorf("reply for unique %d carries ino %d", h.Unique, out.Ino)
		}
		got = append(got, h.Unique)
	}
	slices.Reverse(sent)
	if !slices.Equal(got, sent) {
		t.Errorf("replies came for uniques %v, want %v", got, sent)
	}
	// The hold is over: the next request is answered at once.
	p.Expect(wire.OpGetattr).ReplyErrno(syscall.ESTALE)
	if h, _ := c.Call(wire.OpGetattr, 1, peerutil.InPayload(fuse.GetAttrIn{})); h.Status != -int32(syscall.ESTALE) {
		t.Errorf("after the hold: status %d, want -ESTALE", h.Status)
	}
}

func TestMalformedRequestsAndIncompleteHoldReported(t *testing.T) {
	rec, p, conn := newRecorded(t)
	p.HoldUntil(3)
	p.Expect(wire.OpGetattr).AnyTimes()

	conn.Write([]byte{1, 2, 3})
	conn.Write(append(peerutil.Bytes(fuse.InHeader{Length: 100, Opcode: uint32(wire.OpGetattr), Unique: 99}), make([]byte, 16)...))
	peerutil.NewClient(t, conn).Send(wire.OpGetattr, 1, peerutil.InPayload(fuse.GetAttrIn{}))
	// The peer reads records in order: once it holds two requests, it has
	// seen the runt record too.
	for deadline := time.Now().Add(5 * time.Second); len(p.Received()) < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	wantErrors(t, rec.finish(),
		"short request record of 3 bytes: 010203",
		"GETATTR unique=99 nodeid=0 len=56: header length 100, record is 56 bytes",
		"HoldUntil(3): only 2 requests arrived",
	)
}

func TestSendPushesNotification(t *testing.T) {
	p, conn := New(t)
	p.Send(NotifyFrame(2, fuse.NotifyInvalInodeOut{Ino: 5, Length: -1}))
	rec, err := readRecord(t, conn, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := peerutil.Decode[fuse.OutHeader](rec)
	out, ok := peerutil.Decode[fuse.NotifyInvalInodeOut](rec[16:])
	if h != (fuse.OutHeader{Length: 40, Status: 2, Unique: 0}) || !ok || out.Ino != 5 || out.Length != -1 || len(rec) != 40 {
		t.Errorf("notification %+v %+v (%d bytes), want INVAL_INODE of ino 5, 40 bytes", h, out, len(rec))
	}
}

func TestKillWhileRequestPending(t *testing.T) {
	p, conn := New(t)
	read := p.Expect(wire.OpRead).NoReply()
	c := peerutil.NewClient(t, conn)

	c.Send(wire.OpRead, 2, peerutil.InPayload(fuse.ReadIn{Size: 10}))
	<-read.Done()
	p.Kill()
	if rec, err := readRecord(t, conn, 5*time.Second); err != io.EOF {
		t.Errorf("after Kill: read %x, %v; want EOF", rec, err)
	}
	if _, err := conn.Write(peerutil.Bytes(fuse.InHeader{Length: 40})); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write after Kill: %v, want EPIPE", err)
	}
}
