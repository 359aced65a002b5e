package peerutil

import (
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/wire"
)

// Opcodes the Client sends itself.
const ()

const (
	inHeaderSize  = wire.InHeaderSize
	outHeaderSize = wire.OutHeaderSize

	// ioTimeout bounds every Client read, so a silent peer fails the test
	// instead of hanging it.
	ioTimeout = 10 * time.Second
)

// Client is a tiny hand-written FUSE client for the test peers' own tests: it
// writes request frames as the kernel would and reads reply frames. It is not
// safe for concurrent use and must be called from the test goroutine (it
// fails the test with t.Fatal).
type Client struct {
	// LastRecords holds the sizes of the records the last Recv joined.
	LastRecords []int

	t      testing.TB
	conn   *os.File
	unique uint64
	buf    []byte
}

// NewClient returns a Client over conn, the client end of a peer.
func NewClient(t testing.TB, conn *os.File) *Client {
	return &Client{t: t, conn: conn, buf: make([]byte, 2*BufSize)}
}

// Send writes one request frame with a fresh unique and returns the unique.
// Uniques start at 2 and step by 2, as the kernel's do.
func (c *Client) Send(op wire.Opcode, nodeid uint64, payload ...[]byte) uint64 {
	c.t.Helper()
	c.unique += 2
	h := fuse.InHeader{
		Opcode: uint32(op),
		Unique: c.unique,
		NodeId: nodeid,
		Caller: fuse.Caller{
			Owner: fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())},
			Pid:   uint32(os.Getpid()),
		},
	}
	frame := append([]byte(nil), Bytes(h)...)
	for _, p := range payload {
		frame = append(frame, p...)
	}
	*(*uint32)(unsafe.Pointer(&frame[0])) = uint32(len(frame))
	if _, err := c.conn.Write(frame); err != nil {
		c.t.Fatalf("send %s: %v", op, err)
	}
	return c.unique
}

// Recv reads one reply frame. A reply whose first record is shorter than its
// header's length is joined from the following records, as a daemon that
// splices sends it (see linux-fuse-notes.md).
func (c *Client) Recv() (fuse.OutHeader, []byte) {
	c.t.Helper()
	if err := c.conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		c.t.Fatalf("set deadline: %v", err)
	}
	var frame []byte
	c.LastRecords = c.LastRecords[:0]
	for {
		n, err := c.conn.Read(c.buf)
		if err != nil {
			c.t.Fatalf("recv: %v (after %d bytes)", err, len(frame))
		}
		frame = append(frame, c.buf[:n]...)
		c.LastRecords = append(c.LastRecords, n)
		if len(frame) < outHeaderSize {
			c.t.Fatalf("recv: short frame of %d bytes: %x", len(frame), frame)
		}
		h, _ := Decode[fuse.OutHeader](frame)
		if int(h.Length) == len(frame) {
			return h, frame[outHeaderSize:]
		}
		if int(h.Length) < len(frame) {
			c.t.Fatalf("recv: header says %d bytes, got %d", h.Length, len(frame))
		}
	}
}

// Call sends a request and reads its reply, failing the test when the reply
// carries another unique. The status is left to the caller.
func (c *Client) Call(op wire.Opcode, nodeid uint64, payload ...[]byte) (fuse.OutHeader, []byte) {
	c.t.Helper()
	u := c.Send(op, nodeid, payload...)
	h, p := c.Recv()
	if h.Unique != u {
		c.t.Fatalf("%s: reply for unique %d, want %d", op, h.Unique, u)
	}
	return h, p
}

// Init performs the INIT exchange as a Linux kernel does: protocol 7.minor
// with the full 64-byte fuse_init_in payload, 128 KiB read-ahead and the
// given flags. It fails the test unless the daemon answers with success, and
// returns the reply decoded into an InitOut (zero beyond what the daemon sent)
// and the payload's length.
func (c *Client) Init(minor, flags uint32) (fuse.InitOut, int) {
	c.t.Helper()
	in := fuse.InitIn{Major: 7, Minor: minor, MaxReadAhead: 128 << 10, Flags: flags}
	h, p := c.Call(wire.OpInit, 0, InPayload(in))
	if h.Status != 0 {
		c.t.Fatalf("INIT: status %d", h.Status)
	}
	out, _ := Decode[fuse.InitOut](p)
	return out, len(p)
}

// InPayload encodes a go-fuse request struct, which embeds fuse.InHeader,
// without that header: the payload to pass to Send.
func InPayload(v any) []byte {
	return Bytes(v)[inHeaderSize:]
}
