// Package transport is perfuse's default message transport: FUSE frames over
// an AF_UNIX SOCK_SEQPACKET (or SOCK_DGRAM) socket, one frame per record, as
// perfused's msg.c carries them, with many requests in flight at once.
//
// Every record must be one whole frame. A daemon that splices a reply into a
// SEQPACKET socket sends it as several records, and the later ones carry no
// header: they are raw file data, and two splicing threads interleave their
// pieces. No reader can tell such a piece from a frame with certainty, so
// this transport never joins pieces: its callers ask for READs small enough
// to fit one record however the daemon sends them (see perfuse's
// spliceSafeRead), and a record that is not one whole frame fails the
// connection. Nothing is ever glued onto the wrong reply, and nobody waits on
// a reply that was lost.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/perfuse-go/perfuse/internal/bufpool"
	"github.com/perfuse-go/perfuse/internal/ratelog"
	"github.com/perfuse-go/perfuse/internal/sock"
	"github.com/perfuse-go/perfuse/internal/wire"
	"golang.org/x/sys/unix"
)

const (
	inHeaderSize  = wire.InHeaderSize
	outHeaderSize = wire.OutHeaderSize
	// unsolQueue and unsolBytes bound the unsolicited frames waiting for
	// the handler, in count and in bytes: a daemon that floods
	// notifications costs at most this much memory.
	unsolQueue = 1024
	unsolBytes = 4 << 20
	// unsolBytesAll bounds them across every Conn of the process: a
	// relay serves many connections, and one user may open many.
	unsolBytesAll = 64 << 20
	// interruptRetry is how long to wait before re-sending an INTERRUPT
	// that the daemon answered with EAGAIN, or that found the socket full.
	interruptRetry = 10 * time.Millisecond
	// DefaultInterruptGrace is how long a caller whose context ended waits
	// for the daemon's answer after INTERRUPT. A daemon that honours
	// INTERRUPT answers within milliseconds; one that ignores it finishes
	// the operation, which for a local daemon takes well under this. Past
	// it the caller gets its context's error, and a late answer is handed
	// to the unsolicited handler, so that what it created can be undone.
	DefaultInterruptGrace = 2 * time.Second
	// DefaultSendTimeout bounds a send that has no reply to wait for
	// (FORGET, NOTIFY_REPLY) when its context has no deadline: a daemon
	// that stops reading cannot hold the sender forever.
	DefaultSendTimeout = 10 * time.Second
)

// ErrClosed is reported to every waiter once the connection is gone: the
// daemon closed its end, died, sent a record that is not one whole frame,
// or the Conn was closed.
var ErrClosed = syscall.ENOTCONN

// Options configure a Conn. The zero value is usable.
type Options struct {
	// Unsolicited receives every frame that answers no waiting request:
	// notifications (unique 0), replies to fire-and-forget requests, and
	// late replies to requests whose caller has gone. It runs in a
	// goroutine of its own, one frame at a time. Nil drops them.
	Unsolicited func(frame []byte)
	// Log receives the transport's warnings, rate-limited. Nil is
	// slog.Default().
	Log *slog.Logger
	// InterruptGrace overrides DefaultInterruptGrace; negative means no
	// grace (leave as soon as INTERRUPT is sent).
	InterruptGrace time.Duration
}

// Stats counts what the transport did beyond plain exchanges.
type Stats struct {
	Interrupts     int64 // INTERRUPT frames sent, resends included
	Abandoned      int64 // requests whose caller left after the grace
	Unsolicited    int64 // frames handed to the unsolicited handler
	DroppedUnsolic int64 // unsolicited frames dropped: queue full or no handler
	SendTimeouts   int64 // sends that gave up on a full socket
}

type result struct {
	frame   []byte
	inPlace bool // frame is the header only; the payload is in the waiter's dst
	err     error
}

// waiter is one request in flight.
type waiter struct {
	ch    chan result // buffered: whoever answers never blocks
	retry *time.Timer // the one INTERRUPT resend timer of this request
	// dst, when set, is where the reply's payload is wanted (ExchangeInto);
	// hdr then receives its header.
	dst []byte
	hdr [outHeaderSize]byte
}

// Conn carries FUSE frames over one socket. One reader goroutine reads
// every record from New to the end; any number of goroutines may exchange.
//
// Locks: mu guards pending, err and noInterrupt; it is never held across a
// socket operation. sendSem (a channel, so that waiting for it honours a
// context) is held by the one sender waiting for room in a full socket,
// which owns the file's write deadline meanwhile.
type Conn struct {
	f  *os.File
	rc syscall.RawConn
	fd int // f's descriptor, for the non-blocking syscalls made without rc
	// closeMu is held shared across each such syscall and exclusively to
	// close f, so that none of them reaches a reused descriptor.
	closeMu sync.RWMutex
	closed  bool
	// rd is the reader goroutine's own state, and recv its receive step,
	// made once.
	rd      readState
	recv    func(fd uintptr) bool
	log     *slog.Logger
	unsol   func(frame []byte)
	unsolQ  chan []byte // drained by its own goroutine: handlers may call back in
	queued  atomic.Int64
	grace   time.Duration
	maxSend int
	readBuf []byte
	done    chan struct{}
	sendSem chan struct{}
	warn    *ratelog.Logger

	interrupts, abandoned, unsolicited, droppedUnsol, sendTimeouts atomic.Int64

	mu          sync.Mutex
	pending     map[uint64]*waiter
	intoWaiters int // waiters in pending with a dst: the reader peeks for them
	err         error
	noInterrupt bool
}

// New takes ownership of f, a connected SEQPACKET or DGRAM socket, and
// returns a Conn on it with its reader running.
func New(f *os.File, opts Options) (*Conn, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	// Dup into a non-blocking descriptor so that reads and writes go
	// through the runtime poller and Close wakes a blocked reader.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("transport: dup: %w", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || (typ != unix.SOCK_SEQPACKET && typ != unix.SOCK_DGRAM) {
		unix.Close(fd)
		return nil, fmt.Errorf("transport: not a SEQPACKET or DGRAM socket (type %d, %v): %w", typ, err, syscall.ENOTSOCK)
	}
	sndbuf, err := sock.SendBuffer(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("transport: %w", err)
	}
	maxSend, err := sock.MaxRecord(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("transport: %w", err)
	}
	rcvbuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("transport: SO_RCVBUF: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("transport: non-blocking: %w", err)
	}
	nf := os.NewFile(uintptr(fd), "perfuse-socket")
	rc, err := nf.SyscallConn()
	if err != nil {
		nf.Close()
		return nil, err
	}
	grace := opts.InterruptGrace
	switch {
	case grace == 0:
		grace = DefaultInterruptGrace
	case grace < 0:
		grace = 0
	}
	// A record can be as large as the larger of the two buffers the peer
	// may have set; read into one buffer of that size, reused. One byte
	// more tells a record that fills it from one that was truncated.
	c := &Conn{
		f:       nf,
		rc:      rc,
		fd:      fd,
		log:     log,
		unsol:   opts.Unsolicited,
		grace:   grace,
		maxSend: maxSend,
		readBuf: make([]byte, max(sndbuf, rcvbuf)+1),
		done:    make(chan struct{}),
		sendSem: make(chan struct{}, 1),
		pending: make(map[uint64]*waiter),
		unsolQ:  make(chan []byte, unsolQueue),
		warn:    ratelog.New(log, time.Second),
	}
	c.recv = c.recvStep
	go c.unsolicitedLoop()
	go c.readLoop()
	return c, nil
}

// MaxFrame is the largest record this side can send.
func (c *Conn) MaxFrame() int { return c.maxSend }

// Done is closed when the connection is gone.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection is gone, or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Stats returns the transport's counters.
func (c *Conn) Stats() Stats {
	return Stats{
		Interrupts:     c.interrupts.Load(),
		Abandoned:      c.abandoned.Load(),
		Unsolicited:    c.unsolicited.Load(),
		DroppedUnsolic: c.droppedUnsol.Load(),
		SendTimeouts:   c.sendTimeouts.Load(),
	}
}

// Close shuts the connection: every waiter gets ENOTCONN, the reader
// goroutine ends.
func (c *Conn) Close() error {
	c.fail(fmt.Errorf("transport: closed: %w", ErrClosed))
	return nil
}

// Send sends a request that gets no reply (FORGET, BATCH_FORGET,
// NOTIFY_REPLY). A reply that comes anyway is unsolicited. Without a
// deadline in ctx the send gives up after DefaultSendTimeout.
func (c *Conn) Send(ctx context.Context, frame []byte) error { return c.SendTail(ctx, frame, nil) }

// SendTail is Send of the frame head followed by tail (its data), sent
// as one record by one writev: the data is not copied into the frame.
func (c *Conn) SendTail(ctx context.Context, head, tail []byte) error {
	if err := c.Err(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultSendTimeout)
		defer cancel()
	}
	return c.write(ctx, head, tail)
}

// Exchange sends a request and waits for the frame that answers it,
// matched by unique, whatever order replies come in. A context that has
// already ended fails before anything is sent. Cancelling ctx later sends
// FUSE_INTERRUPT and waits up to the interrupt grace for the daemon's
// answer, then returns the context's error; a reply that comes after that
// goes to the unsolicited handler.
func (c *Conn) Exchange(ctx context.Context, frame []byte) ([]byte, error) {
	r := c.exchange(ctx, frame, nil, nil)
	return r.frame, r.err
}

// ExchangeTail is Exchange of the frame head followed by tail (a WRITE's
// data), sent as one record by one writev: the data is not copied.
func (c *Conn) ExchangeTail(ctx context.Context, head, tail []byte) ([]byte, error) {
	r := c.exchange(ctx, head, tail, nil)
	return r.frame, r.err
}

// ExchangeInto is Exchange for a reply whose payload is wanted in dst (a
// READ's). When the reader meets that reply with dst known, it receives
// the header into reply and the payload straight into dst: no copy on
// this side of the socket, and inPlace is true (the payload is
// dst[:len-16], len from the header). Otherwise reply is the whole frame,
// as Exchange returns it.
func (c *Conn) ExchangeInto(ctx context.Context, frame, dst []byte) (reply []byte, inPlace bool, err error) {
	r := c.exchange(ctx, frame, nil, dst)
	return r.frame, r.inPlace, r.err
}

func (c *Conn) exchange(ctx context.Context, frame, tail, dst []byte) result {
	if len(frame) < inHeaderSize {
		return result{err: fmt.Errorf("transport: request of %d bytes: %w", len(frame), syscall.EINVAL)}
	}
	interruptOnly := IsInterruptOnly(ctx)
	if ctx.Err() != nil && !interruptOnly {
		return result{err: ctxError(ctx, "not sent")}
	}
	unique := wire.Unique(frame)
	w := waiters.Get().(*waiter)
	w.dst = dst
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		putWaiter(w)
		return result{err: err}
	}
	if _, dup := c.pending[unique]; dup {
		c.mu.Unlock()
		putWaiter(w)
		return result{err: fmt.Errorf("transport: unique %d already in flight: %w", unique, syscall.EINVAL)}
	}
	c.pending[unique] = w
	if dst != nil {
		c.intoWaiters++
	}
	c.mu.Unlock()

	sendCtx := ctx
	if interruptOnly {
		sendCtx = context.WithoutCancel(ctx)
	}
	if err := c.write(sendCtx, frame, tail); err != nil {
		if c.forget(unique, w) {
			putWaiter(w)
		}
		return result{err: err}
	}
	select {
	case r := <-w.ch:
		putWaiter(w)
		return r
	case <-ctx.Done():
	}
	if interruptOnly {
		c.interrupt(unique, w)
		r := <-w.ch // answered, or failed with the connection
		putWaiter(w)
		return r
	}
	wait := c.grace
	if wire.OpcodeOf(frame) == wire.OpInit {
		// A daemon takes nothing before INIT, INTERRUPT included (the
		// kernel never interrupts INIT): leave at once.
		wait = 0
	} else {
		c.interrupt(unique, w)
	}
	grace := time.NewTimer(wait)
	defer grace.Stop()
	select {
	case r := <-w.ch:
		putWaiter(w)
		return r
	case <-grace.C:
	}
	if !c.forget(unique, w) {
		// Answered (or failed) while the grace ran out; a reply being
		// received into dst is waited for, so dst is ours again on return.
		r := <-w.ch
		putWaiter(w)
		return r
	}
	// Not put back: it is out of pending and nobody will answer it, but
	// let nothing that may still hold it see a reused one.
	c.abandoned.Add(1)
	return result{err: ctxError(ctx, "no answer after INTERRUPT")}
}

// waiters are reused: a request in flight costs no allocation of its own.
var waiters = sync.Pool{New: func() any { return &waiter{ch: make(chan result, 1)} }}

// putWaiter readies w, answered and out of pending, for reuse. Its resend
// timer is dropped: one that still fires finds another unique, or none,
// pending as w and does nothing.
func putWaiter(w *waiter) {
	if w.retry != nil {
		w.retry.Stop()
		w.retry = nil
	}
	w.dst = nil
	waiters.Put(w)
}

// forget takes w out of pending and stops its INTERRUPT resends. It
// reports whether w was still there, i.e. nobody has answered it.
func (c *Conn) forget(unique uint64, w *waiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.retry != nil {
		w.retry.Stop()
	}
	if c.pending[unique] != w {
		return false
	}
	c.unpendLocked(unique, w)
	return true
}

// unpendLocked takes w, pending for unique, out of pending. Called with mu
// held.
func (c *Conn) unpendLocked(unique uint64, w *waiter) {
	delete(c.pending, unique)
	if w.dst != nil {
		c.intoWaiters--
	}
	if w.retry != nil {
		w.retry.Stop()
	}
}

type interruptOnlyKey struct{}

// InterruptOnly marks ctx as a kernel request's, for a relay: its
// cancellation means the kernel's caller got a signal, which the kernel
// turns into FUSE_INTERRUPT before it goes on waiting. Such a request is
// sent even when ctx has already ended, and after INTERRUPT it waits for
// the daemon's answer however long it takes, as the kernel does (Go
// programs get signals all the time); the connection failing still ends
// the wait.
func InterruptOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, interruptOnlyKey{}, true)
}

// IsInterruptOnly reports whether ctx was marked by InterruptOnly.
func IsInterruptOnly(ctx context.Context) bool {
	v, _ := ctx.Value(interruptOnlyKey{}).(bool)
	return v
}

// ctxError is the error of a request whose context ended: the context's
// error, with EINTR for a cancellation (as an interrupted system call) or
// ETIMEDOUT for a deadline.
func ctxError(ctx context.Context, what string) error {
	errno := syscall.EINTR
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		errno = syscall.ETIMEDOUT
	}
	return fmt.Errorf("transport: %s: %w: %w", what, ctx.Err(), errno)
}

func (c *Conn) readLoop() {
	for {
		if err := c.readOne(); err != nil {
			c.fail(err)
			return
		}
	}
}

// readState is what one receive step leaves for readOne.
type readState struct {
	n   int
	w   *waiter // the waiter the record was received into, if any
	err error
	iov [2][]byte
}

// recvStep receives the next record, into the waiter that wants its
// payload in place if there is one, else into readBuf. It reports false
// when there is nothing to read yet (the poller then waits).
func (c *Conn) recvStep(fd uintptr) bool {
	rd := &c.rd
	rd.w = c.claimInPlace(int(fd))
	if rd.w != nil {
		rd.iov[0], rd.iov[1] = rd.w.hdr[:], rd.w.dst
		var flags int
		rd.n, _, flags, _, rd.err = unix.RecvmsgBuffers(int(fd), rd.iov[:], nil, 0)
		if rd.err == nil && flags&unix.MSG_TRUNC != 0 {
			// Longer than its header said: not one whole frame.
			rd.err = fmt.Errorf("record longer than its header's %d bytes: %w", wire.Len(rd.w.hdr[:]), syscall.EPROTO)
		}
		return true // the record was peeked at: it is there
	}
	rd.n, rd.err = unix.Read(int(fd), c.readBuf)
	return rd.err != unix.EAGAIN
}

// readOne reads one record and dispatches it. It returns an error when the
// connection is unusable, which includes a record that is not one whole
// frame. While some waiter wants its payload in place, the record's header
// is peeked at first, so that the reply it announces can be received into
// that waiter's buffer directly.
func (c *Conn) readOne() error {
	err := c.rc.Read(c.recv)
	rd := &c.rd
	n, w := rd.n, rd.w
	if err == nil {
		err = rd.err
	}
	switch {
	case errors.Is(err, os.ErrClosed):
		err = fmt.Errorf("transport: closed: %w", ErrClosed)
	case errors.Is(err, syscall.EPROTO):
		err = fmt.Errorf("transport: %w", err)
	case err != nil:
		err = fmt.Errorf("transport: receive: %v: %w", err, ErrClosed)
	case n == 0:
		// A zero-length record on SEQPACKET is end of file: the daemon
		// closed its end or died.
		err = fmt.Errorf("transport: daemon closed the connection: %w", io.EOF)
	case w == nil && n == len(c.readBuf):
		// readBuf is one byte larger than any record the peer can send.
		err = fmt.Errorf("transport: record larger than %d bytes: %w", len(c.readBuf)-1, syscall.EPROTO)
	case n < outHeaderSize:
		err = fmt.Errorf("transport: record of %d bytes has no reply header: %w", n, syscall.EPROTO)
	}
	if err == nil {
		hdr := c.readBuf[:outHeaderSize]
		if w != nil {
			hdr = w.hdr[:]
		}
		if want := int(wire.Len(hdr)); want != n {
			// A spliced reply split over several records, or garbage:
			// either way no later record can be trusted to start a frame.
			// (A record longer than a waiter's buffer fills it exactly,
			// and so also differs from its header.)
			err = fmt.Errorf("transport: record of %d bytes, its header says %d (a split or malformed reply): %w", n, want, syscall.EPROTO)
		}
	}
	if w != nil {
		// Claimed: the waiter is answered whatever happened, so that it
		// never waits on a failed connection, nor leaves with dst in use.
		frame := bufpool.Get(outHeaderSize)
		copy(frame, w.hdr[:])
		w.ch <- result{frame: frame, inPlace: err == nil, err: err}
	}
	if err != nil {
		return err
	}
	if w == nil {
		c.deliver(c.readBuf[:n])
	}
	return nil
}

// claimInPlace peeks at the next record's header and, if it answers a
// waiter whose dst can hold its payload, takes that waiter out of pending
// and returns it: the record is then received into it. Nothing is peeked
// while no waiter wants its payload in place.
func (c *Conn) claimInPlace(fd int) *waiter {
	c.mu.Lock()
	want := c.intoWaiters > 0
	c.mu.Unlock()
	if !want {
		return nil
	}
	var peek [outHeaderSize]byte
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&peek[0])), uintptr(len(peek)), unix.MSG_PEEK, 0, 0)
	if errno != 0 || int(n) < outHeaderSize {
		return nil // the plain receive sees the same and reports it
	}
	hdrb := peek[:]
	size, unique := int(wire.Len(hdrb)), wire.Unique(hdrb)
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.pending[unique]
	if w == nil || w.dst == nil || size < outHeaderSize || size-outHeaderSize > len(w.dst) {
		return nil
	}
	c.unpendLocked(unique, w)
	return w
}

// deliver routes rec, a whole frame in readBuf: to its waiter, as an
// INTERRUPT's answer, or to the unsolicited queue. What is kept is copied
// out of readBuf.
func (c *Conn) deliver(rec []byte) {
	u := wire.Unique(rec)
	c.mu.Lock()
	w, ok := c.pending[u]
	if ok {
		c.unpendLocked(u, w)
	}
	c.mu.Unlock()
	switch {
	case ok:
		frame := bufpool.Get(len(rec))
		copy(frame, rec)
		w.ch <- result{frame: frame}
	case u&1 == 1:
		c.interruptReply(u&^1, wire.Status(rec))
	default:
		c.queueUnsolicited(rec)
	}
}

// queueUnsolicited hands frame to the handler's goroutine, within the
// queue's bounds.
// queuedAll is what every Conn's queue holds, for unsolBytesAll.
var queuedAll atomic.Int64

// queueUnsolicited hands a copy of rec to the handler's goroutine, within
// the queue's bounds, which are checked before anything is copied.
func (c *Conn) queueUnsolicited(rec []byte) {
	if c.unsol == nil {
		c.droppedUnsol.Add(1)
		c.warn.Warn("no-handler", "perfuse: unsolicited frame dropped: no handler", "unique", wire.Unique(rec))
		return
	}
	size := int64(len(rec))
	if c.queued.Add(size) > unsolBytes || queuedAll.Add(size) > unsolBytesAll {
		c.unqueued(size)
		c.droppedUnsol.Add(1)
		c.warn.Warn("unsol-full", "perfuse: unsolicited frame dropped: handler queue full", "unique", wire.Unique(rec))
		return
	}
	frame := bufpool.Get(len(rec))
	copy(frame, rec)
	select {
	case c.unsolQ <- frame:
	default:
		c.unqueued(size)
		bufpool.Put(frame)
		c.droppedUnsol.Add(1)
		c.warn.Warn("unsol-full", "perfuse: unsolicited frame dropped: handler queue full", "unique", wire.Unique(rec))
	}
}

// unqueued takes size bytes off the queue's counts.
func (c *Conn) unqueued(size int64) {
	c.queued.Add(-size)
	queuedAll.Add(-size)
}

// unsolicitedLoop runs the unsolicited-frame handler away from the reader,
// so a handler that blocks or sends requests of its own stalls no reply.
// It ends with the connection.
func (c *Conn) unsolicitedLoop() {
	for {
		select {
		case f := <-c.unsolQ:
			c.unqueued(int64(len(f)))
			c.unsolicited.Add(1)
			c.unsol(f)
		case <-c.done:
			return
		}
	}
}

// interrupt asks the daemon to abandon request unique (INTERRUPT uses
// unique|1, as the kernel's requests do). It never blocks: on a full
// socket the request's one resend timer tries again later.
func (c *Conn) interrupt(unique uint64, w *waiter) {
	c.mu.Lock()
	skip := c.noInterrupt || c.pending[unique] != w || c.err != nil
	c.mu.Unlock()
	if skip {
		return
	}
	f := wire.Interrupt(unique)
	err := c.sendNow(f, nil)
	switch {
	case err == nil:
		c.interrupts.Add(1)
	case errors.Is(err, unix.EAGAIN):
		c.resendInterrupt(unique)
	default:
		c.sendResult(err, len(f))
	}
}

// resendInterrupt arms request unique's resend timer, if it still waits.
func (c *Conn) resendInterrupt(unique uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.pending[unique]
	if w == nil {
		return
	}
	if w.retry == nil {
		w.retry = time.AfterFunc(interruptRetry, func() { c.interrupt(unique, w) })
		return
	}
	w.retry.Reset(interruptRetry)
}

// interruptReply handles the daemon's answer to an INTERRUPT: EAGAIN means
// "send it again later", ENOSYS "never interrupt".
func (c *Conn) interruptReply(unique uint64, status int32) {
	switch syscall.Errno(-status) {
	case syscall.EAGAIN:
		c.resendInterrupt(unique)
	case syscall.ENOSYS:
		c.mu.Lock()
		c.noInterrupt = true
		c.mu.Unlock()
	}
}

// sendNow makes one non-blocking attempt to send frame.
func (c *Conn) sendNow(frame, tail []byte) error {
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		return os.ErrClosed
	}
	// The descriptor is non-blocking; a peer gone gives EPIPE (Go ignores
	// SIGPIPE but for standard output and error).
	var err error
	if tail == nil {
		_, err = unix.Write(c.fd, frame)
	} else {
		_, err = unix.Writev(c.fd, [][]byte{frame, tail})
	}
	return err
}

// write sends one frame as one record. A frame larger than the socket
// allows is an error for that caller (upstream retried it forever); a dead
// peer fails the connection. On a full socket the sender waits for room
// through the runtime poller, until ctx ends.
func (c *Conn) write(ctx context.Context, frame, tail []byte) error {
	size := len(frame) + len(tail)
	if size > c.maxSend {
		return fmt.Errorf("transport: frame of %d bytes exceeds the socket's %d: %w", size, c.maxSend, syscall.EMSGSIZE)
	}
	err := c.sendNow(frame, tail)
	if !errors.Is(err, unix.EAGAIN) {
		return c.sendResult(err, size)
	}
	// A slow or hung daemon. One sender at a time waits for room, owning
	// the write deadline; the others queue behind it on their contexts.
	select {
	case c.sendSem <- struct{}{}:
	case <-ctx.Done():
		c.sendTimeouts.Add(1)
		return ctxError(ctx, "send")
	case <-c.done:
		return c.Err()
	}
	defer func() { <-c.sendSem }()
	if d, ok := ctx.Deadline(); ok {
		c.f.SetWriteDeadline(d)
	}
	// Cancelling ctx ends the wait through the deadline. The deadline is
	// cleared only once that callback can no longer run, or has run:
	// a stale past deadline would fail the next sender at once.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.f.SetWriteDeadline(time.Unix(1, 0))
		close(fired)
	})
	var werr error
	err = c.rc.Write(func(fd uintptr) bool {
		_, werr = unix.SendmsgBuffers(int(fd), [][]byte{frame, tail}, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		return werr != unix.EAGAIN
	})
	if !stop() {
		<-fired
	}
	c.f.SetWriteDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.sendTimeouts.Add(1)
		if ctx.Err() == nil {
			// The deadline passed a hair before the context noticed.
			<-ctx.Done()
		}
		return ctxError(ctx, "send")
	}
	if err == nil {
		err = werr
	}
	return c.sendResult(err, size)
}

func (c *Conn) sendResult(err error, size int) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EMSGSIZE):
		return fmt.Errorf("transport: frame of %d bytes: %w", size, syscall.EMSGSIZE)
	case errors.Is(err, unix.EPIPE), errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.ENOTCONN), errors.Is(err, os.ErrClosed),
		// A DGRAM peer that closed its end answers sends with ECONNREFUSED.
		errors.Is(err, unix.ECONNREFUSED):
		err = fmt.Errorf("transport: send: daemon gone: %w", ErrClosed)
		c.fail(err)
		return err
	default:
		return fmt.Errorf("transport: send: %w", err)
	}
}

// fail ends the connection once: every waiter and every later call gets
// ENOTCONN (wrapped with the cause).
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if !errors.Is(cause, ErrClosed) {
		cause = fmt.Errorf("%w (%w)", ErrClosed, cause)
	}
	c.err = cause
	pending := c.pending
	c.pending = map[uint64]*waiter{}
	c.intoWaiters = 0
	for _, w := range pending {
		if w.retry != nil {
			w.retry.Stop()
		}
	}
	c.mu.Unlock()
	if errors.Is(cause, syscall.EPROTO) {
		c.log.Warn("perfuse: connection failed", "err", cause)
	}
	// Done is closed before any waiter hears, so that a caller who gets
	// ENOTCONN finds the connection gone.
	c.closeMu.Lock()
	c.closed = true
	c.f.Close()
	c.closeMu.Unlock()
	close(c.done)
	for _, w := range pending {
		w.ch <- result{err: cause}
	}
}
