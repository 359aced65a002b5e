package perfuse

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/perfuse-go/perfuse/internal/sock"
	"github.com/perfuse-go/perfuse/internal/transport"
	"github.com/perfuse-go/perfuse/internal/wire"
)

// SocketCallbacks returns Callbacks that carry frames over f, a connected
// SEQPACKET (or DGRAM) socket whose peer is a FUSE daemon: the transport
// perfused uses. It takes ownership of f. Any number of goroutines may have
// requests in flight; replies are matched by unique, by one reader
// goroutine from the first frame on. Every record must be one whole frame:
// one that is not (a reply spliced into several records, or garbage) fails
// the connection. When the daemon goes away every waiter gets ENOTCONN and
// the session is shut down.
func SocketCallbacks(f *os.File, opts ...Option) (*Callbacks, error) {
	conf := newConfig(opts)
	if err := sock.SetBuffers(int(f.Fd()), conf.bufSize); err != nil {
		conf.log.Warn("perfuse: socket buffers not set", "size", conf.bufSize, "err", err)
	}
	cb := &Callbacks{}
	// The session these callbacks serve, known from its first exchange
	// (INIT): unsolicited frames go to its FsReq.
	var owner atomic.Pointer[Usermount]
	conn, err := transport.New(f, transport.Options{
		Unsolicited: func(frame []byte) {
			u := owner.Load()
			if u == nil {
				conf.log.Warn("perfuse: unsolicited frame before INIT dropped", "bytes", len(frame))
				return
			}
			m := &Message{}
			m.SetReply(frame)
			u.FsReq(m)
		},
		Log:            conf.log,
		InterruptGrace: conf.interruptGrace,
	})
	if err != nil {
		return nil, err
	}
	cb.MaxFrame = conn.MaxFrame()
	cb.NewMsg = func(_ *Usermount, op Opcode, n int) *Message { return newPooledMessage(op, n) }
	cb.DestroyMsg = releaseMessage
	cb.XchgMsg = func(ctx context.Context, u *Usermount, m *Message, wait Wait) error {
		if u != nil && owner.Load() == nil {
			owner.CompareAndSwap(nil, u)
		}
		if wait == NoReply {
			return conn.SendTail(ctx, m.in, m.tail)
		}
		if m.tail != nil {
			reply, err := conn.ExchangeTail(ctx, m.in, m.tail)
			if err != nil {
				return err
			}
			m.SetReply(reply)
			return nil
		}
		if m.dst != nil {
			reply, inPlace, err := conn.ExchangeInto(ctx, m.Request(), m.dst)
			switch {
			case err != nil:
				return err
			case inPlace:
				m.setReplyInPlace(reply, int(wire.Len(reply))-wire.OutHeaderSize)
			default:
				m.SetReply(reply)
			}
			return nil
		}
		reply, err := conn.Exchange(ctx, m.Request())
		if err != nil {
			return err
		}
		m.SetReply(reply)
		return nil
	}
	cb.Start = func(um *Usermount) error {
		go func() {
			<-conn.Done()
			if um.unmounting.Load() {
				// Daemons exit once DESTROY is answered: that is the
				// clean end, not a failure.
				um.Shutdown(nil)
				return
			}
			um.Shutdown(conn.Err())
		}()
		return nil
	}
	cb.Umount = func(*Usermount) { conn.Close() }
	cb.stats = conn.Stats
	return cb, nil
}

// Attach starts a mount-free session with the FUSE daemon at the other end
// of f: socket transport, Init, the INIT handshake, and the main loop in a
// goroutine. Unmount ends it. The returned Usermount's operations may be
// called from any goroutine.
func Attach(ctx context.Context, f *os.File, mi *MountInfo, opts ...Option) (*Usermount, error) {
	cb, err := SocketCallbacks(f, opts...)
	if err != nil {
		return nil, err
	}
	u, err := Init(cb, mi, opts...)
	if err != nil {
		cb.Umount(nil)
		return nil, err
	}
	if err := u.FsInit(ctx); err != nil {
		cb.Umount(u)
		return nil, fmt.Errorf("perfuse: attach: %w", err)
	}
	u.startLoop()
	return u, nil
}
