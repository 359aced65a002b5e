package perfuse

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Operations on open files: writes and what surrounds them.

// usable refuses a nil or released handle.
func usable(h *Handle) error {
	if h == nil || h.released.Load() {
		return fmt.Errorf("perfuse: handle not open: %w", syscall.EBADF)
	}
	return nil
}

// HandleFor returns the open of n with the daemon's file handle fh (dir:
// an OPENDIR), so a relay that knows opens by their fh need not keep the
// *Handle. An open the session does not know is rebuilt with flags;
// releasing it sends RELEASE, but Unmount does not release it.
func (u *Usermount) HandleFor(n *Node, fh uint64, dir bool, flags uint32) *Handle {
	u.handlesMu.Lock()
	defer u.handlesMu.Unlock()
	if hs := u.handles[handleKey{n.id, fh, dir}]; len(hs) > 0 {
		return hs[0]
	}
	return &Handle{node: n, fh: fh, dir: dir, flags: flags}
}

// spliceSafeRead is the most one READ asks of the daemon. A daemon that
// splices its reply (go-fuse at its defaults, fuse-overlayfs) sends it into
// a SEQPACKET socket in sendmsg calls of 16 pipe buffers each, one record
// per call: a page per buffer, and the 16-byte header in one or two more
// (two when it straddles a page). 13 pages of payload at any offset span at
// most 14 pages, so such a reply is still one record, which the transport
// requires of every reply: pieces of a split reply cannot be told from
// file data.
const spliceSafeRead = 13 * pageSize

// readPiecesInFlight bounds the READs one NodeRead has in flight at once.
const readPiecesInFlight = 16

// NodeRead reads into p from offset off of the open file h (FUSE_READ),
// and returns the bytes read; fewer than len(p) means end of file. A read
// larger than one READ may ask for (the negotiated read size, and
// spliceSafeRead) goes as several READs in flight together, as the
// kernel's readahead does; the result ends at the first short one.
func (u *Usermount) NodeRead(ctx context.Context, cred *Cred, h *Handle, p []byte, off int64) (int, error) {
	if err := usable(h); err != nil {
		return 0, err
	}
	if h.dir {
		return 0, syscall.EISDIR
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	piece := min(u.limits().maxRead, spliceSafeRead)
	if len(p) <= piece {
		return u.readChunk(ctx, cred, h, p, off)
	}
	pieces := (len(p) + piece - 1) / piece
	if u.diagOn(DiagResize) {
		u.debug(DiagResize, "perfuse: read split", "nodeid", h.node.id, "bytes", len(p), "reads", pieces, "each", piece)
	}
	got := make([]int, pieces)
	errs := make([]error, pieces)
	slots := make(chan struct{}, readPiecesInFlight)
	var wg sync.WaitGroup
	read := func(i int) {
		start := i * piece
		got[i], errs[i] = u.readChunk(ctx, cred, h, p[start:min(len(p), start+piece)], off+int64(start))
	}
	// The last piece is read by the caller's own goroutine, after the
	// others are on their way.
	for i := range pieces - 1 {
		slots <- struct{}{}
		if ended(ctx) {
			errs[i] = fmt.Errorf("perfuse: READ not sent: %w", ctxErrno(ctx))
			<-slots
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			read(i)
		})
	}
	read(pieces - 1)
	wg.Wait()
	done := 0
	for i := range pieces {
		done += got[i]
		if errs[i] != nil {
			return done, errs[i]
		}
		if got[i] < min(piece, len(p)-i*piece) {
			break
		}
	}
	return done, nil
}

func (u *Usermount) readChunk(ctx context.Context, cred *Cred, h *Handle, p []byte, off int64) (int, error) {
	in := fuse.ReadIn{Fh: h.fh, Offset: uint64(off), Size: uint32(len(p)), Flags: h.flags}
	n := 0
	err := u.do(ctx, request{op: OpRead, node: h.node, cred: cred, in: fixed(OpRead, &in), dst: p}, func(data []byte) error {
		switch {
		case len(data) > len(p):
			return errProto(OpRead, "%d bytes for a read of %d", len(data), len(p))
		case len(data) > 0 && &data[0] == &p[0]:
			n = len(data) // received in place
		default:
			n = copy(p, data)
		}
		return nil
	})
	return n, err
}

// NodeWrite writes p at offset off of the open file h (FUSE_WRITE), in
// requests of at most the negotiated max_write, and returns the bytes
// written; a short answer ends the write there. On a handle opened with
// O_APPEND the data goes to the end of file (size from GETATTR), unless a
// kernel relay computes offsets itself (SetKernelWrites). A reply
// of 0 bytes for a non-empty request, or of more than was sent, is EIO
// (upstream looped forever). writeFlags (WRITE_* bits) and lockOwner go
// to the daemon; a lock owner sets WRITE_LOCKOWNER. Writes on one node
// are serialised, as the kernel's inode lock does.
func (u *Usermount) NodeWrite(ctx context.Context, cred *Cred, h *Handle, p []byte, off int64, writeFlags uint32, lockOwner uint64) (int, error) {
	if err := usable(h); err != nil {
		return 0, err
	}
	if h.dir {
		return 0, syscall.EISDIR
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := h.node
	if err := u.lockWrites(ctx, n); err != nil {
		return 0, err
	}
	defer n.unlockWrites()
	if h.flags&syscall.O_APPEND != 0 && !u.kernelWrites.Load() {
		a, err := u.NodeGetattr(ctx, cred, n, h)
		if err != nil {
			return 0, err
		}
		off = int64(a.Size)
	}
	if uint64(off)+uint64(len(p)) > math.MaxInt64 {
		return 0, syscall.EFBIG
	}
	if lockOwner != 0 {
		writeFlags |= fuse.WRITE_LOCKOWNER
	}
	if len(p) > u.limits().maxWrite && u.diagOn(DiagResize) {
		u.debug(DiagResize, "perfuse: write split", "nodeid", n.id, "bytes", len(p), "each", u.limits().maxWrite)
	}
	done := 0
	var err error
	for done < len(p) {
		if ended(ctx) {
			err = fmt.Errorf("perfuse: WRITE not sent: %w", ctxErrno(ctx))
			break
		}
		chunk := p[done:min(len(p), done+u.limits().maxWrite)]
		var got int
		got, err = u.writeChunk(ctx, cred, h, chunk, off+int64(done), writeFlags, lockOwner)
		done += got
		if err != nil || got < len(chunk) {
			break
		}
	}
	if done > 0 {
		n.grew(uint64(off) + uint64(done))
	}
	return done, err
}

func (u *Usermount) writeChunk(ctx context.Context, cred *Cred, h *Handle, p []byte, off int64, writeFlags uint32, lockOwner uint64) (int, error) {
	in := fuse.WriteIn{Fh: h.fh, Offset: uint64(off), Size: uint32(len(p)), WriteFlags: writeFlags, LockOwner: lockOwner, Flags: h.flags}
	out, err := roundTrip[fuse.WriteOut](ctx, u, request{op: OpWrite, node: h.node, cred: cred, in: fixed(OpWrite, &in), tail: p})
	if err != nil {
		return 0, err
	}
	if out.Size == 0 || int(out.Size) > len(p) {
		return 0, fmt.Errorf("perfuse: WRITE of %d bytes answered %d: %w", len(p), out.Size, syscall.EIO)
	}
	return int(out.Size), nil
}

// NodeFlush tells the daemon that a file descriptor of h is being closed
// (FUSE_FLUSH), with the closing lock owner so it can drop that owner's
// POSIX locks. Directories are not flushed. ENOSYS is success, and
// FLUSH is not sent again.
func (u *Usermount) NodeFlush(ctx context.Context, cred *Cred, h *Handle, lockOwner uint64) error {
	if err := usable(h); err != nil {
		return err
	}
	if h.dir || u.unsupported[OpFlush].Load() {
		return nil
	}
	in := fuse.FlushIn{Fh: h.fh, LockOwner: lockOwner}
	err := u.do(ctx, request{op: OpFlush, node: h.node, cred: cred, in: fixed(OpFlush, &in)}, nil)
	if isENOSYS(err) {
		u.noLonger(OpFlush)
		return nil
	}
	return err
}

// NodeClose is close(2) for a caller without a kernel: FLUSH with the
// lock owner, then RELEASE. The handle is released even when FLUSH fails;
// the first error is returned.
func (u *Usermount) NodeClose(ctx context.Context, cred *Cred, h *Handle, lockOwner uint64) error {
	if err := usable(h); err != nil {
		return err
	}
	ferr := u.NodeFlush(ctx, cred, h, lockOwner)
	rerr := u.NodeRelease(ctx, h)
	if ferr != nil {
		return ferr
	}
	return rerr
}

// NodeFsync asks the daemon to write h's data (and metadata unless
// datasync) to stable storage: FUSE_FSYNC, or FUSE_FSYNCDIR for a
// directory. ENOSYS is success, and the opcode is not sent again.
func (u *Usermount) NodeFsync(ctx context.Context, cred *Cred, h *Handle, datasync bool) error {
	if err := usable(h); err != nil {
		return err
	}
	op := OpFsync
	if h.dir {
		op = OpFsyncdir
	}
	if u.unsupported[op].Load() {
		return nil
	}
	in := fuse.FsyncIn{Fh: h.fh}
	if datasync {
		in.FsyncFlags = 1 // FUSE_FSYNC_FDATASYNC
	}
	err := u.do(ctx, request{op: op, node: h.node, cred: cred, in: fixed(op, &in)}, nil)
	if u.diagOn(DiagSync) {
		u.debug(DiagSync, "perfuse: sync", "opcode", op, "nodeid", h.node.id, "datasync", datasync, "err", err)
	}
	if isENOSYS(err) {
		u.noLonger(op)
		return nil
	}
	return err
}

// fallocKeepSize is FALLOC_FL_KEEP_SIZE.
const fallocKeepSize = 1

// NodeFallocate allocates (or with mode bits, punches or zeroes) length
// bytes at off of h (FUSE_FALLOCATE). A daemon without it answers ENOSYS:
// that is EOPNOTSUPP, now and for the rest of the session.
func (u *Usermount) NodeFallocate(ctx context.Context, cred *Cred, h *Handle, mode uint32, off, length uint64) error {
	if err := usable(h); err != nil {
		return err
	}
	switch {
	case h.dir:
		return syscall.EISDIR
	case length == 0 || off > math.MaxInt64 || length > math.MaxInt64:
		return syscall.EINVAL
	case off+length > math.MaxInt64:
		return syscall.EFBIG
	case u.unsupported[OpFallocate].Load():
		return fmt.Errorf("perfuse: daemon lacks FALLOCATE: %w", syscall.EOPNOTSUPP)
	}
	if err := u.lockWrites(ctx, h.node); err != nil {
		return err
	}
	defer h.node.unlockWrites()
	in := fuse.FallocateIn{Fh: h.fh, Offset: off, Length: length, Mode: mode}
	err := u.do(ctx, request{op: OpFallocate, node: h.node, cred: cred, in: fixed(OpFallocate, &in)}, nil)
	if isENOSYS(err) {
		u.noLonger(OpFallocate)
		return fmt.Errorf("perfuse: daemon lacks FALLOCATE: %w", syscall.EOPNOTSUPP)
	}
	if err == nil && mode&fallocKeepSize == 0 {
		h.node.grew(off + length)
	}
	return err
}

// Whence values of NodeLseek (SEEK_DATA and SEEK_HOLE as Linux numbers
// them).
const (
	SeekSet  = 0
	SeekCur  = 1
	SeekEnd  = 2
	SeekData = 3
	SeekHole = 4
)

// NodeLseek returns the offset that lseek(2) on h would give. SEEK_DATA
// and SEEK_HOLE ask the daemon (FUSE_LSEEK); a daemon without it answers
// as the kernel does for it (all data up to the size, ENXIO past it).
// SEEK_SET and SEEK_END are computed here, as the kernel does. A Handle
// has no file position, so SEEK_CUR is EINVAL.
func (u *Usermount) NodeLseek(ctx context.Context, cred *Cred, h *Handle, off int64, whence uint32) (int64, error) {
	if err := usable(h); err != nil {
		return 0, err
	}
	switch whence {
	case SeekSet:
		if off < 0 {
			return 0, syscall.EINVAL
		}
		return off, nil
	case SeekEnd:
		a, err := u.NodeGetattr(ctx, cred, h.node, h)
		if err != nil {
			return 0, err
		}
		if r := int64(a.Size) + off; r >= 0 {
			return r, nil
		}
		return 0, syscall.EINVAL
	case SeekData, SeekHole:
	default:
		return 0, syscall.EINVAL
	}
	if off < 0 {
		return 0, syscall.ENXIO
	}
	if !u.unsupported[OpLseek].Load() {
		in := fuse.LseekIn{Fh: h.fh, Offset: uint64(off), Whence: whence}
		out, err := roundTrip[fuse.LseekOut](ctx, u, request{op: OpLseek, node: h.node, cred: cred, in: fixed(OpLseek, &in)})
		if err == nil {
			if out.Offset > math.MaxInt64 {
				return 0, fmt.Errorf("perfuse: LSEEK to %d: %w", out.Offset, syscall.EIO)
			}
			return int64(out.Offset), nil
		}
		if !isENOSYS(err) {
			return 0, err
		}
		u.noLonger(OpLseek)
	}
	a, err := u.NodeGetattr(ctx, cred, h.node, h)
	if err != nil {
		return 0, err
	}
	if uint64(off) >= a.Size {
		return 0, syscall.ENXIO
	}
	if whence == SeekData {
		return off, nil
	}
	return int64(a.Size), nil
}

// copyMax is the most one COPY_FILE_RANGE asks for: its reply counts in
// 32 bits, and the kernel keeps it page aligned.
const copyMax = math.MaxUint32 &^ (pageSize - 1)

// NodeCopyFileRange copies up to length bytes from offIn of in to offOut
// of out inside the daemon (FUSE_COPY_FILE_RANGE) and returns how many it
// copied. A daemon without it makes it EOPNOTSUPP from then on: copy by
// reading and writing.
func (u *Usermount) NodeCopyFileRange(ctx context.Context, cred *Cred, in *Handle, offIn uint64, out *Handle, offOut, length, flags uint64) (uint64, error) {
	if err := usable(in); err != nil {
		return 0, err
	}
	if err := usable(out); err != nil {
		return 0, err
	}
	switch {
	case in.dir || out.dir:
		return 0, syscall.EISDIR
	case offIn > math.MaxInt64 || offOut > math.MaxInt64:
		return 0, syscall.EINVAL
	case u.unsupported[OpCopyFileRange].Load():
		return 0, fmt.Errorf("perfuse: daemon lacks COPY_FILE_RANGE: %w", syscall.EOPNOTSUPP)
	}
	length = min(length, copyMax)
	if length == 0 {
		return 0, nil
	}
	req := fuse.CopyFileRangeIn{FhIn: in.fh, OffIn: offIn, NodeIdOut: out.node.id, FhOut: out.fh, OffOut: offOut, Len: length, Flags: flags}
	res, err := roundTrip[fuse.WriteOut](ctx, u, request{op: OpCopyFileRange, node: in.node, cred: cred, in: fixed(OpCopyFileRange, &req)})
	if isENOSYS(err) {
		u.noLonger(OpCopyFileRange)
		return 0, fmt.Errorf("perfuse: daemon lacks COPY_FILE_RANGE: %w", syscall.EOPNOTSUPP)
	}
	if err != nil {
		return 0, err
	}
	if uint64(res.Size) > length {
		return 0, fmt.Errorf("perfuse: COPY_FILE_RANGE of %d answered %d: %w", length, res.Size, syscall.EIO)
	}
	out.node.grew(offOut + uint64(res.Size))
	return uint64(res.Size), nil
}

// pollIn is the kernel's fuse_poll_in (7.21): go-fuse keeps its own
// private.
type pollIn struct {
	fuse.InHeader
	Fh     uint64
	Kh     uint64
	Flags  uint32
	Events uint32
}

// Poll bits, as Linux numbers them.
const (
	PollIn     = 0x001
	PollOut    = 0x004
	PollRdNorm = 0x040
	PollWrNorm = 0x100
	// PollScheduleNotify is FUSE_POLL_SCHEDULE_NOTIFY: the daemon is to
	// send a POLL notification with kh when h becomes ready.
	PollScheduleNotify = 1
	// pollDefault is what the kernel assumes of a daemon without POLL.
	pollDefault = PollIn | PollOut | PollRdNorm | PollWrNorm
)

// NodePoll asks which of events h is ready for (FUSE_POLL) and returns
// them. kh and flags (PollScheduleNotify) ask for a POLL notification.
// A daemon without POLL is always ready, as the kernel takes it.
func (u *Usermount) NodePoll(ctx context.Context, cred *Cred, h *Handle, kh uint64, flags, events uint32) (uint32, error) {
	if err := usable(h); err != nil {
		return 0, err
	}
	if u.unsupported[OpPoll].Load() {
		return pollDefault & events, nil
	}
	in := pollIn{Fh: h.fh, Kh: kh, Flags: flags, Events: events}
	var revents uint32
	err := u.do(ctx, request{op: OpPoll, node: h.node, cred: cred, in: fixed(OpPoll, &in)}, func(b []byte) error {
		revents = nativeEndian.Uint32(b) // fuse_poll_out: revents, padding
		return nil
	})
	if isENOSYS(err) {
		u.noLonger(OpPoll)
		return pollDefault & events, nil
	}
	return revents, err
}

// NotifyReply answers the daemon's NOTIFY_RETRIEVE whose notify_unique is
// notifyUnique with data, the cached bytes of n from offset off
// (FUSE_NOTIFY_REPLY, which has no reply). Data beyond max_write is E2BIG.
func (u *Usermount) NotifyReply(ctx context.Context, notifyUnique uint64, n *Node, off uint64, data []byte) error {
	if len(data) > u.limits().maxWrite {
		return fmt.Errorf("perfuse: NOTIFY_REPLY of %d bytes: %w", len(data), syscall.E2BIG)
	}
	in := fuse.NotifyRetrieveIn{Offset: off, Size: uint32(len(data))}
	// The reply takes the notification's unique, as the kernel's does.
	return u.do(ctx, request{op: OpNotifyReply, node: n, in: fixed(OpNotifyReply, &in), tail: data, unique: notifyUnique}, nil)
}

// NodeInactive is the last close of n: every open of n not yet released
// is released (puffs' inactive, where libperfuse released its per-node
// handles). Errors are joined.
func (u *Usermount) NodeInactive(ctx context.Context, n *Node) error {
	var errs []error
	for _, h := range u.openHandles(n) {
		if err := u.NodeRelease(ctx, h); err != nil && !errors.Is(err, syscall.EBADF) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
