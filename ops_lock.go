package perfuse

import (
	"context"
	"fmt"
	"math"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Advisory locks: POSIX record locks (fcntl) and, with LkFlock,
// whole-file flock(2) locks.

// OffsetMax is the end of a lock that runs to the end of file.
const OffsetMax = math.MaxInt64

// LockRange converts a POSIX lock's l_start and l_len (l_whence already
// applied) to FUSE's inclusive [start, end]: l_len 0 runs to the end of
// file, a negative l_len covers the bytes before l_start. (Upstream sent
// start+len, one byte too many, and len 0 as an empty range.)
func LockRange(start, length int64) (uint64, uint64, error) {
	if length < 0 {
		if length == math.MinInt64 {
			return 0, 0, syscall.EINVAL
		}
		start, length = start+length, -length
	}
	switch {
	case start < 0:
		return 0, 0, syscall.EINVAL
	case length == 0:
		return uint64(start), OffsetMax, nil
	case start > math.MaxInt64-length+1:
		return 0, 0, syscall.EOVERFLOW
	}
	return uint64(start), uint64(start + length - 1), nil
}

// NodeAdvlock tests (OpGetlk), takes or drops (OpSetlk, or OpSetlkw to
// wait) an advisory lock of owner on the open file h. lk holds the
// inclusive range (see LockRange), the type (F_RDLCK, F_WRLCK, F_UNLCK)
// and the pid. With lkFlags LkFlock it is a flock(2) lock of the
// whole file: RELEASE of h then drops it. GETLK returns the conflicting
// lock, or lk with type F_UNLCK when there is none. A daemon that did not
// accept POSIX_LOCKS (FLOCK_LOCKS for flock) gets nothing: ENOSYS, and the
// caller keeps its locks locally, as the kernel then does.
func (u *Usermount) NodeAdvlock(ctx context.Context, cred *Cred, h *Handle, op Opcode, owner uint64, lk FileLock, lkFlags uint32) (FileLock, error) {
	if err := usable(h); err != nil {
		return FileLock{}, err
	}
	flock := lkFlags&LkFlock != 0
	switch {
	case op != OpGetlk && op != OpSetlk && op != OpSetlkw, op == OpGetlk && flock:
		return FileLock{}, fmt.Errorf("perfuse: advlock %s: %w", op, syscall.EINVAL)
	case lk.Typ != syscall.F_RDLCK && lk.Typ != syscall.F_WRLCK && lk.Typ != syscall.F_UNLCK:
		return FileLock{}, fmt.Errorf("perfuse: lock type %d: %w", lk.Typ, syscall.EINVAL)
	case lk.Start > lk.End || lk.End > OffsetMax:
		return FileLock{}, fmt.Errorf("perfuse: lock range %d-%d: %w", lk.Start, lk.End, syscall.EINVAL)
	}
	want := uint64(CapPosixLocks)
	if flock {
		want = CapFlockLocks
	}
	if u.limits().flags&want == 0 {
		return FileLock{}, fmt.Errorf("perfuse: daemon does not do these locks: %w", syscall.ENOSYS)
	}
	in := fuse.LkIn{Fh: h.fh, Owner: owner, Lk: fuse.FileLock(lk), LkFlags: lkFlags}
	r := request{op: op, node: h.node, cred: cred, in: fixed(op, &in)}
	if op != OpGetlk {
		if err := u.do(ctx, r, nil); err != nil {
			return FileLock{}, err
		}
		if flock {
			h.flockOwner.Store(owner)
		}
		return lk, nil
	}
	out, err := roundTrip[fuse.LkOut](ctx, u, r)
	if err != nil {
		return FileLock{}, err
	}
	if flock {
		h.flockOwner.Store(owner)
	}
	got := FileLock(out.Lk)
	if got.Typ != syscall.F_UNLCK && (got.Start > got.End || got.End > OffsetMax || got.Typ != syscall.F_RDLCK && got.Typ != syscall.F_WRLCK) {
		return FileLock{}, errProto(op, "lock %+v", got)
	}
	return got, nil
}
