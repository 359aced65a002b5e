package perfuse

import "time"

// perfuse's own copies of the kernel structs its API takes and returns,
// so that a caller never imports go-fuse. Each has the kernel's layout,
// field for field, and go-fuse's field names; the op table decodes the
// wire straight into them. TestLayout holds each to go-fuse's struct of
// the same name, which sizes the wire (internal/wire).

// Owner is a user and group id: the uid and gid of struct fuse_attr,
// struct fuse_setattr_in and struct fuse_in_header.
type Owner struct {
	Uid uint32
	Gid uint32
}

// Attr is a node's attributes, struct fuse_attr.
type Attr struct {
	Ino       uint64
	Size      uint64
	Blocks    uint64 // in 512-byte units
	Atime     uint64
	Mtime     uint64
	Ctime     uint64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Mode      uint32 // file type and permission bits, as st_mode
	Nlink     uint32
	Owner
	Rdev    uint32
	Blksize uint32 // preferred I/O size
	Flags   uint32 // FUSE_ATTR_* bits
}

// AttrOut is the reply to GETATTR and SETATTR, struct fuse_attr_out:
// the attributes and how long they may be cached.
type AttrOut struct {
	AttrValid     uint64 // seconds
	AttrValidNsec uint32
	Dummy         uint32
	Attr
}

// Timeout returns how long the attributes may be cached.
func (o *AttrOut) Timeout() time.Duration {
	return time.Duration(uint64(o.AttrValidNsec) + o.AttrValid*1e9)
}

// EntryOut is the result of a lookup, struct fuse_entry_out: the node id
// and generation, how long the name and the attributes may be cached,
// and the attributes. NodeId 0 is a negative entry (NegativeEntry).
type EntryOut struct {
	NodeId         uint64
	Generation     uint64
	EntryValid     uint64 // seconds
	AttrValid      uint64 // seconds
	EntryValidNsec uint32
	AttrValidNsec  uint32
	Attr
}

// EntryTimeout returns how long the name (or its absence) may be cached.
func (o *EntryOut) EntryTimeout() time.Duration {
	return time.Duration(uint64(o.EntryValidNsec) + o.EntryValid*1e9)
}

// AttrTimeout returns how long the attributes may be cached.
func (o *EntryOut) AttrTimeout() time.Duration {
	return time.Duration(uint64(o.AttrValidNsec) + o.AttrValid*1e9)
}

// StatfsOut is the reply to STATFS, struct fuse_statfs_out, whose one
// member, struct fuse_kstatfs, is flattened here as go-fuse does. The
// fields are those of statfs(2).
type StatfsOut struct {
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	Bsize   uint32
	NameLen uint32
	Frsize  uint32
	Padding uint32
	Spare   [6]uint32
}

// SetAttrIn is what SETATTR changes, struct fuse_setattr_in: Valid says
// which of the other fields are set (the Fattr* bits).
type SetAttrIn struct {
	Valid     uint32
	Padding   uint32
	Fh        uint64 // with FattrFh
	Size      uint64
	LockOwner uint64 // with FattrLockowner
	Atime     uint64
	Mtime     uint64
	Ctime     uint64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Mode      uint32
	Unused4   uint32
	Owner
	Unused5 uint32
}

// SetAttrIn.Valid bits, the kernel's FATTR_*.
const (
	FattrMode        = 1 << 0  // FATTR_MODE
	FattrUid         = 1 << 1  // FATTR_UID
	FattrGid         = 1 << 2  // FATTR_GID
	FattrSize        = 1 << 3  // FATTR_SIZE
	FattrAtime       = 1 << 4  // FATTR_ATIME
	FattrMtime       = 1 << 5  // FATTR_MTIME
	FattrFh          = 1 << 6  // FATTR_FH
	FattrAtimeNow    = 1 << 7  // FATTR_ATIME_NOW
	FattrMtimeNow    = 1 << 8  // FATTR_MTIME_NOW
	FattrLockowner   = 1 << 9  // FATTR_LOCKOWNER
	FattrCtime       = 1 << 10 // FATTR_CTIME
	FattrKillSuidgid = 1 << 11 // FATTR_KILL_SUIDGID
)

// FileLock is an advisory lock, struct fuse_file_lock: the byte range
// Start to End (inclusive; OffsetMax for to the end), Typ (F_RDLCK,
// F_WRLCK, F_UNLCK) and the holder's Pid.
type FileLock struct {
	Start uint64
	End   uint64
	Typ   uint32
	Pid   uint32
}

// LkFlock, in NodeAdvlock's lkFlags, makes the lock a flock(2) lock of
// the whole file rather than a POSIX record lock: FUSE_LK_FLOCK.
const LkFlock = 1 << 0

// Caller is the process a request is made for: the uid, gid and pid of
// struct fuse_in_header.
type Caller struct {
	Owner
	Pid uint32
}

// InHeader is the header every request starts with, struct
// fuse_in_header.
type InHeader struct {
	Length uint32 // of the whole request
	Opcode uint32
	Unique uint64
	NodeId uint64
	Caller
	TotalExtlen uint16 // request extensions' length, in 8-byte units
	Padding     uint16
}

// OutHeader is the header every reply starts with, struct
// fuse_out_header: Status is 0 or a negated errno (a notification's code
// for an unsolicited frame, whose Unique is 0).
type OutHeader struct {
	Length uint32 // of the whole reply
	Status int32
	Unique uint64
}

// Capabilities of INIT that perfuse offers, the kernel's FUSE_* init
// flags: Negotiated returns those the daemon took.
const (
	CapAsyncRead      = 1 << 0  // FUSE_ASYNC_READ
	CapPosixLocks     = 1 << 1  // FUSE_POSIX_LOCKS: NodeAdvlock's record locks
	CapAtomicOTrunc   = 1 << 3  // FUSE_ATOMIC_O_TRUNC: OPEN does O_TRUNC
	CapBigWrites      = 1 << 5  // FUSE_BIG_WRITES
	CapDontMask       = 1 << 6  // FUSE_DONT_MASK: the daemon applies the umask
	CapFlockLocks     = 1 << 10 // FUSE_FLOCK_LOCKS: NodeAdvlock with LkFlock
	CapReaddirplus    = 1 << 13 // FUSE_DO_READDIRPLUS
	CapParallelDirops = 1 << 18 // FUSE_PARALLEL_DIROPS
	CapMaxPages       = 1 << 22 // FUSE_MAX_PAGES
)
