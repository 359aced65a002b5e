// Package transport is perfuse's default message transport: FUSE frames over
// an AF_UNIX SOCK_SEQPACKET (or SOCK_DGRAM) socket, one frame per record, as
// perfused's msg.c carries them, with many requests in flight at once.
package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	inHeaderSize  = 40
	outHeaderSize = 16
	opInterrupt   = 36
	// sendSlack is what AF_UNIX takes from SO_SNDBUF for its own
	// accounting: a record larger than sndbuf - 32 fails with EMSGSIZE.
	sendSlack = 32
	// partialTimeout is how long a split reply may wait for its next
	// record: a splicing daemon sends the pieces back to back.
	partialTimeout = 2 * time.Second
	// unsolQueue bounds the unsolicited frames waiting for the handler.
	unsolQueue = 1024
	// sendPoll is how often a send blocked on a full socket looks at its
	// context.
	sendPoll = 50 * time.Millisecond
	// interruptRetry is how long to wait before re-sending an INTERRUPT
	// that the daemon answered with EAGAIN.
	interruptRetry = 10 * time.Millisecond
)

var le = binary.NativeEndian

// ErrClosed is reported to every waiter once the connection is gone: the
// daemon closed its end, died, or the Conn was closed.
var ErrClosed = syscall.ENOTCONN

type result struct {
	frame []byte
	err   error
}

// Conn carries FUSE frames over one socket.
//
// Lock order: readMu before mu. mu guards pending, partial, err and
// noInterrupt; readMu is held by whoever reads the socket (the caller of a
// pre-loop exchange, or the reader goroutine), so records are read in
// order by one reader at a time.
type Conn struct {
	f         *os.File
	rc        syscall.RawConn
	log       *slog.Logger
	unsol     func(frame []byte)
	unsolQ    chan []byte // drained by its own goroutine: handlers may call back in
	maxSend   int
	readBuf   []byte
	running   atomic.Bool
	joined    atomic.Int64 // replies that came split over several records
	startOnce sync.Once
	done      chan struct{}

	readMu sync.Mutex

	mu           sync.Mutex
	pending      map[uint64]chan result
	partial      []byte // a reply whose later records are still to come
	partialTimer *time.Timer
	err          error
	noInterrupt  bool
}

// New takes ownership of f, a connected SEQPACKET or DGRAM socket, and
// returns a Conn on it. unsolicited receives every frame that answers no
// waiting request: notifications (unique 0), replies to fire-and-forget
// requests, replies with unknown uniques.
func New(f *os.File, unsolicited func(frame []byte), log *slog.Logger) (*Conn, error) {
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
	sndbuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("transport: SO_SNDBUF: %w", err)
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
	// A record can be as large as the larger of the two buffers the peer
	// may have set; read into one buffer of that size, reused.
	c := &Conn{
		f:       nf,
		rc:      rc,
		log:     log,
		unsol:   unsolicited,
		maxSend: sndbuf - sendSlack,
		readBuf: make([]byte, max(sndbuf, rcvbuf)+1),
		done:    make(chan struct{}),
		pending: make(map[uint64]chan result),
		unsolQ:  make(chan []byte, unsolQueue),
	}
	go c.unsolicitedLoop()
	return c, nil
}

// MaxFrame is the largest record this side can send.
func (c *Conn) MaxFrame() int { return c.maxSend }

// SplitReplies returns how many replies arrived split over several records
// and were joined.
func (c *Conn) SplitReplies() int64 { return c.joined.Load() }

// Done is closed when the connection is gone.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection is gone, or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Start begins the reader goroutine: the main loop. Before Start,
// exchanges read the socket themselves (libperfuse's pre-loop mode).
func (c *Conn) Start() {
	c.startOnce.Do(func() {
		c.running.Store(true)
		go c.readLoop()
	})
}

// Close shuts the connection: every waiter gets ENOTCONN, the reader
// goroutine ends.
func (c *Conn) Close() error {
	c.fail(fmt.Errorf("transport: closed: %w", ErrClosed))
	return nil
}

// Send sends a request that gets no reply (FORGET, BATCH_FORGET,
// INTERRUPT, NOTIFY_REPLY). A reply that comes anyway is unsolicited.
func (c *Conn) Send(frame []byte) error {
	if err := c.Err(); err != nil {
		return err
	}
	return c.write(context.Background(), frame)
}

// Exchange sends a request and waits for the frame that answers it,
// matched by unique, whatever order replies come in. Cancelling ctx sends
// FUSE_INTERRUPT and goes on waiting for the daemon's answer, as the kernel
// does. If the reader goroutine is not started yet, the caller reads the
// socket itself until its reply comes.
func (c *Conn) Exchange(ctx context.Context, frame []byte) ([]byte, error) {
	if len(frame) < inHeaderSize {
		return nil, fmt.Errorf("transport: request of %d bytes: %w", len(frame), syscall.EINVAL)
	}
	unique := le.Uint64(frame[8:])
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	if _, dup := c.pending[unique]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("transport: unique %d already in flight: %w", unique, syscall.EINVAL)
	}
	c.pending[unique] = ch
	c.mu.Unlock()

	if err := c.write(ctx, frame); err != nil {
		c.mu.Lock()
		delete(c.pending, unique)
		c.mu.Unlock()
		return nil, err
	}
	if !c.running.Load() {
		return c.waitSync(ctx, unique, ch)
	}
	select {
	case r := <-ch:
		return r.frame, r.err
	case <-ctx.Done():
		c.interrupt(unique)
		r := <-ch
		return r.frame, r.err
	}
}

// waitSync is the pre-loop wait: read records in this goroutine until the
// reply for ch has been dispatched.
func (c *Conn) waitSync(ctx context.Context, unique uint64, ch chan result) ([]byte, error) {
	// Cancelling ctx wakes a blocked read through the read deadline.
	stop := context.AfterFunc(ctx, func() { c.f.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		select {
		case r := <-ch:
			return r.frame, r.err
		default:
		}
		if c.running.Load() {
			r := <-ch
			return r.frame, r.err
		}
		c.readMu.Lock()
		select {
		case r := <-ch:
			c.readMu.Unlock()
			return r.frame, r.err
		default:
		}
		err := c.readOne()
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			c.f.SetReadDeadline(time.Time{})
			c.readMu.Unlock()
			c.mu.Lock()
			_, waiting := c.pending[unique]
			delete(c.pending, unique)
			c.mu.Unlock()
			if !waiting {
				// The reply was dispatched meanwhile.
				r := <-ch
				return r.frame, r.err
			}
			return nil, fmt.Errorf("transport: %w: %w", ctx.Err(), syscall.EINTR)
		}
		c.readMu.Unlock()
		if err != nil {
			c.fail(err)
		}
	}
}

func (c *Conn) readLoop() {
	for {
		c.readMu.Lock()
		err := c.readOne()
		c.readMu.Unlock()
		if err != nil {
			c.fail(err)
			return
		}
	}
}

// readOne reads one record and dispatches it. It returns an error only when
// the connection is unusable.
func (c *Conn) readOne() error {
	if err := c.Err(); err != nil {
		return err
	}
	var n, flags int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, _, flags, _, rerr = unix.Recvmsg(int(fd), c.readBuf, nil, 0)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return err
	case err != nil:
		if errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("transport: closed: %w", ErrClosed)
		}
		return fmt.Errorf("transport: receive: %v: %w", err, ErrClosed)
	case n == 0:
		// A zero-length record on SEQPACKET is end of file: the daemon
		// closed its end or died.
		return fmt.Errorf("transport: daemon closed the connection: %w", io.EOF)
	}
	rec := c.readBuf[:n]
	if flags&unix.MSG_TRUNC != 0 {
		c.failFrame(rec, fmt.Errorf("transport: record larger than %d bytes: %w", len(c.readBuf), syscall.EPROTO))
		return nil
	}
	c.dispatch(append([]byte(nil), rec...))
	return nil
}

// dispatch routes one record: the next piece of a split reply, a reply to a
// waiter, or an unsolicited frame.
func (c *Conn) dispatch(rec []byte) {
	c.mu.Lock()
	if c.partial != nil {
		if c.wholeFrame(rec) {
			// Another frame between the pieces (a notification, an
			// INTERRUPT's answer, another waiter's reply): it stands
			// alone and the split reply goes on waiting for its pieces.
			c.mu.Unlock()
			c.deliver(rec, nil)
			return
		}
		rec = append(c.partial, rec...)
		c.stopPartial()
		if len(rec) >= int(le.Uint32(rec)) {
			c.joined.Add(1)
		}
	}
	if len(rec) < outHeaderSize {
		c.mu.Unlock()
		c.log.Warn("perfuse: dropped a record shorter than a reply header", "bytes", len(rec))
		return
	}
	want := int(le.Uint32(rec))
	switch {
	case want > len(rec) && want <= c.maxFrameIn():
		// Daemons that splice their replies send one reply as several
		// records; join them by the header's length. One whose pieces
		// stop coming fails its waiter instead of holding it forever.
		c.partial = rec
		c.partialTimer = time.AfterFunc(partialTimeout, c.abandonPartial)
		c.mu.Unlock()
		return
	case want != len(rec):
		c.mu.Unlock()
		c.failFrame(rec, fmt.Errorf("transport: header length %d but frame of %d bytes: %w", want, len(rec), syscall.EPROTO))
		return
	}
	c.mu.Unlock()
	c.deliver(rec, nil)
}

// wholeFrame reports whether rec, arriving while a split reply is
// incomplete, is a frame of its own rather than the next piece: its length
// is its header's and its unique is a notification's (0), an INTERRUPT's
// (odd) or another waiter's. Called with mu held.
func (c *Conn) wholeFrame(rec []byte) bool {
	if len(rec) < outHeaderSize || int(le.Uint32(rec)) != len(rec) {
		return false
	}
	u := le.Uint64(rec[8:])
	if u == le.Uint64(c.partial[8:]) {
		return false
	}
	_, waiting := c.pending[u]
	return u == 0 || u&1 == 1 || waiting
}

// stopPartial forgets the split reply in progress. Called with mu held.
func (c *Conn) stopPartial() {
	c.partial = nil
	if c.partialTimer != nil {
		c.partialTimer.Stop()
		c.partialTimer = nil
	}
}

// abandonPartial fails the waiter of a split reply whose pieces stopped.
func (c *Conn) abandonPartial() {
	c.mu.Lock()
	p := c.partial
	c.stopPartial()
	c.mu.Unlock()
	if p != nil {
		c.failFrame(p, fmt.Errorf("transport: split reply of %d bytes never completed (%d came): %w", le.Uint32(p), len(p), syscall.EPROTO))
	}
}

func (c *Conn) maxFrameIn() int { return len(c.readBuf) * 4 }

// failFrame hands err to the waiter of the frame's unique, if its header is
// readable and someone waits; otherwise it logs and drops it.
func (c *Conn) failFrame(rec []byte, err error) {
	if len(rec) >= outHeaderSize {
		u := le.Uint64(rec[8:])
		c.mu.Lock()
		ch, ok := c.pending[u]
		delete(c.pending, u)
		c.mu.Unlock()
		if ok {
			ch <- result{err: err}
			return
		}
	}
	c.log.Warn("perfuse: dropped a malformed frame", "err", err)
}

func (c *Conn) deliver(frame []byte, err error) {
	u := le.Uint64(frame[8:])
	c.mu.Lock()
	ch, ok := c.pending[u]
	delete(c.pending, u)
	c.mu.Unlock()
	switch {
	case ok:
		ch <- result{frame: frame, err: err}
	case u&1 == 1:
		c.interruptReply(u&^1, int32(le.Uint32(frame[4:])))
	default:
		select {
		case c.unsolQ <- frame:
		default:
			c.log.Warn("perfuse: unsolicited frame dropped: handler queue full", "unique", u)
		}
	}
}

// unsolicitedLoop runs the unsolicited-frame handler away from the reader,
// so a handler that blocks or sends requests of its own stalls no reply.
// It ends with the connection.
func (c *Conn) unsolicitedLoop() {
	for {
		select {
		case f := <-c.unsolQ:
			if c.unsol != nil {
				c.unsol(f)
			} else {
				c.log.Warn("perfuse: unsolicited frame dropped", "unique", le.Uint64(f[8:]))
			}
		case <-c.done:
			return
		}
	}
}

// interrupt asks the daemon to abandon request unique (INTERRUPT uses
// unique|1, as the kernel's requests do).
func (c *Conn) interrupt(unique uint64) {
	c.mu.Lock()
	skip := c.noInterrupt
	c.mu.Unlock()
	if skip {
		return
	}
	f := make([]byte, inHeaderSize+8)
	le.PutUint32(f, uint32(len(f)))
	le.PutUint32(f[4:], opInterrupt)
	le.PutUint64(f[8:], unique|1)
	le.PutUint64(f[inHeaderSize:], unique)
	// Sent aside: on a full socket the waiter must not block here, it
	// goes on waiting for its answer.
	go func() {
		if err := c.Send(f); err != nil {
			c.log.Debug("perfuse: INTERRUPT not sent", "unique", unique, "err", err)
		}
	}()
}

// interruptReply handles the daemon's answer to an INTERRUPT: EAGAIN means
// "send it again later", ENOSYS "never interrupt".
func (c *Conn) interruptReply(unique uint64, status int32) {
	switch syscall.Errno(-status) {
	case syscall.EAGAIN:
		time.AfterFunc(interruptRetry, func() {
			c.mu.Lock()
			_, waiting := c.pending[unique]
			c.mu.Unlock()
			if waiting {
				c.interrupt(unique)
			}
		})
	case syscall.ENOSYS:
		c.mu.Lock()
		c.noInterrupt = true
		c.mu.Unlock()
	}
}

// write sends one frame as one record. A frame larger than the socket
// allows is an error for that caller (upstream retried it forever); a dead
// peer fails the connection.
func (c *Conn) write(ctx context.Context, frame []byte) error {
	if len(frame) > c.maxSend {
		return fmt.Errorf("transport: frame of %d bytes exceeds the socket's %d: %w", len(frame), c.maxSend, syscall.EMSGSIZE)
	}
	for {
		var werr error
		err := c.rc.Control(func(fd uintptr) {
			_, werr = unix.SendmsgN(int(fd), frame, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		})
		if err == nil {
			err = werr
		}
		if err != unix.EAGAIN {
			return c.sendResult(err, len(frame))
		}
		// The socket is full: a slow or hung daemon. Wait for room in
		// short polls, so the caller can leave on its context and a dead
		// connection ends the wait.
		select {
		case <-ctx.Done():
			return fmt.Errorf("transport: send: %w: %w", ctx.Err(), syscall.EINTR)
		case <-c.done:
			return c.Err()
		default:
		}
		c.rc.Control(func(fd uintptr) {
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, int(sendPoll/time.Millisecond))
		})
	}
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
		cause = fmt.Errorf("%w (%v)", ErrClosed, cause)
	}
	c.err = cause
	pending := c.pending
	c.pending = map[uint64]chan result{}
	c.stopPartial()
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: cause}
	}
	c.f.Close()
	close(c.done)
}
