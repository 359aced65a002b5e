package kernel

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fusectl is where the kernel lists FUSE connections, one directory per
// connection named by its number (the mount's device minor).
const fusectl = "/sys/fs/fuse/connections"

// Aborting a connection by its number alone is unsafe: the number is freed
// when the mount's superblock goes and is reused by the next FUSE mount, so
// a number read or written late names someone else's mount. The Mountpoint
// instead opens its connection's fusectl directory once, right after the
// mount and checked against it (openCtl), and keeps that descriptor. The
// kernel removes the directory with the connection, and a new connection
// with the same number gets a new directory: through the old descriptor,
// "abort" and "waiting" are either this connection's or gone (ENOENT),
// never another's.

// openCtl opens the fusectl directory of connection conn, and keeps it only
// if conn is still the connection mounted at target afterwards (so it cannot
// be a connection that replaced ours in between). It returns -1 if not.
func (m *Mountpoint) openCtl(conn uint32, target string) int {
	if conn == 0 {
		return -1
	}
	dir := fmt.Sprintf("%s/%d", fusectl, conn)
	if os.Geteuid() == 0 && !fusectlMounted() {
		// fusectl is usually mounted at boot; mount it if it is not.
		if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil {
			m.Logger.Debug("perfuse: mount fusectl", "err", err)
		}
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		m.Logger.Debug("perfuse: no fusectl entry for the mount", "conn", conn, "err", err)
		return -1
	}
	if again := m.connection(target); again != conn {
		unix.Close(fd)
		return -1
	}
	return fd
}

// ctlFile opens name in the connection's own fusectl directory.
func (m *Mountpoint) ctlFile(name string, flags int) (int, error) {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	if m.ctlFd < 0 {
		return -1, syscall.ENOENT
	}
	return unix.Openat(m.ctlFd, name, flags|unix.O_CLOEXEC, 0)
}

// abortOwn aborts this mount's kernel connection, if it still exists:
// every request waiting on it fails with ENOTCONN at once. It reports
// whether the abort was written.
func (m *Mountpoint) abortOwn() bool {
	fd, err := m.ctlFile("abort", unix.O_WRONLY)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("1"))
	if err != nil {
		m.Logger.Debug("perfuse: abort connection", "conn", m.conn, "err", err)
	}
	return err == nil
}

// connAlive reports whether this mount's connection still has its fusectl
// entry, i.e. the superblock still exists.
func (m *Mountpoint) connAlive() bool {
	fd, err := m.ctlFile("waiting", unix.O_RDONLY)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// aliveAfter waits up to d for the connection to go, as it does just after
// a clean unmount, and reports whether it is still there.
func (m *Mountpoint) aliveAfter(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for m.connAlive() {
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func (m *Mountpoint) closeCtl() {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	if m.ctlFd >= 0 {
		unix.Close(m.ctlFd)
		m.ctlFd = -1
	}
}

func fusectlMounted() bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	return bytes.Contains(b, []byte(" fusectl "))
}
