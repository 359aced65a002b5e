// Package kernel is perfuse's kernel binding on Linux: a go-fuse
// RawFileSystem that answers the kernel's FUSE requests by calling the
// operation table of a *perfuse.Usermount, and Mount, which mounts a
// session past INIT with it.
//
// On NetBSD, perfused sits between puffs and the FUSE daemon; on Linux the
// kernel speaks FUSE itself, go-fuse plays libpuffs' part, and this package
// is the glue. Nodeids pass through 1:1 (the kernel sees the daemon's
// nodeids, so the kernel's FORGET counts are the daemon's lookup counts);
// file handles do not, because a daemon may hand out the same fh for
// several opens: the binding numbers the kernel's handles itself and keeps
// the *perfuse.Handle of each, released exactly once.
package kernel

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/ratelog"
)

// fopenPassthrough is FOPEN_PASSTHROUGH: a daemon's backing id means
// nothing to our kernel connection, so the flag is never passed on.
const fopenPassthrough = 1 << 7

// FS is the RawFileSystem. Operations it does not map yet fall through to
// go-fuse's default (ENOSYS).
type FS struct {
	fuse.RawFileSystem // default answers for what is not mapped
	u                  *perfuse.Usermount
	log                *slog.Logger

	srvMu sync.Mutex
	srv   *fuse.Server // set by Init (go-fuse calls it after the kernel's INIT)

	hmu     sync.Mutex
	handles map[uint64]*perfuse.Handle // kernel fh -> open
	nextFh  uint64

	retrieves        chan struct{} // a slot per NOTIFY_RETRIEVE in flight
	retrievesDropped atomic.Int64
	warn             *ratelog.Logger
}

// newFS returns the binding for u. Daemon notifications are relayed to the
// kernel once the server has started (newFS registers the handler).
func newFS(u *perfuse.Usermount, log *slog.Logger) *FS {
	if log == nil {
		log = slog.Default()
	}
	k := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		u:             u,
		log:           log,
		handles:       make(map[uint64]*perfuse.Handle),
		retrieves:     make(chan struct{}, retrievesInFlight),
		warn:          ratelog.New(log, time.Second),
	}
	u.SetNotifyHandler(k.notify)
	return k
}

func (k *FS) String() string { return "perfuse" }

// Init keeps the server for notifications.
func (k *FS) Init(srv *fuse.Server) {
	k.srvMu.Lock()
	k.srv = srv
	k.srvMu.Unlock()
}

func (k *FS) server() *fuse.Server {
	k.srvMu.Lock()
	defer k.srvMu.Unlock()
	return k.srv
}

// OpenHandles returns the number of kernel opens not yet released.
func (k *FS) OpenHandles() int {
	k.hmu.Lock()
	defer k.hmu.Unlock()
	return len(k.handles)
}

// request returns the context of a kernel request: cancelled when the
// kernel interrupts it, which the op table passes on as FUSE_INTERRUPT
// while it goes on waiting for the daemon, as the kernel does
// (perfuse.KernelRequest), and carrying the caller.
func request(cancel <-chan struct{}, h *fuse.InHeader) (context.Context, *perfuse.Cred) {
	return perfuse.KernelRequest(&fuse.Context{Caller: h.Caller, Cancel: cancel}),
		&perfuse.Cred{Uid: h.Uid, Gid: h.Gid, Pid: h.Pid}
}

// status turns an op-table error into the kernel's answer.
func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return fuse.Status(e)
	}
	if errors.Is(err, context.Canceled) {
		return fuse.EINTR
	}
	return fuse.EIO
}

// node returns the node the kernel means by nodeid. The kernel only uses
// nodeids it has been given and not forgotten, so an unknown one is stale.
func (k *FS) node(id uint64) (*perfuse.Node, fuse.Status) {
	if id == perfuse.RootID {
		return k.u.Root(), fuse.OK
	}
	if n := k.u.NodeByID(id); n != nil {
		return n, fuse.OK
	}
	return nil, fuse.Status(syscall.ESTALE)
}

func (k *FS) addHandle(h *perfuse.Handle) uint64 {
	k.hmu.Lock()
	defer k.hmu.Unlock()
	k.nextFh++
	k.handles[k.nextFh] = h
	return k.nextFh
}

func (k *FS) handle(fh uint64) (*perfuse.Handle, fuse.Status) {
	k.hmu.Lock()
	defer k.hmu.Unlock()
	if h := k.handles[fh]; h != nil {
		return h, fuse.OK
	}
	return nil, fuse.EBADF
}

func (k *FS) takeHandle(fh uint64) *perfuse.Handle {
	k.hmu.Lock()
	defer k.hmu.Unlock()
	h := k.handles[fh]
	delete(k.handles, fh)
	return h
}

func openOut(out *fuse.OpenOut, fh uint64, h *perfuse.Handle) {
	out.Fh = fh
	out.OpenFlags = h.OpenFlags() &^ fopenPassthrough
	out.BackingID = 0
}

// Lookup: LOOKUP, the entry (timeouts included) as the daemon sent it.
func (k *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := k.node(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, h)
	e, err := k.u.NodeLookup(ctx, cred, dir, name)
	var neg *perfuse.NegativeEntry
	if errors.As(err, &neg) {
		// Nodeid 0 with its timeout: the kernel caches the absence.
		*out = *entryOut(&neg.EntryOut)
		return fuse.OK
	}
	if err != nil {
		return status(err)
	}
	*out = *entryOut(&e.EntryOut)
	return fuse.OK
}

// Forget returns the kernel's lookups to the daemon with its exact count.
// BATCH_FORGET arrives here one node at a time.
func (k *FS) Forget(nodeid, nlookup uint64) {
	n := k.u.NodeByID(nodeid)
	if n == nil || nodeid == perfuse.RootID {
		return
	}
	if err := k.u.NodeReclaim(context.Background(), n, nlookup); err != nil {
		k.log.Debug("perfuse: forget", "nodeid", nodeid, "nlookup", nlookup, "err", err)
	}
}

func (k *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	var h *perfuse.Handle
	if in.Flags()&fuse.FUSE_GETATTR_FH != 0 {
		h, _ = k.handle(in.Fh())
	}
	ctx, cred := request(cancel, &in.InHeader)
	a, err := k.u.NodeGetattr(ctx, cred, n, h)
	if err != nil {
		return status(err)
	}
	*out = *attrOut(a)
	return fuse.OK
}

func (k *FS) open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	h, err := k.u.NodeOpen(ctx, cred, n, int(in.Flags))
	if err != nil {
		return status(err)
	}
	openOut(out, k.addHandle(h), h)
	return fuse.OK
}

func (k *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return k.open(cancel, in, out)
}

func (k *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return k.open(cancel, in, out)
}

// release sends the one RELEASE of an open. The kernel never interrupts it.
func (k *FS) release(in *fuse.ReleaseIn) {
	h := k.takeHandle(in.Fh)
	if h == nil {
		return
	}
	if err := k.u.NodeRelease(context.Background(), h); err != nil {
		k.log.Debug("perfuse: release", "fh", in.Fh, "err", err)
	}
}

func (k *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) { k.release(in) }
func (k *FS) ReleaseDir(in *fuse.ReleaseIn)                      { k.release(in) }

func (k *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return nil, st
	}
	size := min(int(in.Size), len(buf))
	ctx, cred := request(cancel, &in.InHeader)
	n, err := k.u.NodeRead(ctx, cred, h, buf[:size], int64(in.Offset))
	if err != nil && n == 0 {
		return nil, status(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (k *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	n := 0
	err := k.u.NodeReaddir(ctx, cred, h, in.Offset, func(d perfuse.Dirent) bool {
		if !out.AddDirEntry(fuse.DirEntry{Name: d.Name, Ino: d.Ino, Off: d.Off, Mode: d.Type << 12}) {
			return false
		}
		n++
		return true
	})
	return dirStatus(n, err)
}

// dirStatus: entries already in the reply go to the kernel even when a
// later request failed (a short read, as the kernel treats it); an error
// would drop them, and with READDIRPLUS the lookups they carry.
func dirStatus(entries int, err error) fuse.Status {
	if entries > 0 {
		return fuse.OK
	}
	return status(err)
}

// ReadDirPlus relays READDIRPLUS. The entry that does not fit the
// kernel's buffer is refused, and the op table gives its lookup (and
// those of the rest of that reply) back to the daemon: the kernel counts
// exactly the entries it receives.
func (k *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	n := 0
	err := k.u.NodeReaddirplus(ctx, cred, h, in.Offset, func(d perfuse.DirentPlus) bool {
		e := out.AddDirLookupEntry(fuse.DirEntry{Name: d.Name, Ino: d.Ino, Off: d.Off, Mode: d.Type << 12})
		if e == nil {
			return false
		}
		*e = *entryOut(&d.Entry)
		n++
		return true
	})
	return dirStatus(n, err)
}

func (k *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	ctx, cred := request(cancel, h)
	st, err := k.u.FsStatvfs(ctx, cred)
	if err != nil {
		return status(err)
	}
	*out = statfsOut(st)
	return fuse.OK
}

// entryReply fills out from an op that returned an entry.
func entryReply(e *perfuse.Entry, err error, out *fuse.EntryOut) fuse.Status {
	if err != nil {
		return status(err)
	}
	*out = *entryOut(&e.EntryOut)
	return fuse.OK
}

func (k *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	dir, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	e, h, err := k.u.NodeCreate(ctx, cred, dir, name, int(in.Flags), in.Mode, in.Umask)
	if err != nil {
		return status(err)
	}
	out.EntryOut = *entryOut(&e.EntryOut)
	openOut(&out.OpenOut, k.addHandle(h), h)
	return fuse.OK
}

func (k *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	e, err := k.u.NodeMknod(ctx, cred, dir, name, in.Mode, in.Rdev, in.Umask)
	return entryReply(e, err, out)
}

func (k *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	e, err := k.u.NodeMkdir(ctx, cred, dir, name, in.Mode, in.Umask)
	return entryReply(e, err, out)
}

func (k *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := k.node(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, h)
	e, err := k.u.NodeSymlink(ctx, cred, dir, name, target)
	return entryReply(e, err, out)
}

func (k *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	dir, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	n, st := k.node(in.Oldnodeid)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	e, err := k.u.NodeLink(ctx, cred, n, dir, name)
	return entryReply(e, err, out)
}

func (k *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	dir, st := k.node(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, h)
	return status(k.u.NodeRemove(ctx, cred, dir, name))
}

func (k *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	dir, st := k.node(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, h)
	return status(k.u.NodeRmdir(ctx, cred, dir, name))
}

func (k *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	olddir, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	newdir, st := k.node(in.Newdir)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	return status(k.u.NodeRename(ctx, cred, olddir, oldName, newdir, newName, in.Flags))
}

func (k *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n, st := k.node(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	ctx, cred := request(cancel, h)
	s, err := k.u.NodeReadlink(ctx, cred, n)
	if err != nil {
		return nil, status(err)
	}
	return []byte(s), fuse.OK
}

func (k *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	var h *perfuse.Handle
	req := setAttrIn(in)
	if req.Valid&perfuse.FattrFh != 0 {
		h, _ = k.handle(in.Fh)
		if h == nil {
			req.Valid &^= perfuse.FattrFh
			req.Fh = 0
		} else {
			req.Fh = h.Fh()
		}
	}
	ctx, cred := request(cancel, &in.InHeader)
	a, err := k.u.NodeSetattr(ctx, cred, n, h, &req)
	if err != nil {
		return status(err)
	}
	*out = *attrOut(a)
	return fuse.OK
}

func (k *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	n, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	return status(k.u.NodeAccess(ctx, cred, n, in.Mask))
}

func (k *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return 0, st
	}
	ctx, cred := request(cancel, &in.InHeader)
	n, err := k.u.NodeWrite(ctx, cred, h, data, int64(in.Offset), in.WriteFlags, in.LockOwner)
	if err != nil && n == 0 {
		return 0, status(err)
	}
	return uint32(n), fuse.OK
}

func (k *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	return status(k.u.NodeFlush(ctx, cred, h, in.LockOwner))
}

func (k *FS) fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	return status(k.u.NodeFsync(ctx, cred, h, in.FsyncFlags&1 != 0))
}

func (k *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return k.fsync(cancel, in) }
func (k *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return k.fsync(cancel, in)
}

func (k *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	return status(k.u.NodeFallocate(ctx, cred, h, in.Mode, in.Offset, in.Length))
}

func (k *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	off, err := k.u.NodeLseek(ctx, cred, h, int64(in.Offset), in.Whence)
	if err != nil {
		return status(err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

func (k *FS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	hin, st := k.handle(in.FhIn)
	if !st.Ok() {
		return 0, st
	}
	hout, st := k.handle(in.FhOut)
	if !st.Ok() {
		return 0, st
	}
	ctx, cred := request(cancel, &in.InHeader)
	n, err := k.u.NodeCopyFileRange(ctx, cred, hin, in.OffIn, hout, in.OffOut, in.Len, in.Flags)
	if err != nil {
		return 0, status(err)
	}
	return uint32(n), fuse.OK
}

func (k *FS) lock(cancel <-chan struct{}, op perfuse.Opcode, in *fuse.LkIn) (fuse.FileLock, fuse.Status) {
	h, st := k.handle(in.Fh)
	if !st.Ok() {
		return fuse.FileLock{}, st
	}
	ctx, cred := request(cancel, &in.InHeader)
	lk, err := k.u.NodeAdvlock(ctx, cred, h, op, in.Owner, fileLock(in.Lk), in.LkFlags)
	return wireLock(lk), status(err)
}

func (k *FS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	lk, st := k.lock(cancel, perfuse.OpGetlk, in)
	if st.Ok() {
		out.Lk = lk
	}
	return st
}

func (k *FS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	_, st := k.lock(cancel, perfuse.OpSetlk, in)
	return st
}

func (k *FS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	_, st := k.lock(cancel, perfuse.OpSetlkw, in)
	return st
}

// xattrReply answers GETXATTR/LISTXATTR: with a zero size the kernel asks
// for the size only; otherwise the value is copied into dest.
func xattrReply(b []byte, need uint32, err error, dest []byte) (uint32, fuse.Status) {
	if err != nil {
		if errors.Is(err, syscall.ERANGE) {
			return need, fuse.ERANGE
		}
		return 0, status(err)
	}
	if len(dest) == 0 {
		if b != nil && need == 0 {
			need = uint32(len(b))
		}
		return need, fuse.OK
	}
	if len(b) > len(dest) {
		return uint32(len(b)), fuse.ERANGE
	}
	return uint32(copy(dest, b)), fuse.OK
}

func (k *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	n, st := k.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	ctx, cred := request(cancel, h)
	b, need, err := k.u.NodeGetextattr(ctx, cred, n, attr, uint32(len(dest)))
	return xattrReply(b, need, err, dest)
}

func (k *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	n, st := k.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	ctx, cred := request(cancel, h)
	b, need, err := k.u.NodeListextattr(ctx, cred, n, uint32(len(dest)))
	return xattrReply(b, need, err, dest)
}

func (k *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	n, st := k.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, &in.InHeader)
	return status(k.u.NodeSetextattr(ctx, cred, n, attr, data, in.Flags))
}

func (k *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	n, st := k.node(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx, cred := request(cancel, h)
	return status(k.u.NodeDeleteextattr(ctx, cred, n, attr))
}
