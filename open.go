package perfuse

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"

	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

// FusePath is the path Open intercepts; every other path is opened normally.
const FusePath = "/dev/fuse"

// DefaultSocketPath is where a standalone perfused listens when
// PERFUSE_SOCKET is unset. Upstream listens on /dev/fuse itself, which Linux
// needs for the real device.
const DefaultSocketPath = "/run/perfused.sock"

// DefaultPerfusedPath is the perfused started by Open when PERFUSED is unset
// and no perfused is on $PATH.
const DefaultPerfusedPath = "/usr/sbin/perfused"

// Open mirrors libperfuse's perfuse_open, a replacement for
// open("/dev/fuse"), and like it returns a descriptor (or -1 and the
// error): the caller owns it and closes it with unix.Close. (An *os.File
// would be closed by its finalizer once nothing refers to it, while the
// daemon still serves the descriptor by number, "fd=N" or /dev/fd/N: its
// kernel callers would wait forever.) Any other path is opened as
// os.OpenFile opens it, and its errors are os.OpenFile's.
//
// For FusePath it connects a SEQPACKET socket to the perfused listening on
// $PERFUSE_SOCKET (default DefaultSocketPath). If nothing listens there
// (ECONNREFUSED or ENOENT) it starts a private perfused instead: $PERFUSED,
// else "perfused" from $PATH, else DefaultPerfusedPath, run as
// "perfused -i 3" with one end of a socket pair as fd 3, and returns the
// other end. Either socket gets $PERFUSE_BUFSIZE (default DefaultBufSize)
// as its buffer sizes. Pass the descriptor to Mount in the "fd=N" option.
// flag and perm only apply to other paths. Every descriptor Open returns is
// close-on-exec; the socket is in blocking mode.
//
// Unlike upstream, no descriptor leaks, a perfused that cannot be started
// is an error in the caller (there is no fork to return into), and the
// child is reaped.
func Open(path string, flag int, perm os.FileMode) (int, error) {
	if path != FusePath {
		f, err := os.OpenFile(path, flag, perm)
		if err != nil {
			return -1, err
		}
		return detach(f)
	}
	size := int(BufVarFromEnv("PERFUSE_BUFSIZE", DefaultBufSize))
	sockPath := os.Getenv("PERFUSE_SOCKET")
	if sockPath == "" {
		sockPath = DefaultSocketPath
	}
	fd, err := dialPerfused(sockPath, size)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return -1, err
	}
	slog.Debug("perfuse: no perfused listening, starting one", "socket", sockPath, "err", err)
	return spawnPerfused(size)
}

// detach returns a descriptor of f's own, which no finalizer closes, and
// closes f.
func detach(f *os.File) (int, error) {
	defer f.Close()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("perfuse: dup: %w", err)
	}
	return fd, nil
}

func dialPerfused(path string, size int) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("perfuse: socket: %w", err)
	}
	if err := sock.SetBuffers(fd, size); err != nil {
		slog.Warn("perfuse: cannot set socket buffers", "size", size, "err", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "connect", Path: path, Err: err}
	}
	return fd, nil
}

func perfusedPath() string {
	if p := os.Getenv("PERFUSED"); p != "" {
		return p
	}
	if p, err := exec.LookPath("perfused"); err == nil {
		return p
	}
	return DefaultPerfusedPath
}

func spawnPerfused(size int) (int, error) {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		return -1, fmt.Errorf("perfuse: %w", err)
	}
	for _, f := range []*os.File{ours, theirs} {
		if err := sock.SetBuffers(int(f.Fd()), size); err != nil {
			slog.Warn("perfuse: cannot set socket buffers", "size", size, "err", err)
		}
	}
	// Before the child starts, so the mount frame carries our credentials
	// whenever it is sent; perfused can fall back to SO_PEERCRED anyway.
	if err := sock.SetPassCred(int(theirs.Fd()), true); err != nil {
		slog.Warn("perfuse: cannot enable credential passing", "err", err)
	}
	cmd := exec.Command(perfusedPath(), "-i", "3")
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return -1, fmt.Errorf("perfuse: start perfused: %w", err)
	}
	go func() {
		if err := cmd.Wait(); err != nil {
			slog.Debug("perfuse: perfused exited", "pid", cmd.Process.Pid, "err", err)
		}
	}()
	return detach(ours)
}
