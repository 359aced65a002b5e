package perfuse

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The protocol perfuse speaks. Minor 31 is what libfuse 3.14 answers with;
// nothing perfuse sends depends on a later minor.
const (
	ProtocolMajor = 7
	ProtocolMinor = 31
	// MinDaemonMinor is the oldest protocol minor accepted from a daemon.
	MinDaemonMinor = 12
)

// initFlags are the capabilities perfuse really supports. DONT_MASK: the
// daemon applies the umask sent with each create (fuse-overlayfs refuses
// to start without it); without it perfuse applies it. POSIX_LOCKS and
// FLOCK_LOCKS: NodeAdvlock. READDIRPLUS: NodeReaddirplus; not
// READDIRPLUS_AUTO, the kernel's heuristic for choosing between the two,
// which is the caller's choice here. Never SPLICE_* (a socket cannot take
// spliced pages one-for-one), PASSTHROUGH (needs an ioctl on /dev/fuse),
// OVER_IO_URING, or SETXATTR_EXT (the 8-byte setxattr_in is sent).
const initFlags = CapAsyncRead | CapPosixLocks | CapAtomicOTrunc |
	CapBigWrites | CapDontMask | CapMaxPages | CapParallelDirops |
	CapFlockLocks | CapReaddirplus

const (
	pageSize = 4096
	// defaultReadahead is what INIT offers: 32 pages, as libperfuse does.
	defaultReadahead = 32 * pageSize
	// initOutCompat is INIT_OUT's size up to minor 22.
	initOutCompat = 24
	// maxPagesDefault is the kernel's FUSE_DEFAULT_MAX_PAGES_PER_REQ.
	maxPagesDefault = 32
	// writeHeader is what a WRITE frame carries before its data.
	writeHeader = inHeaderSize + int(unsafe.Sizeof(fuse.WriteIn{})) - inHeaderSize
)

func (u *Usermount) init(ctx context.Context) error {
	in := fuse.InitIn{
		Major:        ProtocolMajor,
		Minor:        ProtocolMinor,
		MaxReadAhead: defaultReadahead,
		Flags:        uint32(initFlags),
	}
	var out *fuse.InitOut
	got := 0
	err := u.do(ctx, request{op: OpInit, in: fixed(OpInit, &in)}, func(b []byte) (err error) {
		got = len(b)
		out, err = decodeAtLeast[fuse.InitOut](OpInit, b, 8)
		return err
	})
	if err != nil {
		return fmt.Errorf("perfuse: INIT: %w", err)
	}
	if out.Major != ProtocolMajor {
		return fmt.Errorf("perfuse: INIT: daemon speaks major %d, want %d: %w", out.Major, ProtocolMajor, syscall.EPROTO)
	}
	if out.Minor < MinDaemonMinor {
		return fmt.Errorf("perfuse: INIT: daemon minor %d older than %d: %w", out.Minor, MinDaemonMinor, syscall.EPROTO)
	}
	want := initOutCompat
	if out.Minor > 22 {
		want = int(unsafe.Sizeof(fuse.InitOut{}))
	}
	if got < want && got != initOutCompat {
		return errProto(OpInit, "payload is %d bytes for minor %d", got, out.Minor)
	}
	u.lim.Store(u.negotiate(out))
	u.debug(DiagMisc, "perfuse: INIT done", "minor", out.Minor, "max_write", u.limits().maxWrite, "max_read", u.limits().maxRead)
	return nil
}

// negotiate derives the session's limits from the daemon's INIT reply:
// max_write has a floor of one page and is capped so a WRITE frame fits
// the socket; reads are capped the same way for their replies.
func (u *Usermount) negotiate(out *fuse.InitOut) *limits {
	l := &limits{
		major:        out.Major,
		minor:        out.Minor,
		flags:        uint64(out.Flags) & initFlags,
		maxReadahead: out.MaxReadAhead,
		maxPages:     out.MaxPages,
		timeGran:     out.TimeGran,
	}
	if out.Minor < 23 {
		l.maxPages = 0
	}
	frame := u.maxFrame()
	l.maxWrite = max(int(out.MaxWrite), pageSize)
	l.maxWrite = min(l.maxWrite, frame-writeHeader)
	pages := maxPagesDefault
	if l.flags&CapMaxPages != 0 && l.maxPages > 0 {
		pages = int(l.maxPages)
	}
	l.maxRead = min(pages*pageSize, (frame-outHeaderSize)&^(pageSize-1))
	if l.maxWrite > pageSize {
		l.maxWrite &^= pageSize - 1
	}
	return l
}

// maxFrame is the largest frame the transport carries.
func (u *Usermount) maxFrame() int {
	n := u.conf.bufSize
	if u.cb.MaxFrame > 0 {
		n = u.cb.MaxFrame
	}
	return max(n, 2*pageSize+writeHeader)
}

// MaxReadahead returns the read-ahead the daemon answered INIT with.
func (u *Usermount) MaxReadahead() uint32 { return u.limits().maxReadahead }

// SetKernelWrites tells the session that a kernel computes each write's
// offset, O_APPEND included, so NodeWrite writes where it is told instead
// of asking the daemon for the size first. The kernel relay sets it.
func (u *Usermount) SetKernelWrites(on bool) { u.kernelWrites.Store(on) }

// Negotiated returns what INIT settled: the daemon's protocol minor, its
// flags (those of the Cap* bits perfuse offered), and the payload limits
// for WRITE and READ.
func (u *Usermount) Negotiated() (minor uint32, flags uint64, maxWrite, maxRead int) {
	l := u.limits()
	return l.minor, l.flags, l.maxWrite, l.maxRead
}

// FsStatvfs asks the daemon for filesystem statistics (FUSE_STATFS on the
// root).
func (u *Usermount) FsStatvfs(ctx context.Context, cred *Cred) (*StatfsOut, error) {
	return roundTrip[StatfsOut](ctx, u, request{op: OpStatfs, node: u.root, cred: cred})
}

// FsUnmount ends the session with the daemon as a forced unmount (what
// Unmount does): FsUnmountForce(ctx, true).
func (u *Usermount) FsUnmount(ctx context.Context) error { return u.FsUnmountForce(ctx, true) }

// FsUnmountForce ends the session with the daemon. Without force, opens
// not yet released make it EBUSY, and nothing is sent, as umount(2) says.
// With force they are released first. Then every lookup still held is
// returned (BATCH_FORGET), so the daemon's counts balance, and
// FUSE_DESTROY is sent, after which the daemon exits. A daemon that does
// not implement DESTROY (ENOSYS) or is already gone (ENOTCONN) is not an
// error: the session ends either way.
func (u *Usermount) FsUnmountForce(ctx context.Context, force bool) error {
	open := u.openHandles(nil)
	if len(open) > 0 && !force {
		return fmt.Errorf("perfuse: unmount with %d opens: %w", len(open), syscall.EBUSY)
	}
	for _, h := range open {
		u.debug(DiagFH, "perfuse: released at unmount", "nodeid", h.node.id, "fh", h.fh)
		switch err := u.NodeRelease(ctx, h); {
		case err == nil, errors.Is(err, syscall.EBADF):
		case errors.Is(err, syscall.ENOTCONN):
			u.debug(DiagFH, "perfuse: release at unmount: daemon gone", "nodeid", h.node.id, "fh", h.fh)
		default:
			u.log.Warn("perfuse: release at unmount", "nodeid", h.node.id, "fh", h.fh, "err", err)
		}
	}
	if err := u.sendForgets(ctx, u.forgetEverything()); err != nil {
		u.log.Warn("perfuse: forget at unmount", "err", err)
	}
	err := u.do(ctx, request{op: OpDestroy}, nil)
	if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.ENOTCONN) {
		return nil
	}
	return err
}

// FsSync is sync(2) for the session. It sends nothing: FUSE has no
// whole-filesystem sync before SYNCFS (7.34), later than the protocol
// perfuse speaks, and perfuse caches no data of its own (fsync each open
// with NodeFsync).
func (u *Usermount) FsSync(ctx context.Context, cred *Cred) error { return nil }

// errnoOf returns the errno an error stands for: 0 for nil, EIO when it
// carries none.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
