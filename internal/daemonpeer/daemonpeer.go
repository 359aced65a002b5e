// Package daemonpeer runs real FUSE daemons (libfuse 3 programs from Debian
// packages) as test peers: the daemon gets the daemon end of a SEQPACKET
// socketpair as fd 3 and "/dev/fd/3" as its mountpoint, which libfuse 3.3+
// takes to mean "fd 3 is already a FUSE connection" (fuse_session_mount), so
// nothing is mounted and no privileges are needed. The test keeps the client
// end.
//
// A missing program skips the test, unless PERFUSE_TEST_STRICT=1, which makes
// it fail (CI installs the packages and must not skip silently).
package daemonpeer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/peerutil"
)

// exitTimeout bounds the wait for a daemon to exit once its socket is
// closed; daemons take milliseconds.
const exitTimeout = 5 * time.Second

// packages names the Debian package of the programs the helpers run, for the
// skip message.
var packages = map[string]string{
	"squashfuse":     "squashfuse",
	"squashfuse_ll":  "squashfuse",
	"mksquashfs":     "squashfs-tools",
	"fuse-overlayfs": "fuse-overlayfs",
	"sshfs":          "sshfs",
	sftpServer:       "openssh-sftp-server",
	python3:          "python3-pyfuse3",
}

// Programs found by path rather than on PATH: Debian's sftp-server, and
// Debian's python3, which has python3-pyfuse3 (another python3 may come
// first on PATH).
const (
	sftpServer = "/usr/lib/openssh/sftp-server"
	python3    = "/usr/bin/python3"
)

// Daemon is a running FUSE daemon.
type Daemon struct {
	// Conn is the client end of the socket: send FUSE requests here.
	Conn *os.File

	cmd    *exec.Cmd
	stderr peerutil.LockedBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // the exit status, once done is closed
}

// Start runs argv (argv[0] looked up on PATH) with the daemon end of a new
// socketpair as fd 3; argv should name "/dev/fd/3" as the mountpoint and ask
// for the foreground (-f). The daemon's stdout and stderr are kept and logged
// if the test fails. At cleanup Conn is closed, which makes the daemon exit;
// one still running after a few seconds is killed.
func Start(t testing.TB, argv ...string) *Daemon {
	t.Helper()
	path := Need(t, argv[0])
	client, fd, err := peerutil.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	daemonEnd := os.NewFile(uintptr(fd), "fuse-daemon")
	d := &Daemon{Conn: client, done: make(chan struct{})}
	d.cmd = exec.Command(path, argv[1:]...)
	d.cmd.ExtraFiles = []*os.File{daemonEnd} // becomes fd 3
	d.cmd.Stdout = &d.stderr
	d.cmd.Stderr = &d.stderr
	// Wait also waits for the output copiers; do not let a grandchild that
	// holds the pipes block it.
	d.cmd.WaitDelay = time.Second
	// Do not outlive a test binary that dies.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = d.cmd.Start()
	// Our copy of the daemon end must go, or the daemon never sees EOF
	// when the client end closes.
	daemonEnd.Close()
	if err != nil {
		client.Close()
		t.Fatalf("start %q: %v", argv, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.Conn.Close()
		select {
		case <-d.done:
		case <-time.After(exitTimeout):
			t.Errorf("%s still running %v after its socket closed; killing it", argv[0], exitTimeout)
			d.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("%q (%v) said:\n%s", argv, d.err, d.Stderr())
		}
	})
	return d
}

// Kill kills the daemon with SIGKILL, as a crash would, and waits for it to
// exit. Conn stays open: the client sees EOF.
func (d *Daemon) Kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// Wait waits for the daemon to exit and returns its exit status (libfuse
// daemons exit with status 1 after "short read on fuse device" when the
// socket closes; that is normal).
func (d *Daemon) Wait() error {
	<-d.done
	return d.err
}

// Exited reports whether the daemon has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Stderr returns what the daemon wrote to stdout and stderr so far.
func (d *Daemon) Stderr() string {
	return d.stderr.String()
}

// Squashfuse packs srcDir into a squashfs image with mksquashfs and serves it
// with squashfuse.
func Squashfuse(t testing.TB, srcDir string) *Daemon {
	t.Helper()
	return Start(t, SquashfuseArgs(t, srcDir)...)
}

// SquashfuseArgs packs srcDir into a squashfs image with mksquashfs and
// returns the command line that serves it on fd 3.
func SquashfuseArgs(t testing.TB, srcDir string) []string {
	t.Helper()
	mksquashfs := Need(t, "mksquashfs")
	Need(t, "squashfuse")
	img := filepath.Join(t.TempDir(), "img.squashfs")
	if out, err := exec.Command(mksquashfs, srcDir, img, "-noappend", "-quiet").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	return []string{"squashfuse", "-f", img, "/dev/fd/3"}
}

// FuseOverlayfsArgs returns the command line that serves an overlay of
// upper on lower on fd 3 (see FuseOverlayfs).
func FuseOverlayfsArgs(lower, upper, work string) []string {
	return []string{"fuse-overlayfs", "-f",
		"-o", fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work),
		"/dev/fd/3"}
}

// SshfsArgs returns the command line that serves dir with sshfs on fd 3,
// with no sshd: its ssh_command is a script that runs the local
// sftp-server, which serves the filesystem on its stdin and stdout.
func SshfsArgs(t testing.TB, dir string) []string {
	t.Helper()
	Need(t, "sshfs")
	Need(t, sftpServer)
	script := filepath.Join(t.TempDir(), "ssh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec "+sftpServer+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{"sshfs", "-f", "-o", "ssh_command=" + script, "localhost:" + dir, "/dev/fd/3"}
}

// Pyfuse3Args returns the command line that runs the pyfuse3 daemon script
// (python3-pyfuse3) on fd 3, with args after it.
func Pyfuse3Args(t testing.TB, script string, args ...string) []string {
	t.Helper()
	Need(t, python3)
	if out, err := exec.Command(python3, "-c", "import pyfuse3, trio").CombinedOutput(); err != nil {
		skipOrFail(t, fmt.Sprintf("%s cannot import pyfuse3: apt-get install python3-pyfuse3 (%v: %s)", python3, err, out))
	}
	return append([]string{python3, script, "/dev/fd/3"}, args...)
}

// FuseOverlayfs serves an overlay of upper (writable) on lower with
// fuse-overlayfs; work is its scratch directory, on upper's filesystem, and
// required with upper. It needs nothing else, as root or not, but it aborts
// at INIT unless the client offers FUSE_DONT_MASK ("filesystem requested
// capabilities 0x40 that are not supported by kernel"). It always prints
// "unknown argument ignored: lazytime".
func FuseOverlayfs(t testing.TB, lower, upper, work string) *Daemon {
	t.Helper()
	return Start(t, FuseOverlayfsArgs(lower, upper, work)...)
}

// Need returns the path of program (looked up on PATH unless it is a path),
// or skips the test (fails it under PERFUSE_TEST_STRICT=1) when it is not
// installed.
func Need(t testing.TB, program string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	pkg := packages[program]
	if pkg == "" {
		pkg = program
	}
	msg := fmt.Sprintf("%s not installed: apt-get install %s", program, pkg)
	if !errors.Is(err, exec.ErrNotFound) && !errors.Is(err, fs.ErrNotExist) {
		msg += fmt.Sprintf(" (%v)", err)
	}
	skipOrFail(t, msg)
	return ""
}

// skipOrFail skips the test, or fails it under PERFUSE_TEST_STRICT=1.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("PERFUSE_TEST_STRICT") == "1" {
		t.Fatalf("%s (PERFUSE_TEST_STRICT=1)", msg)
	}
	t.Skip(msg)
}
