package perfuse

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
	"unsafe"

	"github.com/perfuse-go/perfuse/internal/bufpool"
	"github.com/perfuse-go/perfuse/internal/wire"
)

// Opcode is a FUSE request opcode (internal/wire holds the table).
type Opcode = wire.Opcode

// FUSE opcodes, as in the kernel's include/uapi/linux/fuse.h.
const (
	OpLookup          = wire.OpLookup
	OpForget          = wire.OpForget
	OpGetattr         = wire.OpGetattr
	OpSetattr         = wire.OpSetattr
	OpReadlink        = wire.OpReadlink
	OpSymlink         = wire.OpSymlink
	OpMknod           = wire.OpMknod
	OpMkdir           = wire.OpMkdir
	OpUnlink          = wire.OpUnlink
	OpRmdir           = wire.OpRmdir
	OpRename          = wire.OpRename
	OpLink            = wire.OpLink
	OpOpen            = wire.OpOpen
	OpRead            = wire.OpRead
	OpWrite           = wire.OpWrite
	OpStatfs          = wire.OpStatfs
	OpRelease         = wire.OpRelease
	OpFsync           = wire.OpFsync
	OpSetxattr        = wire.OpSetxattr
	OpGetxattr        = wire.OpGetxattr
	OpListxattr       = wire.OpListxattr
	OpRemovexattr     = wire.OpRemovexattr
	OpFlush           = wire.OpFlush
	OpInit            = wire.OpInit
	OpOpendir         = wire.OpOpendir
	OpReaddir         = wire.OpReaddir
	OpReleasedir      = wire.OpReleasedir
	OpFsyncdir        = wire.OpFsyncdir
	OpGetlk           = wire.OpGetlk
	OpSetlk           = wire.OpSetlk
	OpSetlkw          = wire.OpSetlkw
	OpAccess          = wire.OpAccess
	OpCreate          = wire.OpCreate
	OpInterrupt       = wire.OpInterrupt
	OpBmap            = wire.OpBmap
	OpDestroy         = wire.OpDestroy
	OpIoctl           = wire.OpIoctl
	OpPoll            = wire.OpPoll
	OpNotifyReply     = wire.OpNotifyReply
	OpBatchForget     = wire.OpBatchForget
	OpFallocate       = wire.OpFallocate
	OpReaddirplus     = wire.OpReaddirplus
	OpRename2         = wire.OpRename2
	OpLseek           = wire.OpLseek
	OpCopyFileRange   = wire.OpCopyFileRange
	OpSetupmapping    = wire.OpSetupmapping
	OpRemovemapping   = wire.OpRemovemapping
	OpSyncfs          = wire.OpSyncfs
	OpTmpfile         = wire.OpTmpfile
	OpStatx           = wire.OpStatx
	OpCopyFileRange64 = wire.OpCopyFileRange64
	OpCuseInit        = wire.OpCuseInit
)

var nativeEndian = binary.NativeEndian

// maxOpcode bounds the per-opcode statistics arrays.
const maxOpcode = wire.MaxOpcode

// row returns op's row of the opcode table (zero for an unknown op).
func row(op Opcode) wire.Op {
	r, _ := op.Row()
	return r
}

// OpName returns the opcode's name, or "UNKNOWN", as perfuse_opname does.
// Unlike upstream the table covers every opcode up to 53.
func OpName(op Opcode) string {
	if r, ok := op.Row(); ok {
		return r.Name
	}
	return "UNKNOWN"
}

const (
	inHeaderSize  = wire.InHeaderSize
	outHeaderSize = wire.OutHeaderSize
)

// Message is one exchange with the daemon: the request frame (in header and
// payload) and, once the exchange is done, the reply frame (out header and
// payload), in one object as libperfuse's perfuse_msg_t has them.
type Message struct {
	in []byte
	// tail is the request's data after in (a WRITE's), kept apart so that
	// the socket transport sends both by one writev without copying it;
	// Request joins them for any other transport.
	tail []byte
	out  []byte
	// dst is where a READ wants its reply's payload; a transport that can
	// receives it there in place, and payload is then dst's filled part
	// (out holds the header alone).
	dst     []byte
	payload []byte
}

// NewMessage allocates a request of payloadLen zeroed payload bytes after an
// in header whose length and opcode are filled in. It is the default NewMsg.
func NewMessage(op Opcode, payloadLen int) *Message {
	payloadLen = max(payloadLen, 0)
	// Backed by uint64s so the header can be viewed in place.
	words := make([]uint64, (inHeaderSize+payloadLen+7)/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), inHeaderSize+payloadLen)
	m := &Message{in: b}
	h := m.InHeader()
	h.Length = uint32(len(b))
	h.Opcode = uint32(op)
	return m
}

// messages are the Messages of the socket transport, reused with their
// frames' buffers (internal/bufpool).
var messages = sync.Pool{New: func() any { return new(Message) }}

// newPooledMessage is NewMessage from the pools: the socket transport's
// NewMsg. Pool buffers come from make([]byte) of at least 64 bytes, which
// is 8-byte aligned, so the header can be viewed in place.
func newPooledMessage(op Opcode, payloadLen int) *Message {
	m := messages.Get().(*Message)
	m.in = bufpool.Get(inHeaderSize + max(payloadLen, 0))
	clear(m.in)
	h := m.InHeader()
	h.Length = uint32(len(m.in))
	h.Opcode = uint32(op)
	return m
}

// releaseMessage gives m and its frames back to the pools: the socket
// transport's DestroyMsg. Nothing of m may be used after.
func releaseMessage(m *Message) {
	bufpool.Put(m.in)
	bufpool.Put(m.out)
	*m = Message{}
	messages.Put(m)
}

// Request returns the request frame as sent on the wire.
func (m *Message) Request() []byte {
	if m.tail != nil {
		m.in, m.tail = append(m.in[:len(m.in):len(m.in)], m.tail...), nil
	}
	return m.in
}

// InHeader returns the request's header, in place, or nil for a message
// that holds only a reply (an unsolicited frame).
func (m *Message) InHeader() *InHeader {
	if len(m.in) < inHeaderSize {
		return nil
	}
	return (*InHeader)(unsafe.Pointer(&m.in[0]))
}

// InPayload returns the request payload that follows the in header.
func (m *Message) InPayload() []byte {
	if len(m.in) < inHeaderSize {
		return nil
	}
	return m.Request()[inHeaderSize:]
}

// Opcode returns the request's opcode, 0 when there is no request.
func (m *Message) Opcode() Opcode {
	if h := m.InHeader(); h != nil {
		return Opcode(h.Opcode)
	}
	return 0
}

// SetReply stores the reply frame. Transports call it; the frame is kept,
// not copied.
func (m *Message) SetReply(frame []byte) { m.out, m.payload = frame, nil }

// setReplyInPlace stores a reply whose payload was received into m.dst:
// hdr is its header, n the payload's length.
func (m *Message) setReplyInPlace(hdr []byte, n int) { m.out, m.payload = hdr, m.dst[:n] }

// Reply returns the reply frame, nil before the exchange: the whole frame,
// or its header alone when the payload was received in place.
func (m *Message) Reply() []byte { return m.out }

// replyLen is the reply frame's length, payload received in place
// included.
func (m *Message) replyLen() int { return len(m.out) + len(m.payload) }

// OutHeader returns a copy of the reply header, or false when there is no
// reply of at least a header's length.
func (m *Message) OutHeader() (OutHeader, bool) {
	return parseOutHeader(m.out)
}

// OutPayload returns the reply payload after the out header.
func (m *Message) OutPayload() []byte {
	if m.payload != nil {
		return m.payload
	}
	if len(m.out) < outHeaderSize {
		return nil
	}
	return m.out[outHeaderSize:]
}

func parseOutHeader(b []byte) (OutHeader, bool) {
	var h OutHeader
	if len(b) < outHeaderSize {
		return h, false
	}
	copy(structBytes(&h), b)
	return h, true
}

// structBytes views a wire struct as its bytes, in host order as the kernel
// ABI is.
func structBytes[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}

// errProto builds the error for a reply that breaks the protocol.
func errProto(op Opcode, format string, args ...any) error {
	return fmt.Errorf("perfuse: %s reply: %s: %w", OpName(op), fmt.Sprintf(format, args...), syscall.EPROTO)
}

// decodeExact decodes a reply payload that must be exactly one T.
func decodeExact[T any](op Opcode, b []byte) (*T, error) {
	v := new(T)
	dst := structBytes(v)
	if len(b) != len(dst) {
		return nil, errProto(op, "payload is %d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return v, nil
}

// decodeAtLeast decodes a reply of variable length: at least min bytes and
// at most one T; the missing tail (an older protocol minor's shorter
// struct) stays zero.
func decodeAtLeast[T any](op Opcode, b []byte, min int) (*T, error) {
	v := new(T)
	dst := structBytes(v)
	if len(b) < min || len(b) > len(dst) {
		return nil, errProto(op, "payload is %d bytes, want %d to %d", len(b), min, len(dst))
	}
	copy(dst, b)
	return v, nil
}

// replyErrno converts a reply's status: 0 is success, -1..-511 an errno
// (the range the kernel accepts), and anything else (a positive value,
// upstream's "positive errno" warning) a protocol error.
func replyErrno(op Opcode, status int32) error {
	switch {
	case status == 0:
		return nil
	case status < 0 && status > -512:
		return syscall.Errno(-status)
	default:
		return errProto(op, "status %d is not a negated errno", status)
	}
}

// Dirent is one directory entry of a READDIR reply.
type Dirent struct {
	Ino  uint64
	Off  uint64 // cookie to resume reading after this entry
	Type uint32 // DT_* value
	Name string
}

// DirentPlus is one READDIRPLUS record: the entry and its lookup result.
// Entry.NodeId is 0 when the daemon gave no lookup.
type DirentPlus struct {
	Entry EntryOut
	Dirent
	// Node is the looked-up node when the entry counts a lookup (a
	// nodeid, and not "." or ".."); set by Usermount.NodeReaddirplus,
	// nil from ParseDirentsPlus.
	Node *Node
}

const (
	direntHeaderSize = 24 // ino, off, namelen, type
	entryOutSize     = int(unsafe.Sizeof(EntryOut{}))
	fuseNameMax      = 1024 // the kernel's FUSE_NAME_MAX
)

func align8(n int) int { return (n + 7) &^ 7 }

// ParseDirents walks the records of a READDIR reply, calling fn for each
// until it returns false. Records are 8-byte aligned. As the kernel does, a
// record cut short at the end of the buffer ends the walk; a record with a
// bad name length or a name holding '/' or NUL is an EIO error.
func ParseDirents(b []byte, fn func(Dirent) bool) error {
	return walkDirents(b, 0, func(rec []byte, d Dirent) bool { return fn(d) })
}

// ParseDirentsPlus walks the records of a READDIRPLUS reply, as ParseDirents.
func ParseDirentsPlus(b []byte, fn func(DirentPlus) bool) error {
	return walkDirents(b, entryOutSize, func(rec []byte, d Dirent) bool {
		var p DirentPlus
		copy(structBytes(&p.Entry), rec)
		p.Dirent = d
		return fn(p)
	})
}

func walkDirents(b []byte, prefix int, fn func(rec []byte, d Dirent) bool) error {
	le := nativeEndian
	for len(b) >= prefix+direntHeaderSize {
		h := b[prefix:]
		namelen := int(le.Uint32(h[16:]))
		if namelen == 0 || namelen > fuseNameMax {
			return fmt.Errorf("perfuse: dirent name length %d: %w", namelen, syscall.EIO)
		}
		reclen := align8(prefix + direntHeaderSize + namelen)
		if prefix+direntHeaderSize+namelen > len(b) {
			return nil
		}
		name := h[direntHeaderSize : direntHeaderSize+namelen]
		if bytes.IndexByte(name, '/') >= 0 || bytes.IndexByte(name, 0) >= 0 {
			return fmt.Errorf("perfuse: dirent name %q: %w", name, syscall.EIO)
		}
		d := Dirent{Ino: le.Uint64(h), Off: le.Uint64(h[8:]), Type: le.Uint32(h[20:]), Name: string(name)}
		if !fn(b[:prefix], d) {
			return nil
		}
		if reclen >= len(b) {
			return nil
		}
		b = b[reclen:]
	}
	return nil
}

// NotifyCode is the code of an unsolicited notification from the daemon,
// carried in the status field of a frame with unique 0.
type NotifyCode int32

// Notification codes, as in the kernel's enum fuse_notify_code.
const (
	NotifyPoll       NotifyCode = 1
	NotifyInvalInode NotifyCode = 2
	NotifyInvalEntry NotifyCode = 3
	NotifyStore      NotifyCode = 4
	NotifyRetrieve   NotifyCode = 5
	NotifyDelete     NotifyCode = 6
	NotifyResend     NotifyCode = 7
	NotifyIncEpoch   NotifyCode = 8
	NotifyPrune      NotifyCode = 9
)

var notifyNames = map[NotifyCode]string{
	NotifyPoll: "POLL", NotifyInvalInode: "INVAL_INODE", NotifyInvalEntry: "INVAL_ENTRY",
	NotifyStore: "STORE", NotifyRetrieve: "RETRIEVE", NotifyDelete: "DELETE",
	NotifyResend: "RESEND", NotifyIncEpoch: "INC_EPOCH", NotifyPrune: "PRUNE",
}

func (c NotifyCode) String() string {
	if n, ok := notifyNames[c]; ok {
		return n
	}
	return fmt.Sprintf("NOTIFY_%d", int32(c))
}

// Notification is a decoded daemon notification. Which fields are set
// depends on Code: Poll (Kh); InvalInode (Nodeid, Off, Len); InvalEntry
// (Parent, Name, Flags); Store (Nodeid, Off, Data); Retrieve (NotifyUnique,
// Nodeid, Off, Size); Delete (Parent, Child, Name); Prune (Nodeids).
type Notification struct {
	Code         NotifyCode
	Kh           uint64
	Nodeid       uint64
	Parent       uint64
	Child        uint64
	Off          int64
	Len          int64
	Flags        uint32
	Size         uint32
	NotifyUnique uint64
	Name         string
	Data         []byte
	Nodeids      []uint64
}

// ParseNotification decodes the payload of a notification frame whose
// status field is code. Lengths are checked as the kernel checks them: a
// name must be exactly namelen bytes and a NUL, store data exactly size
// bytes.
func ParseNotification(code NotifyCode, b []byte) (*Notification, error) {
	le := nativeEndian
	n := &Notification{Code: code}
	bad := func(why string) error {
		return fmt.Errorf("perfuse: notification %s: %s (%d bytes): %w", code, why, len(b), syscall.EPROTO)
	}
	name := func(fixed, namelen int) (string, error) {
		if namelen == 0 || namelen > fuseNameMax {
			return "", bad("bad name length")
		}
		if len(b) != fixed+namelen+1 || b[fixed+namelen] != 0 {
			return "", bad("name not NUL-terminated at its length")
		}
		s := b[fixed : fixed+namelen]
		if bytes.IndexByte(s, 0) >= 0 || bytes.IndexByte(s, '/') >= 0 {
			return "", bad("bad name")
		}
		return string(s), nil
	}
	var err error
	switch code {
	case NotifyPoll:
		if len(b) != 8 {
			return nil, bad("wrong size")
		}
		n.Kh = le.Uint64(b)
	case NotifyInvalInode:
		if len(b) != 24 {
			return nil, bad("wrong size")
		}
		n.Nodeid, n.Off, n.Len = le.Uint64(b), int64(le.Uint64(b[8:])), int64(le.Uint64(b[16:]))
	case NotifyInvalEntry:
		if len(b) < 16 {
			return nil, bad("short")
		}
		n.Parent, n.Flags = le.Uint64(b), le.Uint32(b[12:])
		n.Name, err = name(16, int(le.Uint32(b[8:])))
	case NotifyDelete:
		if len(b) < 24 {
			return nil, bad("short")
		}
		n.Parent, n.Child = le.Uint64(b), le.Uint64(b[8:])
		n.Name, err = name(24, int(le.Uint32(b[16:])))
	case NotifyStore:
		if len(b) < 24 {
			return nil, bad("short")
		}
		n.Nodeid, n.Off, n.Size = le.Uint64(b), int64(le.Uint64(b[8:])), le.Uint32(b[16:])
		if uint64(len(b)-24) != uint64(n.Size) {
			return nil, bad("data length differs from size")
		}
		n.Data = append([]byte(nil), b[24:]...)
	case NotifyRetrieve:
		if len(b) != 32 {
			return nil, bad("wrong size")
		}
		n.NotifyUnique, n.Nodeid = le.Uint64(b), le.Uint64(b[8:])
		n.Off, n.Size = int64(le.Uint64(b[16:])), le.Uint32(b[24:])
	case NotifyResend, NotifyIncEpoch:
		if len(b) != 0 {
			return nil, bad("unexpected payload")
		}
	case NotifyPrune:
		if len(b) < 16 {
			return nil, bad("short")
		}
		count := uint64(le.Uint32(b))
		if uint64(len(b)-16) != count*8 {
			return nil, bad("nodeid list length differs from count")
		}
		for i := uint64(0); i < count; i++ {
			n.Nodeids = append(n.Nodeids, le.Uint64(b[16+8*i:]))
		}
	default:
		return nil, bad("unknown code")
	}
	if err != nil {
		return nil, err
	}
	return n, nil
}
