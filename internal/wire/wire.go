// Package wire is the one place that knows the FUSE wire: the opcodes
// and their names, one row per opcode with its request and reply sizes, the
// header sizes and fields, and the INTERRUPT frame. The wire structs
// themselves are go-fuse's (package fuse), which keeps its opcode numbers
// private; everything else in perfuse reads them from here.
package wire

import (
	"encoding/binary"
	"strconv"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Opcode is a FUSE request opcode.
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

// MaxOpcode is the highest opcode of the table but CUSE_INIT.
const MaxOpcode = OpCopyFileRange64

// Sizes of the headers every frame starts with.
const (
	InHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	OutHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
)

// Reply payload sizes that are not one fixed struct.
const (
	ReplyNone     = 0  // the daemon sends only the out header
	ReplyVariable = -1 // the operation checks the length itself
)

// Op is one opcode's row: its name, the size of the fixed request part
// after the in header, the reply payload size (or ReplyNone,
// ReplyVariable), how many NUL-terminated names follow the fixed part, and
// whether the request gets no reply at all.
type Op struct {
	Name    string
	In      int
	Out     int
	Names   int
	NoReply bool
}

// InSize is the size of request struct T without its in header: the
// fixed part a request of T carries.
func InSize[T any]() int { var v T; return int(unsafe.Sizeof(v)) - InHeaderSize }

// OutSize is the size of reply struct T.
func OutSize[T any]() int { var v T; return int(unsafe.Sizeof(v)) }

// RenameInCompat is RENAME's fixed part: RENAME2's flags came later (7.23).
const RenameInCompat = 8

// Ops is the opcode table, indexed by opcode.
var Ops = [MaxOpcode + 1]Op{
	OpLookup:          {Name: "LOOKUP", In: 0, Out: OutSize[fuse.EntryOut](), Names: 1},
	OpForget:          {Name: "FORGET", In: InSize[fuse.ForgetIn](), Out: ReplyNone, NoReply: true},
	OpGetattr:         {Name: "GETATTR", In: InSize[fuse.GetAttrIn](), Out: OutSize[fuse.AttrOut]()},
	OpSetattr:         {Name: "SETATTR", In: InSize[fuse.SetAttrIn](), Out: OutSize[fuse.AttrOut]()},
	OpReadlink:        {Name: "READLINK", In: 0, Out: ReplyVariable},
	OpSymlink:         {Name: "SYMLINK", In: 0, Out: OutSize[fuse.EntryOut](), Names: 2},
	OpMknod:           {Name: "MKNOD", In: InSize[fuse.MknodIn](), Out: OutSize[fuse.EntryOut](), Names: 1},
	OpMkdir:           {Name: "MKDIR", In: InSize[fuse.MkdirIn](), Out: OutSize[fuse.EntryOut](), Names: 1},
	OpUnlink:          {Name: "UNLINK", In: 0, Out: ReplyNone, Names: 1},
	OpRmdir:           {Name: "RMDIR", In: 0, Out: ReplyNone, Names: 1},
	OpRename:          {Name: "RENAME", In: RenameInCompat, Out: ReplyNone, Names: 2},
	OpLink:            {Name: "LINK", In: InSize[fuse.LinkIn](), Out: OutSize[fuse.EntryOut](), Names: 1},
	OpOpen:            {Name: "OPEN", In: InSize[fuse.OpenIn](), Out: OutSize[fuse.OpenOut]()},
	OpRead:            {Name: "READ", In: InSize[fuse.ReadIn](), Out: ReplyVariable},
	OpWrite:           {Name: "WRITE", In: InSize[fuse.WriteIn](), Out: OutSize[fuse.WriteOut]()},
	OpStatfs:          {Name: "STATFS", In: 0, Out: OutSize[fuse.StatfsOut]()},
	OpRelease:         {Name: "RELEASE", In: InSize[fuse.ReleaseIn](), Out: ReplyNone},
	OpFsync:           {Name: "FSYNC", In: InSize[fuse.FsyncIn](), Out: ReplyNone},
	OpSetxattr:        {Name: "SETXATTR", In: 8, Out: ReplyNone, Names: 1},
	OpGetxattr:        {Name: "GETXATTR", In: InSize[fuse.GetXAttrIn](), Out: ReplyVariable, Names: 1},
	OpListxattr:       {Name: "LISTXATTR", In: InSize[fuse.GetXAttrIn](), Out: ReplyVariable},
	OpRemovexattr:     {Name: "REMOVEXATTR", In: 0, Out: ReplyNone, Names: 1},
	OpFlush:           {Name: "FLUSH", In: InSize[fuse.FlushIn](), Out: ReplyNone},
	OpInit:            {Name: "INIT", In: InSize[fuse.InitIn](), Out: ReplyVariable},
	OpOpendir:         {Name: "OPENDIR", In: InSize[fuse.OpenIn](), Out: OutSize[fuse.OpenOut]()},
	OpReaddir:         {Name: "READDIR", In: InSize[fuse.ReadIn](), Out: ReplyVariable},
	OpReleasedir:      {Name: "RELEASEDIR", In: InSize[fuse.ReleaseIn](), Out: ReplyNone},
	OpFsyncdir:        {Name: "FSYNCDIR", In: InSize[fuse.FsyncIn](), Out: ReplyNone},
	OpGetlk:           {Name: "GETLK", In: InSize[fuse.LkIn](), Out: OutSize[fuse.LkOut]()},
	OpSetlk:           {Name: "SETLK", In: InSize[fuse.LkIn](), Out: ReplyNone},
	OpSetlkw:          {Name: "SETLKW", In: InSize[fuse.LkIn](), Out: ReplyNone},
	OpAccess:          {Name: "ACCESS", In: InSize[fuse.AccessIn](), Out: ReplyNone},
	OpCreate:          {Name: "CREATE", In: InSize[fuse.CreateIn](), Out: OutSize[fuse.CreateOut](), Names: 1},
	OpInterrupt:       {Name: "INTERRUPT", In: InSize[fuse.InterruptIn](), Out: ReplyNone},
	OpBmap:            {Name: "BMAP", In: 16, Out: 8},
	OpDestroy:         {Name: "DESTROY", In: 0, Out: ReplyNone},
	OpIoctl:           {Name: "IOCTL", In: InSize[fuse.IoctlIn](), Out: ReplyVariable},
	OpPoll:            {Name: "POLL", In: 24, Out: 8},
	OpNotifyReply:     {Name: "NOTIFY_REPLY", In: InSize[fuse.NotifyRetrieveIn](), Out: ReplyNone, NoReply: true},
	OpBatchForget:     {Name: "BATCH_FORGET", In: 8, Out: ReplyNone, NoReply: true},
	OpFallocate:       {Name: "FALLOCATE", In: InSize[fuse.FallocateIn](), Out: ReplyNone},
	OpReaddirplus:     {Name: "READDIRPLUS", In: InSize[fuse.ReadIn](), Out: ReplyVariable},
	OpRename2:         {Name: "RENAME2", In: InSize[fuse.RenameIn](), Out: ReplyNone, Names: 2},
	OpLseek:           {Name: "LSEEK", In: InSize[fuse.LseekIn](), Out: OutSize[fuse.LseekOut]()},
	OpCopyFileRange:   {Name: "COPY_FILE_RANGE", In: InSize[fuse.CopyFileRangeIn](), Out: OutSize[fuse.WriteOut]()},
	OpSetupmapping:    {Name: "SETUPMAPPING", In: 40, Out: ReplyNone},
	OpRemovemapping:   {Name: "REMOVEMAPPING", In: 4, Out: ReplyNone},
	OpSyncfs:          {Name: "SYNCFS", In: 8, Out: ReplyNone},
	OpTmpfile:         {Name: "TMPFILE", In: InSize[fuse.CreateIn](), Out: OutSize[fuse.CreateOut](), Names: 1},
	OpStatx:           {Name: "STATX", In: InSize[fuse.StatxIn](), Out: OutSize[fuse.StatxOut]()},
	OpCopyFileRange64: {Name: "COPY_FILE_RANGE_64", In: InSize[fuse.CopyFileRangeIn](), Out: 8},
}

// CuseInit is CUSE_INIT's row, outside the table's range.
var CuseInit = Op{Name: "CUSE_INIT", In: 16, Out: ReplyVariable}

// Row returns op's row, and whether op is known.
func (op Opcode) Row() (Op, bool) {
	switch {
	case op == OpCuseInit:
		return CuseInit, true
	case op <= MaxOpcode && Ops[op].Name != "":
		return Ops[op], true
	}
	return Op{}, false
}

// String returns the kernel's name of op, or "OP(n)" for an unknown one.
func (op Opcode) String() string {
	if r, ok := op.Row(); ok {
		return r.Name
	}
	return "OP(" + strconv.FormatUint(uint64(op), 10) + ")"
}

var le = binary.NativeEndian

// Header fields of a frame, read in place: Len, the request's Opcode and
// the Unique both directions carry at the same offset, and a reply's
// Status (a negated errno, or a notification's code).
func Len(frame []byte) uint32      { return le.Uint32(frame) }
func OpcodeOf(frame []byte) Opcode { return Opcode(le.Uint32(frame[4:])) }
func Status(frame []byte) int32    { return int32(le.Uint32(frame[4:])) }
func Unique(frame []byte) uint64   { return le.Uint64(frame[8:]) }

// Interrupt returns the INTERRUPT frame for request unique. It carries
// unique|1 as its own unique, as the kernel's do, so that its answer
// (EAGAIN: ask again; ENOSYS: never) is told from the request's.
func Interrupt(unique uint64) []byte {
	f := make([]byte, InHeaderSize+InSize[fuse.InterruptIn]())
	le.PutUint32(f, uint32(len(f)))
	le.PutUint32(f[4:], uint32(OpInterrupt))
	le.PutUint64(f[8:], unique|1)
	le.PutUint64(f[InHeaderSize:], unique)
	return f
}
