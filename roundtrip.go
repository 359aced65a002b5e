package perfuse

import (
	"context"
	"fmt"
	"syscall"
)

// The one request path. An operation describes its request (opcode,
// node, caller, fixed part, names, tail) and gets its reply's payload back,
// checked once by checkReply; building the frame, the exchange, the trace
// and the release of the message are done here for every operation.

// request is one FUSE request: op on node (nil: none) for cred (nil: this
// process), with in as the fixed part after the in header (see fixed),
// then each name with its NUL, then tail (WRITE's data, SETXATTR's value).
// dst, for a READ, is where the payload is wanted: the socket transport
// receives it there in place.
type request struct {
	op    Opcode
	node  *Node
	cred  *Cred
	in    []byte
	names []string
	tail  []byte
	dst   []byte
	// unique, when set, replaces the request's fresh one (NOTIFY_REPLY
	// takes its notification's).
	unique uint64
}

// fixed returns the fixed request part of op from a go-fuse request
// struct, cut to the size the opcode table gives (RENAME and SETXATTR use
// shorter structs than go-fuse's).
func fixed[T any](op Opcode, in *T) []byte {
	return structBytes(in)[inHeaderSize:][:row(op).In]
}

// do sends r and hands its reply's payload to fn (nil: not wanted), valid
// only during the call. The reply has been checked: it answers r, carries
// no errno (that is do's error), and its payload has the opcode's fixed
// size when it has one. A request the opcode table marks no-reply is
// sent without waiting.
func (u *Usermount) do(ctx context.Context, r request, fn func(payload []byte) error) error {
	m, err := u.newReq(r.op, r.node, r.cred, r.in, r.names, r.tail)
	if err != nil {
		return err
	}
	if len(r.names) > 0 && u.diagOn(DiagFilename) {
		u.debug(DiagFilename, "perfuse: names", "opcode", r.op, "nodeid", u.NodeID(r.node), "names", r.names)
	}
	defer u.destroy(m)
	m.dst = r.dst
	if r.unique != 0 {
		m.InHeader().Unique = r.unique
	}
	wait := WaitReply
	if row(r.op).NoReply {
		wait = NoReply
	}
	if err := u.xchg(ctx, r.node, m, wait); err != nil || fn == nil || wait == NoReply {
		return err
	}
	return fn(m.OutPayload())
}

// roundTrip is do for a reply of one fixed struct Out (the opcode's row
// gives its size, which checkReply has held it to), decoded.
func roundTrip[Out any](ctx context.Context, u *Usermount, r request) (*Out, error) {
	out := new(Out)
	if err := u.do(ctx, r, func(p []byte) error { copy(structBytes(out), p); return nil }); err != nil {
		return nil, err
	}
	return out, nil
}

// maxRequest is the largest request frame the daemon was promised: a
// WRITE of max_write bytes.
func (u *Usermount) maxRequest() int { return writeHeader + u.limits().maxWrite }

// newReq builds op's request on n: the fixed part, then each name with
// its NUL, then tail. A frame larger than the daemon accepts is E2BIG,
// refused before the wire.
func (u *Usermount) newReq(op Opcode, n *Node, cred *Cred, fix []byte, names []string, tail []byte) (*Message, error) {
	size := len(fix) + len(tail)
	for _, s := range names {
		size += len(s) + 1
	}
	if inHeaderSize+size > u.maxRequest() {
		return nil, fmt.Errorf("perfuse: %s of %d bytes: %w", op, inHeaderSize+size, syscall.E2BIG)
	}
	m := u.newMsg(op, n, size-len(tail), cred)
	b := m.in[inHeaderSize:]
	off := copy(b, fix)
	for _, s := range names {
		off += copy(b[off:], s) + 1
	}
	if len(tail) > 0 {
		// Sent after the rest, not copied into it (Message.tail).
		m.tail = tail
		m.InHeader().Length += uint32(len(tail))
	}
	return m, nil
}
