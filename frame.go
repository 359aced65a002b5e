package perfuse

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Opcode is a FUSE request opcode. go-fuse keeps its opcode numbers
// private, so the kernel's numbering is restated here.
type Opcode uint32

// FUSE opcodes, numbered as in the kernel's include/uapi/linux/fuse.h.
const (
	OpLookup          Opcode = 1
	OpForget          Opcode = 2
	OpGetattr         Opcode = 3
	OpSetattr         Opcode = 4
	OpReadlink        Opcode = 5
	OpSymlink         Opcode = 6
	OpMknod           Opcode = 8
	OpMkdir           Opcode = 9
	OpUnlink          Opcode = 10
	OpRmdir           Opcode = 11
	OpRename          Opcode = 12
	OpLink            Opcode = 13
	OpOpen            Opcode = 14
	OpRead            Opcode = 15
	OpWrite           Opcode = 16
	OpStatfs          Opcode = 17
	OpRelease         Opcode = 18
	OpFsync           Opcode = 20
	OpSetxattr        Opcode = 21
	OpGetxattr        Opcode = 22
	OpListxattr       Opcode = 23
	OpRemovexattr     Opcode = 24
	OpFlush           Opcode = 25
	OpInit            Opcode = 26
	OpOpendir         Opcode = 27
	OpReaddir         Opcode = 28
	OpReleasedir      Opcode = 29
	OpFsyncdir        Opcode = 30
	OpGetlk           Opcode = 31
	OpSetlk           Opcode = 32
	OpSetlkw          Opcode = 33
	OpAccess          Opcode = 34
	OpCreate          Opcode = 35
	OpInterrupt       Opcode = 36
	OpBmap            Opcode = 37
	OpDestroy         Opcode = 38
	OpIoctl           Opcode = 39
	OpPoll            Opcode = 40
	OpNotifyReply     Opcode = 41
	OpBatchForget     Opcode = 42
	OpFallocate       Opcode = 43
	OpReaddirplus     Opcode = 44
	OpRename2         Opcode = 45
	OpLseek           Opcode = 46
	OpCopyFileRange   Opcode = 47
	OpSetupmapping    Opcode = 48
	OpRemovemapping   Opcode = 49
	OpSyncfs          Opcode = 50
	OpTmpfile         Opcode = 51
	OpStatx           Opcode = 52
	OpCopyFileRange64 Opcode = 53
	OpCuseInit        Opcode = 4096
)

var nativeEndian = binary.NativeEndian

// maxOpcode bounds the per-opcode statistics arrays.
const maxOpcode = OpCopyFileRange64

// Reply sizes that are not one fixed struct.
const (
	replyNone     = 0  // the daemon sends only the out header (or nothing)
	replyVariable = -1 // the operation checks the length itself
)

// opInfo is one row of the opcode table: the name, the size of the fixed
// request part that follows the in header, and the reply payload size.
type opInfo struct {
	name    string
	inSize  int
	outSize int
}

func inSize[T any]() int  { var v T; return int(unsafe.Sizeof(v)) - inHeaderSize }
func outSize[T any]() int { var v T; return int(unsafe.Sizeof(v)) }

// renameInCompat is RENAME's payload: RENAME2's flags came later (7.23).
const renameInCompat = 8

var opTable = map[Opcode]opInfo{
	OpLookup:          {"LOOKUP", 0, outSize[fuse.EntryOut]()},
	OpForget:          {"FORGET", inSize[fuse.ForgetIn](), replyNone},
	OpGetattr:         {"GETATTR", inSize[fuse.GetAttrIn](), outSize[fuse.AttrOut]()},
	OpSetattr:         {"SETATTR", inSize[fuse.SetAttrIn](), outSize[fuse.AttrOut]()},
	OpReadlink:        {"READLINK", 0, replyVariable},
	OpSymlink:         {"SYMLINK", 0, outSize[fuse.EntryOut]()},
	OpMknod:           {"MKNOD", inSize[fuse.MknodIn](), outSize[fuse.EntryOut]()},
	OpMkdir:           {"MKDIR", inSize[fuse.MkdirIn](), outSize[fuse.EntryOut]()},
	OpUnlink:          {"UNLINK", 0, replyNone},
	OpRmdir:           {"RMDIR", 0, replyNone},
	OpRename:          {"RENAME", renameInCompat, replyNone},
	OpLink:            {"LINK", inSize[fuse.LinkIn](), outSize[fuse.EntryOut]()},
	OpOpen:            {"OPEN", inSize[fuse.OpenIn](), outSize[fuse.OpenOut]()},
	OpRead:            {"READ", inSize[fuse.ReadIn](), replyVariable},
	OpWrite:           {"WRITE", inSize[fuse.WriteIn](), outSize[fuse.WriteOut]()},
	OpStatfs:          {"STATFS", 0, outSize[fuse.StatfsOut]()},
	OpRelease:         {"RELEASE", inSize[fuse.ReleaseIn](), replyNone},
	OpFsync:           {"FSYNC", inSize[fuse.FsyncIn](), replyNone},
	OpSetxattr:        {"SETXATTR", 8, replyNone},
	OpGetxattr:        {"GETXATTR", inSize[fuse.GetXAttrIn](), replyVariable},
	OpListxattr:       {"LISTXATTR", inSize[fuse.GetXAttrIn](), replyVariable},
	OpRemovexattr:     {"REMOVEXATTR", 0, replyNone},
	OpFlush:           {"FLUSH", inSize[fuse.FlushIn](), replyNone},
	OpInit:            {"INIT", inSize[fuse.InitIn](), replyVariable},
	OpOpendir:         {"OPENDIR", inSize[fuse.OpenIn](), outSize[fuse.OpenOut]()},
	OpReaddir:         {"READDIR", inSize[fuse.ReadIn](), replyVariable},
	OpReleasedir:      {"RELEASEDIR", inSize[fuse.ReleaseIn](), replyNone},
	OpFsyncdir:        {"FSYNCDIR", inSize[fuse.FsyncIn](), replyNone},
	OpGetlk:           {"GETLK", inSize[fuse.LkIn](), outSize[fuse.LkOut]()},
	OpSetlk:           {"SETLK", inSize[fuse.LkIn](), replyNone},
	OpSetlkw:          {"SETLKW", inSize[fuse.LkIn](), replyNone},
	OpAccess:          {"ACCESS", inSize[fuse.AccessIn](), replyNone},
	OpCreate:          {"CREATE", inSize[fuse.CreateIn](), outSize[fuse.CreateOut]()},
	OpInterrupt:       {"INTERRUPT", inSize[fuse.InterruptIn](), replyNone},
	OpBmap:            {"BMAP", 16, 8},
	OpDestroy:         {"DESTROY", 0, replyNone},
	OpIoctl:           {"IOCTL", inSize[fuse.IoctlIn](), replyVariable},
	OpPoll:            {"POLL", 24, 8},
	OpNotifyReply:     {"NOTIFY_REPLY", inSize[fuse.NotifyRetrieveIn](), replyNone},
	OpBatchForget:     {"BATCH_FORGET", 8, replyNone},
	OpFallocate:       {"FALLOCATE", inSize[fuse.FallocateIn](), replyNone},
	OpReaddirplus:     {"READDIRPLUS", inSize[fuse.ReadIn](), replyVariable},
	OpRename2:         {"RENAME2", inSize[fuse.RenameIn](), replyNone},
	OpLseek:           {"LSEEK", inSize[fuse.LseekIn](), outSize[fuse.LseekOut]()},
	OpCopyFileRange:   {"COPY_FILE_RANGE", inSize[fuse.CopyFileRangeIn](), outSize[fuse.WriteOut]()},
	OpSetupmapping:    {"SETUPMAPPING", 40, replyNone},
	OpRemovemapping:   {"REMOVEMAPPING", 4, replyNone},
	OpSyncfs:          {"SYNCFS", 8, replyNone},
	OpTmpfile:         {"TMPFILE", inSize[fuse.CreateIn](), outSize[fuse.CreateOut]()},
	OpStatx:           {"STATX", inSize[fuse.StatxIn](), outSize[fuse.StatxOut]()},
	OpCopyFileRange64: {"COPY_FILE_RANGE_64", inSize[fuse.CopyFileRangeIn](), 8},
	OpCuseInit:        {"CUSE_INIT", 16, replyVariable},
}

// OpName returns the opcode's name, or "UNKNOWN", as perfuse_opname does.
// Unlike upstream the table covers every opcode up to 53.
func OpName(op Opcode) string {
	if info, ok := opTable[op]; ok {
		return info.name
	}
	return "UNKNOWN"
}

func (op Opcode) String() string { return OpName(op) }

const (
	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
)

// Message is one exchange with the daemon: the request frame (in header and
// payload) and, once the exchange is done, the reply frame (out header and
// payload), in one object as libperfuse's perfuse_msg_t has them.
type Message struct {
	in  []byte
	out []byte
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

// Request returns the request frame as sent on the wire.
func (m *Message) Request() []byte { return m.in }

// InHeader returns the request's header, in place, or nil for a message
// that holds only a reply (an unsolicited frame).
func (m *Message) InHeader() *fuse.InHeader {
	if len(m.in) < inHeaderSize {
		return nil
	}
	return (*fuse.InHeader)(unsafe.Pointer(&m.in[0]))
}

// InPayload returns the request payload that follows the in header.
func (m *Message) InPayload() []byte {
	if len(m.in) < inHeaderSize {
		return nil
	}
	return m.in[inHeaderSize:]
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
func (m *Message) SetReply(frame []byte) { m.out = frame }

// Reply returns the whole reply frame, nil before the exchange.
func (m *Message) Reply() []byte { return m.out }

// OutHeader returns a copy of the reply header, or false when there is no
// reply of at least a header's length.
func (m *Message) OutHeader() (fuse.OutHeader, bool) {
	return parseOutHeader(m.out)
}

// OutPayload returns the reply payload after the out header.
func (m *Message) OutPayload() []byte {
	if len(m.out) < outHeaderSize {
		return nil
	}
	return m.out[outHeaderSize:]
}

func parseOutHeader(b []byte) (fuse.OutHeader, bool) {
	var h fuse.OutHeader
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

// putIn copies the fixed part of a go-fuse request struct (which embeds the
// in header) into the payload of m at its start.
func putIn[T any](m *Message, req *T) {
	copy(m.InPayload(), structBytes(req)[inHeaderSize:])
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
	Entry fuse.EntryOut
	Dirent
	// Node is the looked-up node when the entry counts a lookup (a
	// nodeid, and not "." or ".."); set by Usermount.NodeReaddirplus,
	// nil from ParseDirentsPlus.
	Node *Node
}

const (
	direntHeaderSize = 24 // ino, off, namelen, type
	entryOutSize     = int(unsafe.Sizeof(fuse.EntryOut{}))
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
