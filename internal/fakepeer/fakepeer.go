// Package fakepeer is a scripted FUSE daemon for testing a FUSE client, after
// the mock daemon of FreeBSD's tests/sys/fs/fusefs. A test states the requests
// it expects and what to answer, runs the client against the other end of a
// SEQPACKET socketpair, and the peer reports at cleanup every expectation
// left unmet and every request nobody expected:
//
//	p, conn := fakepeer.New(t)
//	p.ServeInit(31, 128<<10, 0)
//	p.Expect(opLookup).Nodeid(1).Name("a").ReplyErrno(syscall.ENOENT)
//	// … run the client on conn; expect it to report fs.ErrNotExist …
//
// A request is matched against the expectations in the order they were
// declared; the first one that matches and is not used up answers it. A
// request that matches none is answered ENOSYS (or not at all for the opcodes
// that take no reply) and reported as a test error.
package fakepeer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
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

const (
	inHeaderSize  = wire.InHeaderSize
	outHeaderSize = wire.OutHeaderSize
)

// nameOffset is where the first NUL-terminated name starts in the payload
// of a request that carries names: after the kernel's fixed input struct
// (wire's row). SETXATTR uses the 8-byte compat struct that the kernel
// sends unless FUSE_SETXATTR_EXT was negotiated; match such requests with
// Match instead.
func nameOffset(op wire.Opcode) (int, bool) {
	r, ok := op.Row()
	if !ok || r.Names == 0 {
		return 0, false
	}
	return r.In, true
}

// noReply reports the opcodes the kernel sends without waiting for an
// answer. An INTERRUPT is answered only to refuse it (EAGAIN, ENOSYS); its
// effect shows in the reply to the interrupted request.
func noReply(op wire.Opcode) bool {
	r, _ := op.Row()
	return r.NoReply || op == wire.OpInterrupt
}

// Request is one request frame the peer received.
type Request struct {
	Header  fuse.InHeader
	Payload []byte // the frame after the header
	Frame   []byte // the whole record as received
}

// Names returns the NUL-terminated names in the payload of a request that
// carries names (LOOKUP: the name; RENAME: old and new name; SYMLINK: name
// and target; SETXATTR: the attribute name and its value's bytes), nil for
// other opcodes.
func (r Request) Names() []string {
	off, ok := nameOffset(wire.Opcode(r.Header.Opcode))
	if !ok || off > len(r.Payload) {
		return nil
	}
	s := strings.TrimSuffix(string(r.Payload[off:]), "\x00")
	return strings.Split(s, "\x00")
}

// Op is the request's opcode.
func (r Request) Op() wire.Opcode { return wire.Opcode(r.Header.Opcode) }

func (r Request) String() string {
	s := fmt.Sprintf("%s unique=%d nodeid=%d len=%d", wire.Opcode(r.Header.Opcode),
		r.Header.Unique, r.Header.NodeId, len(r.Frame))
	if names := r.Names(); names != nil {
		s += fmt.Sprintf(" names=%q", names)
	}
	return s
}

// In decodes the request frame as T, a go-fuse request struct that embeds
// fuse.InHeader (fuse.ReadIn, fuse.InterruptIn, …). ok is false when the frame
// is shorter than T; v then holds what there was, the rest zero.
func In[T any](r Request) (v T, ok bool) {
	return peerutil.Decode[T](r.Frame)
}

// Peer is the fake daemon. Its goroutine reads requests from its end of the
// socketpair and answers them as the expectations say.
//
// Lock order: mu before wmu.
type Peer struct {
	t    testing.TB
	conn *os.File      // the peer's end
	done chan struct{} // closed when serve returns

	wmu sync.Mutex // serialises writes to conn, so records stay whole and in order

	mu       sync.Mutex // guards the fields below
	exps     []*Expectation
	received []Request
	problems []string // unexpected or malformed requests, failed writes
	holdN    int      // HoldUntil: requests to collect before answering
	held     [][][]byte
	killed   bool
}

// New starts a fake daemon on one end of a new SEQPACKET socketpair and
// returns it with the other end, for the client under test. At cleanup both
// ends are closed and the problems seen are reported with t.Errorf.
func New(t testing.TB) (*Peer, *os.File) {
	t.Helper()
	client, fd, err := peerutil.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	// Non-blocking, so that Kill's Close wakes the goroutine's Read.
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	p := &Peer{t: t, conn: os.NewFile(uintptr(fd), "fakepeer"), done: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() {
		client.Close()
		p.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("fakepeer: serving goroutine did not stop")
		}
		p.report()
	})
	return p, client
}

// Expect declares that the client will send a request with this opcode.
// Unless narrowed (Nodeid, Name, Match, Times…) it matches the next such
// request once. Unless told otherwise it answers with success and no payload,
// or nothing for FORGET, BATCH_FORGET and INTERRUPT. Declare expectations
// before the client sends what they match.
func (p *Peer) Expect(op wire.Opcode) *Expectation {
	return p.expect(op, 2)
}

func (p *Peer) expect(op wire.Opcode, skip int) *Expectation {
	e := &Expectation{p: p, op: op, times: 1, done: make(chan struct{})}
	if _, file, line, ok := runtime.Caller(skip); ok {
		e.where = fmt.Sprintf("%s:%d", file[strings.LastIndexByte(file, '/')+1:], line)
	}
	if !noReply(op) {
		e.reply = func(r Request) [][]byte { return [][]byte{ReplyFrame(r.Header.Unique, 0)} }
	}
	p.mu.Lock()
	p.exps = append(p.exps, e)
	p.mu.Unlock()
	return e
}

// ServeInit expects INIT (major 7) and answers protocol 7.minor with the
// given max_write and flags, the client's max_readahead, and an init_out
// sized for that minor (see InitOutBytes).
func (p *Peer) ServeInit(minor, maxWrite, flags uint32) *Expectation {
	return p.expect(wire.OpInit, 2).Match(func(h *fuse.InHeader, payload []byte) error {
		if len(payload) < 8 {
			return fmt.Errorf("INIT payload of %d bytes", len(payload))
		}
		if major := binary.NativeEndian.Uint32(payload); major != 7 {
			return fmt.Errorf("INIT major %d, want 7", major)
		}
		return nil
	}).ReplyFunc(func(r Request) [][]byte {
		in, _ := In[fuse.InitIn](r)
		out := fuse.InitOut{
			Major: 7, Minor: minor, MaxReadAhead: in.MaxReadAhead, Flags: flags,
			MaxWrite: maxWrite, TimeGran: 1,
		}
		if flags&fuse.CAP_MAX_PAGES != 0 {
			out.MaxPages = uint16((maxWrite + 4095) / 4096)
		}
		return [][]byte{ReplyFrame(r.Header.Unique, 0, InitOutBytes(out))}
	})
}

// HoldUntil makes the peer collect the next n requests before answering any,
// then send their answers in reverse order of arrival. A test that passes
// proves the client had n requests in flight together and matches replies by
// unique. The peer reports an error at cleanup if fewer than n arrived.
func (p *Peer) HoldUntil(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdN, p.held = n, nil
}

// Received returns a copy of the requests received so far, in order.
func (p *Peer) Received() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.received)
}

// Send writes frame to the client as one record, at once: an unsolicited
// notification, or any bytes at all.
func (p *Peer) Send(frame []byte) {
	p.t.Helper()
	if err := p.write(frame); err != nil {
		p.t.Errorf("fakepeer: Send: %v", err)
	}
}

// Kill closes the peer's end abruptly, as a crashing daemon would: requests
// in flight and held replies get no answer. Kill is idempotent.
func (p *Peer) Kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.conn.Close()
}

func (p *Peer) write(rec []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(rec)
	return err
}

func (p *Peer) serve() {
	defer close(p.done)
	buf := make([]byte, 2*peerutil.BufSize+4096)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			// EOF: the client closed its end; ECONNRESET: it closed with
			// our records unread (a failed connection); ErrClosed: Kill.
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				p.problem("read: %v", err)
			}
			return
		}
		frame := slices.Clone(buf[:n])
		if n == len(buf) {
			p.problem("request record of %d bytes or more, may be truncated", n)
		}
		if n < inHeaderSize {
			p.problem("short request record of %d bytes: %x", n, frame)
			continue
		}
		r := Request{Frame: frame, Payload: frame[inHeaderSize:]}
		r.Header, _ = peerutil.Decode[fuse.InHeader](frame)
		if int(r.Header.Length) != n {
			p.problem("%v: header length %d, record is %d bytes", r, r.Header.Length, n)
		}
		for _, rec := range p.handle(r) {
			if err := p.write(rec); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, os.ErrClosed) {
				p.problem("answering %v: %v", r, err)
			}
		}
	}
}

// handle records r, matches it and returns the records to send now.
func (p *Peer) handle(r Request) [][]byte {
	p.mu.Lock()
	p.received = append(p.received, r)
	var reply func(Request) [][]byte
	var why []string
	matched := false
	for _, e := range p.exps {
		if e.op != wire.Opcode(r.Header.Opcode) || (e.times >= 0 && e.count >= e.times) {
			continue
		}
		if err := e.matches(r); err != nil {
			why = append(why, fmt.Sprintf("%v: %v", e, err))
			continue
		}
		e.count++
		if e.count == 1 {
			close(e.done)
		}
		reply, matched = e.reply, true
		break
	}
	if !matched {
		msg := fmt.Sprintf("unexpected request %v", r)
		for _, w := range why {
			msg += "\n\tdid not match expectation " + w
		}
		p.problems = append(p.problems, msg)
		if !noReply(wire.Opcode(r.Header.Opcode)) {
			reply = func(r Request) [][]byte { return [][]byte{ReplyFrame(r.Header.Unique, syscall.ENOSYS)} }
		}
	}
	p.mu.Unlock()

	// The reply function is test code: run it without the lock, so it may
	// call Received or Send.
	var recs [][]byte
	if reply != nil {
		recs = reply(r)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holdN == 0 {
		return recs
	}
	p.held = append(p.held, recs)
	if len(p.held) < p.holdN {
		return nil
	}
	var out [][]byte
	for i := len(p.held) - 1; i >= 0; i-- {
		out = append(out, p.held[i]...)
	}
	p.holdN, p.held = 0, nil
	return out
}

func (p *Peer) problem(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.killed {
		p.problems = append(p.problems, fmt.Sprintf(format, args...))
	}
}

func (p *Peer) report() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.problems {
		p.t.Errorf("fakepeer: %s", s)
	}
	for _, e := range p.exps {
		if e.count < e.times {
			p.t.Errorf("fakepeer: unmet expectation %v: matched %d of %d times", e, e.count, e.times)
		}
	}
	if p.holdN > 0 {
		p.t.Errorf("fakepeer: HoldUntil(%d): only %d requests arrived", p.holdN, len(p.held))
	}
}

// Expectation is one expected request and the answer to it. Its methods
// return it, so a declaration reads as one sentence.
type Expectation struct {
	p     *Peer
	op    wire.Opcode
	where string // file:line of the declaration, for reports

	// Guarded by p.mu.
	nodeid  *uint64
	names   []string
	matchFn []func(h *fuse.InHeader, payload []byte) error
	times   int // -1: any number
	count   int
	reply   func(Request) [][]byte // nil: no reply
	done    chan struct{}
}

func (e *Expectation) String() string {
	s := e.op.String()
	if e.nodeid != nil {
		s += fmt.Sprintf(" nodeid=%d", *e.nodeid)
	}
	if e.names != nil {
		s += fmt.Sprintf(" names=%q", e.names)
	}
	return s + " (" + e.where + ")"
}

func (e *Expectation) set(f func()) *Expectation {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	f()
	return e
}

func (e *Expectation) matches(r Request) error {
	if e.nodeid != nil && r.Header.NodeId != *e.nodeid {
		return fmt.Errorf("nodeid %d", r.Header.NodeId)
	}
	if e.names != nil {
		got := r.Names()
		if len(got) < len(e.names) || !slices.Equal(got[:len(e.names)], e.names) {
			return fmt.Errorf("names %q", got)
		}
	}
	for _, f := range e.matchFn {
		h := r.Header
		if err := f(&h, r.Payload); err != nil {
			return err
		}
	}
	return nil
}

// Nodeid narrows the expectation to requests for this node.
func (e *Expectation) Nodeid(n uint64) *Expectation {
	return e.set(func() { e.nodeid = &n })
}

// Name narrows the expectation to requests whose first names are these (see
// Request.Names): Name("a") for LOOKUP(a), Name("old", "new") for RENAME.
func (e *Expectation) Name(names ...string) *Expectation {
	if _, ok := nameOffset(e.op); !ok {
		panic(fmt.Sprintf("fakepeer: %s carries no name", e.op.String()))
	}
	return e.set(func() { e.names = names })
}

// Match narrows the expectation to requests for which f returns nil; the
// error says why a request did not match, in the report of an unexpected
// request. f runs on the peer's goroutine: it must not call t.Fatal.
func (e *Expectation) Match(f func(h *fuse.InHeader, payload []byte) error) *Expectation {
	return e.set(func() { e.matchFn = append(e.matchFn, f) })
}

// Times makes the expectation match exactly n requests.
func (e *Expectation) Times(n int) *Expectation {
	return e.set(func() { e.times = n })
}

// AnyTimes makes the expectation match any number of requests, none included.
func (e *Expectation) AnyTimes() *Expectation {
	return e.set(func() { e.times = -1 })
}

// Reply answers with success and a payload made of parts, each a []byte or a
// fixed-size value sent raw (fuse.EntryOut, fuse.AttrOut…; CREATE's answer is
// Reply(entryOut, openOut)).
func (e *Expectation) Reply(parts ...any) *Expectation {
	return e.ReplyFunc(func(r Request) [][]byte { return [][]byte{ReplyFrame(r.Header.Unique, 0, parts...)} })
}

// ReplyErrno answers with status -errno and no payload.
func (e *Expectation) ReplyErrno(errno syscall.Errno) *Expectation {
	return e.ReplyFunc(func(r Request) [][]byte { return [][]byte{ReplyFrame(r.Header.Unique, errno)} })
}

// NoReply answers nothing, as for FORGET, or to leave a request pending
// (for a test of interrupts, or of Kill).
func (e *Expectation) NoReply() *Expectation {
	return e.set(func() { e.reply = nil })
}

// ReplyRaw answers with these records, sent exactly as given, one write each
// (short frames, wrong lengths, unknown uniques, one reply split in pieces…).
func (e *Expectation) ReplyRaw(records ...[]byte) *Expectation {
	return e.ReplyFunc(func(Request) [][]byte { return records })
}

// ReplyFunc answers with the records f returns for the request, sent exactly
// as returned (none: no answer). f runs on the peer's goroutine: it must not
// call t.Fatal. See ReplyFrame, RawFrame and Split for building records.
func (e *Expectation) ReplyFunc(f func(r Request) [][]byte) *Expectation {
	return e.set(func() { e.reply = f })
}

// Done returns a channel closed when the expectation first matches a request
// (its answer may not have been sent yet).
func (e *Expectation) Done() <-chan struct{} {
	return e.done
}

// ReplyFrame returns a well-formed reply frame: header with the right length,
// status -errno, and a payload made of parts as for Reply.
func ReplyFrame(unique uint64, errno syscall.Errno, parts ...any) []byte {
	return frame(unique, -int32(errno), parts)
}

// NotifyFrame returns a notification frame: unique 0, the notify code (1
// POLL, 2 INVAL_INODE, 3 INVAL_ENTRY, …) in the status field, and a payload
// made of parts as for Reply.
func NotifyFrame(code int32, parts ...any) []byte {
	return frame(0, code, parts)
}

func frame(unique uint64, status int32, parts []any) []byte {
	var payload []byte
	for _, part := range parts {
		payload = append(payload, peerutil.Bytes(part)...)
	}
	h := fuse.OutHeader{Length: uint32(outHeaderSize + len(payload)), Status: status, Unique: unique}
	return RawFrame(h, payload)
}

// RawFrame returns h followed by payload, h exactly as given (any length,
// status or unique), to build malformed frames.
func RawFrame(h fuse.OutHeader, payload []byte) []byte {
	return append(slices.Clone(peerutil.Bytes(h)), payload...)
}

// Split cuts frame into records of the given sizes, the rest of the frame
// being one more record, as a daemon that splices its replies sends them.
func Split(frame []byte, sizes ...int) [][]byte {
	var recs [][]byte
	for _, n := range sizes {
		recs = append(recs, frame[:n])
		frame = frame[n:]
	}
	if len(frame) > 0 {
		recs = append(recs, frame)
	}
	return recs
}

// InitOutBytes returns the wire form of out for protocol minor out.Minor:
// the kernel reads the 24-byte fuse_init_out of 7.22 and before, and the
// 64-byte struct after.
func InitOutBytes(out fuse.InitOut) []byte {
	b := slices.Clone(peerutil.Bytes(out))
	if out.Minor <= 22 {
		b = b[:24]
	}
	return b
}
