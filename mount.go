package perfuse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

// MountInfo mirrors libperfuse's struct perfuse_mount_info: what a relay
// learns from a mount frame. An empty string means the string was absent
// from the frame (length 0).
//
// UID, GID and PID are the credentials of the process at the other end of
// the socket (SCM_CREDENTIALS or SO_PEERCRED), never values taken from the
// frame, so a client cannot claim to be someone else.
type MountInfo struct {
	Source, Target, FSType string
	Flags                  uint32
	Data, Sock             string
	UID, GID               uint32
	PID                    int32
}

// MountMagic identifies a mount frame, at offset 16 followed by a NUL.
const MountMagic = "noFuseRq"

// mountHeaderSize is sizeof(struct perfuse_mount_out) on LP64; the strings
// follow it.
const mountHeaderSize = 56

// Limits on the mount frame, counted as in the frame (including the NUL).
// Upstream trusts the peer's lengths (bug list item 32); these bound what a
// relay has to accept.
const (
	// MaxMountPathLen bounds source and target: PATH_MAX.
	MaxMountPathLen = 4096
	// MaxMountFSTypeLen bounds the file system type: 255 bytes plus NUL.
	MaxMountFSTypeLen = 256
	// MaxMountDataLen bounds the mount option string.
	MaxMountDataLen = 64 << 10
	// MaxMountSockLen bounds the reply socket path: sizeof(sun_path).
	MaxMountSockLen = 108
	// MaxMountFrameSize bounds a whole frame. The limits above already
	// keep a frame far below it; it sizes the receive buffer.
	MaxMountFrameSize = 1 << 20
)

// mountField describes one string of the frame in wire order.
type mountField struct {
	name string
	off  int // offset of its u32 length
	max  int
}

var mountFields = [5]mountField{
	{"source", 28, MaxMountPathLen},
	{"target", 32, MaxMountPathLen},
	{"fstype", 36, MaxMountFSTypeLen},
	{"data", 44, MaxMountDataLen},
	{"sock", 48, MaxMountSockLen},
}

const mountFlagsOff = 40

// EncodeMountFrame builds the mount frame (struct perfuse_mount_out followed
// by its strings) that libperfuse's perfuse_mount sends. Unlike upstream,
// padding is zeroed, so a given mount has exactly one encoding. An empty
// string is left out (length 0). A string containing NUL, or longer than
// the limits above, is an error wrapping syscall.EINVAL.
func EncodeMountFrame(source, target, fstype string, flags uint32, data, sock string) ([]byte, error) {
	strs := [5]string{source, target, fstype, data, sock}
	total := mountHeaderSize
	for i, s := range strs {
		f := mountFields[i]
		if strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("perfuse: mount frame %s contains NUL: %w", f.name, syscall.EINVAL)
		}
		if s != "" && len(s)+1 > f.max {
			return nil, fmt.Errorf("perfuse: mount frame %s is %d bytes, max %d: %w", f.name, len(s), f.max-1, syscall.EINVAL)
		}
		if s != "" {
			total += len(s) + 1
		}
	}
	b := make([]byte, mountHeaderSize, total)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint32(b[4:], 0)
	ne.PutUint64(b[8:], math.MaxUint64)
	copy(b[16:], MountMagic) // the NUL and padding stay zero
	ne.PutUint32(b[mountFlagsOff:], flags)
	for i, s := range strs {
		if s == "" {
			continue
		}
		ne.PutUint32(b[mountFields[i].off:], uint32(len(s)+1))
		b = append(b, s...)
		b = append(b, 0)
	}
	return b, nil
}

func frameErr(format string, args ...any) error {
	return fmt.Errorf("perfuse: mount frame: "+format+": %w", append(args, syscall.EPROTO)...)
}

// DecodeMountFrame parses and validates a mount frame. It checks everything
// upstream perfused trusts: sizes, the fuse_out_header-shaped prefix, the
// magic, every length against the limits above, their sum against the
// total, and NUL termination. It accepts only the canonical encoding that
// EncodeMountFrame produces: zero padding, and no present-but-empty string
// (such a frame has no empty/absent distinction in MountInfo). Every failure
// is an error wrapping syscall.EPROTO. Target is not required here; the
// caller decides what a usable mount is. UID, GID and PID are left zero.
func DecodeMountFrame(b []byte) (*MountInfo, error) {
	if len(b) < mountHeaderSize {
		return nil, frameErr("%d bytes, shorter than the %d-byte header", len(b), mountHeaderSize)
	}
	if len(b) > MaxMountFrameSize {
		return nil, frameErr("%d bytes, max %d", len(b), MaxMountFrameSize)
	}
	ne := binary.NativeEndian
	if l := ne.Uint32(b[0:]); uint64(l) != uint64(len(b)) {
		return nil, frameErr("len field %d, but the record is %d bytes", l, len(b))
	}
	if e := int32(ne.Uint32(b[4:])); e != 0 {
		return nil, frameErr("error field %d, want 0", e)
	}
	if u := ne.Uint64(b[8:]); u != math.MaxUint64 {
		return nil, frameErr("unique field %#x, want all ones", u)
	}
	if string(b[16:25]) != MountMagic+"\x00" {
		return nil, frameErr("bad magic %q", b[16:25])
	}
	if !allZero(b[25:28]) || !allZero(b[52:56]) {
		return nil, frameErr("non-zero padding")
	}
	var lens [5]int
	sum := mountHeaderSize
	for i, f := range mountFields {
		l := ne.Uint32(b[f.off:])
		if uint64(l) > uint64(f.max) {
			return nil, frameErr("%s length %d, max %d", f.name, l, f.max)
		}
		lens[i] = int(l)
		sum += int(l) // at most 56 + 5 × 64 KiB: no overflow
	}
	if sum != len(b) {
		return nil, frameErr("header plus string lengths is %d, but len is %d", sum, len(b))
	}
	var strs [5]string
	p := b[mountHeaderSize:]
	for i, f := range mountFields {
		l := lens[i]
		if l == 0 {
			continue
		}
		s := p[:l]
		p = p[l:]
		if l == 1 {
			return nil, frameErr("%s is present but empty", f.name)
		}
		if s[l-1] != 0 {
			return nil, frameErr("%s is not NUL-terminated", f.name)
		}
		if bytes.IndexByte(s[:l-1], 0) >= 0 {
			return nil, frameErr("%s contains NUL", f.name)
		}
		strs[i] = string(s[:l-1])
	}
	return &MountInfo{
		Source: strs[0],
		Target: strs[1],
		FSType: strs[2],
		Flags:  ne.Uint32(b[mountFlagsOff:]),
		Data:   strs[3],
		Sock:   strs[4],
	}, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ReadMountFrame is the relay side of Mount: it receives exactly one record
// from f (a SEQPACKET or DGRAM AF_UNIX socket), decodes it as a mount frame
// and fills in the sender's credentials: those attached to that record
// (SCM_CREDENTIALS, when SO_PASSCRED was on before it was sent), else the
// connection's SO_PEERCRED. SO_PASSCRED is turned off afterwards, as
// upstream does with LOCAL_CREDS: FUSE traffic does not need credentials.
func ReadMountFrame(f *os.File) (*MountInfo, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("perfuse: read mount frame: %w", err)
	}
	// One byte more than the largest frame, so that a larger record shows
	// up as truncated instead of being cut to a plausible size.
	buf := make([]byte, MaxMountFrameSize+1)
	var (
		n    int
		cred *unix.Ucred
	)
	cerr := rc.Control(func(fd uintptr) {
		n, cred, err = sock.RecvRecord(int(fd), buf)
		if err != nil {
			return
		}
		// Credentials attached by a SO_PASSCRED turned on after the frame
		// was queued are the kernel's "nobody" with pid 0: not the sender.
		if cred == nil || cred.Pid == 0 {
			cred, err = sock.PeerCred(int(fd))
			// An unconnected DGRAM socket has no peer: pid 0.
			if err == nil && cred.Pid == 0 {
				err = fmt.Errorf("no sender credentials (set SO_PASSCRED before the frame is sent): %w", syscall.EPROTO)
			}
		}
		if perr := sock.SetPassCred(int(fd), false); perr != nil {
			slog.Debug("perfuse: cannot turn SO_PASSCRED off", "err", perr)
		}
	})
	if err == nil {
		err = cerr
	}
	if errors.Is(err, unix.EMSGSIZE) {
		return nil, frameErr("record larger than %d bytes", MaxMountFrameSize)
	}
	if err != nil {
		return nil, fmt.Errorf("perfuse: read mount frame: %w", err)
	}
	mi, err := DecodeMountFrame(buf[:n])
	if err != nil {
		return nil, err
	}
	mi.UID, mi.GID, mi.PID = cred.Uid, cred.Gid, cred.Pid
	return mi, nil
}

// Mount mirrors libperfuse's perfuse_mount: instead of mount(2) it sends a
// mount frame to perfused over the socket returned by Open. That socket is
// named by the first "fd=N" option in data, as libfuse passes it; without a
// valid one Mount fails with an error wrapping syscall.EINVAL. flags must
// fit in 32 bits (the frame field), else EINVAL too.
//
// Mount then waits, at most MountAnswerWait, for the relay's answer on the
// same socket: the first record it sends. A mount status record (see
// EncodeMountStatus) is a refusal: Mount consumes it and returns a
// *MountRefusedError, which wraps the relay's errno and carries its reason.
// Anything else is left unread for the daemon and Mount returns nil: a FUSE
// request (the relay's INIT) means the mount was accepted; a close without a
// status record, or silence past the bound, is what an older relay does, and
// the daemon sees it on its socket as before. A failure after INIT (the
// kernel mount itself) also reaches the daemon as its socket closing.
//
// Deviation from upstream: no reply socket is bound and the frame's sock
// string is always empty. Upstream binds /tmp/<prog>-<pid> so that a DGRAM
// perfused can answer; the Linux perfused listens on SEQPACKET, where the
// accepted connection already carries the replies.
func Mount(source, target, fstype string, flags uintptr, data string) error {
	fd := -1
	for opt := range strings.SplitSeq(data, ",") {
		if v, ok := strings.CutPrefix(opt, "fd="); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("perfuse: mount: bad option %q: %w", opt, syscall.EINVAL)
			}
			fd = n
			break
		}
	}
	if fd < 0 {
		return fmt.Errorf("perfuse: mount: no fd= option in %q: %w", data, syscall.EINVAL)
	}
	if uint64(flags) > math.MaxUint32 {
		return fmt.Errorf("perfuse: mount: flags %#x do not fit in 32 bits: %w", flags, syscall.EINVAL)
	}
	frame, err := EncodeMountFrame(source, target, fstype, uint32(flags), data, "")
	if err != nil {
		return err
	}
	if err := sock.SendRecord(fd, frame); err != nil {
		// A relay that refused the connection before the frame came has
		// closed it, leaving its reason behind.
		buf := make([]byte, maxMountStatusSize+1)
		if n, _, rerr := recvRecord(fd, buf, unix.MSG_DONTWAIT); rerr == nil && IsMountStatus(buf[:n]) {
			return DecodeMountStatus(buf[:n])
		}
		return fmt.Errorf("perfuse: mount: send to fd %d: %w", fd, err)
	}
	return awaitMountAnswer(fd, MountAnswerWait)
}

// The mount status record is how a relay refuses a mount frame, on the
// connection that carried it, before closing it. It is shaped like the mount
// frame it answers: a fuse_out_header (len, error, unique) whose unique is
// all ones, which no FUSE request carries, then MountMagic and its NUL,
// padding to mountStatusHeader bytes, and the reason as a NUL-terminated
// string. error is a negative errno, never 0: an accepted mount is not
// answered with a status record, its first record is the relay's FUSE INIT.
// Old clients, which do not read it, fail anyway since the relay closes
// the connection; old relays never send it, and Mount then behaves as it
// did before, so either side may be older.
const (
	mountStatusHeader = 32
	// MaxMountStatusReason bounds the reason, NUL excluded; longer ones are
	// cut.
	MaxMountStatusReason = 1024
	maxMountStatusSize   = mountStatusHeader + MaxMountStatusReason + 1
)

// MountAnswerWait bounds how long Mount waits for the relay to accept or
// refuse the mount frame. The relay answers once its policy checks are done,
// which it bounds well below this.
var MountAnswerWait = 30 * time.Second

// EncodeMountStatus returns the status record refusing a mount for err: its
// errno (EPERM when err wraps none) and its text as the reason.
func EncodeMountStatus(err error) []byte {
	errno := syscall.EPERM
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		errno = e
	}
	reason := "mount refused"
	if err != nil {
		reason = err.Error()
	}
	if len(reason) > MaxMountStatusReason {
		reason = reason[:MaxMountStatusReason]
	}
	reason = string(bytes.ReplaceAll([]byte(reason), []byte{0}, []byte{' '}))
	b := make([]byte, mountStatusHeader, mountStatusHeader+len(reason)+1)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(mountStatusHeader+len(reason)+1))
	ne.PutUint32(b[4:], uint32(-int32(errno)))
	ne.PutUint64(b[8:], math.MaxUint64)
	copy(b[16:], MountMagic)
	b = append(b, reason...)
	return append(b, 0)
}

// IsMountStatus reports whether b starts like a mount status record (the
// all-ones unique and the magic), whatever its validity.
func IsMountStatus(b []byte) bool {
	return len(b) >= 25 && binary.NativeEndian.Uint64(b[8:]) == math.MaxUint64 && string(b[16:25]) == MountMagic+"\x00"
}

// DecodeMountStatus returns the refusal a status record carries: an error
// wrapping its errno, with the relay's reason. A malformed record is an
// error wrapping EPROTO.
func DecodeMountStatus(b []byte) error {
	bad := func(why string) error {
		return fmt.Errorf("perfuse: mount status record: %s: %w", why, syscall.EPROTO)
	}
	if !IsMountStatus(b) || len(b) < mountStatusHeader+1 || len(b) > maxMountStatusSize {
		return bad(fmt.Sprintf("%d bytes, not a status record", len(b)))
	}
	ne := binary.NativeEndian
	if int(ne.Uint32(b[0:])) != len(b) {
		return bad("len field does not match the record")
	}
	errno := -int32(ne.Uint32(b[4:]))
	if errno <= 0 || errno > 4095 {
		return bad(fmt.Sprintf("error field %d", -errno))
	}
	reason := b[mountStatusHeader:]
	if reason[len(reason)-1] != 0 || bytes.IndexByte(reason[:len(reason)-1], 0) >= 0 {
		return bad("reason is not one NUL-terminated string")
	}
	return &MountRefusedError{Errno: syscall.Errno(errno), Reason: string(reason[:len(reason)-1])}
}

// MountRefusedError is a relay's refusal of a mount frame.
type MountRefusedError struct {
	Errno  syscall.Errno
	Reason string
}

func (e *MountRefusedError) Error() string {
	return "perfuse: mount refused by perfused: " + e.Reason
}

func (e *MountRefusedError) Unwrap() error { return e.Errno }

// awaitMountAnswer waits for the relay's first record on fd (see Mount),
// through the runtime poller on a non-blocking duplicate, so no thread is
// held while the relay decides.
func awaitMountAnswer(fd int, wait time.Duration) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("perfuse: mount: fd %d: %w", fd, err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("perfuse: mount: dup fd %d: %w", fd, err)
	}
	// O_NONBLOCK belongs to the open file, shared with fd: restore it once
	// the answer is read, for a daemon that reads fd in blocking mode.
	if fl&unix.O_NONBLOCK == 0 {
		defer unix.SetNonblock(fd, false)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return fmt.Errorf("perfuse: mount: %w", err)
	}
	f := os.NewFile(uintptr(dup), "perfuse-socket")
	defer f.Close()
	if err := f.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return fmt.Errorf("perfuse: mount: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("perfuse: mount: %w", err)
	}
	buf := make([]byte, maxMountStatusSize+1)
	var n, rflags int
	var rerr error
	peek := func(fd uintptr) bool {
		n, rflags, rerr = recvRecord(int(fd), buf, unix.MSG_PEEK)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	}
	if err := rc.Read(peek); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A relay that answers nothing yet (an older perfused that is
			// slow, a test peer): as before, Mount cannot tell.
			return nil
		}
		return fmt.Errorf("perfuse: mount: %w", err)
	}
	if rerr != nil || n == 0 || !IsMountStatus(buf[:n]) {
		// INIT (accepted), or a relay that answers no mount frame: its
		// close reaches the daemon as before.
		return nil
	}
	if rflags&unix.MSG_TRUNC != 0 {
		n = len(buf) // DecodeMountStatus refuses it as too long
	}
	rc.Control(func(fd uintptr) { unix.Recvmsg(int(fd), make([]byte, 1), nil, unix.MSG_DONTWAIT) })
	return DecodeMountStatus(buf[:n])
}

// recvRecord is one recvmsg, past a pending ECONNRESET: a relay that
// closes with our frame unread leaves that error ahead of its status
// record, and the kernel reports (and clears) it first.
func recvRecord(fd int, buf []byte, flags int) (n, rflags int, err error) {
	for range 2 {
		n, _, rflags, _, err = unix.Recvmsg(fd, buf, nil, flags)
		if err != unix.ECONNRESET {
			break
		}
	}
	return n, rflags, err
}
