// Package sock holds the few AF_UNIX socket helpers shared by the FUSE-fs
// side (perfuse.Open/Mount) and the relay transport.
//
// All helpers take raw descriptors and expect them to be in blocking mode,
// which is what Pair returns and what a child receives through
// exec.Cmd.ExtraFiles. They still cope with a non-blocking descriptor by
// waiting in poll(2), so a descriptor borrowed from the net package works too.
package sock

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"

	"golang.org/x/sys/unix"
)

// Pair returns a connected AF_UNIX socket pair. Both ends are close-on-exec:
// exec.Cmd.ExtraFiles dups "theirs" for the child without the flag, and "ours"
// must not leak into the child or it would never see EOF when we close.
// typ is unix.SOCK_SEQPACKET, or unix.SOCK_DGRAM when SEQPACKET is not
// available.
func Pair() (ours, theirs *os.File, typ int, err error) {
	typ = unix.SOCK_SEQPACKET
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		slog.Warn("SEQPACKET local sockets unavailable, using DGRAM", "err", err)
		typ = unix.SOCK_DGRAM
		fds, err = unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("socketpair: %w", err)
		}
	}
	return os.NewFile(uintptr(fds[0]), "perfuse-sock"), os.NewFile(uintptr(fds[1]), "perfuse-sock-peer"), typ, nil
}

// SizedPair is Pair with both ends' buffers set to size (SetBuffers), for
// a daemon on "theirs": a record larger than its sender's buffer fails
// with EMSGSIZE, so neither end may be left at the default. theirMax is
// the largest record the daemon's end can send.
func SizedPair(size int) (ours, theirs *os.File, theirMax int, err error) {
	ours, theirs, _, err = Pair()
	if err != nil {
		return nil, nil, 0, err
	}
	for _, f := range []*os.File{ours, theirs} {
		if err = SetBuffers(int(f.Fd()), size); err != nil {
			break
		}
	}
	if err == nil {
		theirMax, err = MaxRecord(int(theirs.Fd()))
	}
	if err != nil {
		ours.Close()
		theirs.Close()
		return nil, nil, 0, err
	}
	return ours, theirs, theirMax, nil
}

// SetBuffers sets SO_SNDBUF and SO_RCVBUF to size. The *FORCE variants are
// tried first because they may exceed net.core.[rw]mem_max; they need
// CAP_NET_ADMIN, and without it the plain options are used, which the kernel
// caps silently. Either way the kernel doubles the value.
func SetBuffers(fd int, size int) error {
	if size < 0 {
		return fmt.Errorf("socket buffer size %d: %w", size, unix.EINVAL)
	}
	// The kernel reads an int and doubles it; keep the doubling from overflowing.
	size = min(size, math.MaxInt32/2)
	for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], size) == nil {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], size); err != nil {
			return fmt.Errorf("setsockopt buffer size %d: %w", size, err)
		}
	}
	return nil
}

// SendBuffer returns the effective SO_SNDBUF (already doubled by the kernel).
// A record must be somewhat smaller than this to be sent at all.
func SendBuffer(fd int) (int, error) {
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_SNDBUF: %w", err)
	}
	return n, nil
}

// recordSlack is what AF_UNIX takes from SO_SNDBUF for its own accounting:
// a record larger than SO_SNDBUF - recordSlack fails with EMSGSIZE.
const recordSlack = 32

// MaxRecord returns the largest record fd can send: its effective SO_SNDBUF
// less what the kernel keeps for itself.
func MaxRecord(fd int) (int, error) {
	n, err := SendBuffer(fd)
	if err != nil {
		return 0, err
	}
	return n - recordSlack, nil
}

// PeerCred returns the credentials the peer had when the connection or the
// socket pair was created (SO_PEERCRED).
func PeerCred(fd int) (*unix.Ucred, error) {
	c, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_PEERCRED: %w", err)
	}
	return c, nil
}

// SetPassCred turns SO_PASSCRED on or off. It must be on before the peer
// sends a record for that record to carry SCM_CREDENTIALS.
func SetPassCred(fd int, on bool) error {
	v := 0
	if on {
		v = 1
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, v); err != nil {
		return fmt.Errorf("setsockopt SO_PASSCRED: %w", err)
	}
	return nil
}

// Type returns the socket type (SO_TYPE), e.g. unix.SOCK_SEQPACKET.
func Type(fd int) (int, error) {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_TYPE: %w", err)
	}
	return t, nil
}

// oobSize has room for SCM_CREDENTIALS and a few SCM_RIGHTS descriptors; a
// peer sending more gets them closed by the kernel (MSG_CTRUNC).
var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(16*4)

// RecvRecord receives one record into buf with a single recvmsg. cred is the
// SCM_CREDENTIALS of that record, or nil when the socket does not have
// SO_PASSCRED. A record longer than buf is truncated by the kernel (the rest
// is lost); RecvRecord then returns len(buf) and an error wrapping
// unix.EMSGSIZE. A zero-length read on a connected (non-DGRAM) socket is
// reported as io.EOF. Descriptors passed with SCM_RIGHTS are closed: no
// caller expects them and they must not accumulate.
func RecvRecord(fd int, buf []byte) (n int, cred *unix.Ucred, err error) {
	oob := make([]byte, oobSize)
	var oobn, flags int
	for {
		n, oobn, flags, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			if err = waitFd(fd, unix.POLLIN); err != nil {
				return 0, nil, err
			}
			continue
		}
		break
	}
	if err != nil {
		return 0, nil, fmt.Errorf("recvmsg: %w", err)
	}
	if oobn > 0 {
		cred = parseControl(oob[:oobn])
	}
	if flags&unix.MSG_TRUNC != 0 {
		return n, cred, fmt.Errorf("record longer than %d bytes: %w", len(buf), unix.EMSGSIZE)
	}
	if n == 0 {
		// Only a datagram can legitimately be empty; on SEQPACKET (and
		// stream) sockets 0 is how the kernel reports the peer's close.
		if t, terr := Type(fd); terr != nil || t != unix.SOCK_DGRAM {
			return 0, cred, io.EOF
		}
	}
	return n, cred, nil
}

func parseControl(oob []byte) *unix.Ucred {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			if c, err := unix.ParseUnixCredentials(m); err == nil {
				cred = c
			}
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(m); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	return cred
}

// SendRecord sends b as one record with MSG_NOSIGNAL, so a closed peer is
// an EPIPE error rather than a SIGPIPE. A short send is an error.
func SendRecord(fd int, b []byte) error {
	for {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL)
		switch err {
		case nil:
			if n != len(b) {
				return fmt.Errorf("short send: %d of %d bytes", n, len(b))
			}
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if err := waitFd(fd, unix.POLLOUT); err != nil {
				return err
			}
			continue
		default:
			return fmt.Errorf("sendmsg: %w", err)
		}
	}
}

// waitFd blocks until fd is ready for events. Errors and hangups are left
// for the following recvmsg/sendmsg to report.
func waitFd(fd int, events int16) error {
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: events}}, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		return nil
	}
}
