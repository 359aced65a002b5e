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
}

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
	path := need(t, argv[0])
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
	mksquashfs := need(t, "mksquashfs")
	need(t, "squashfuse")
	img := filepath.Join(t.TempDir(), "img.squashfs")
	if out, err := exec.Command(mksquashfs, srcDir, img, "-noappend", "-quiet").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	return Start(t, "squashfuse", "-f", img, "/dev/fd/3")
}

// FuseOverlayfs serves an overlay of upper (writable) on lower with
// fuse-overlayfs; work is its scratch directory, on upper's filesystem, and
// required with upper. It needs nothing else, as root or not, but it aborts
// at INIT unless the client offers FUSE_DONT_MASK ("filesystem requested
// capabilities 0x40 that are not supported by kernel"). It always prints
// "unknown argument ignored: lazytime".
func FuseOverlayfs(t testing.TB, lower, upper, work string) *Daemon {
	t.Helper()
	return Start(t, "fuse-overlayfs", "-f",
		"-o", fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work),
		"/dev/fd/3")
}

// need returns the path of program, or skips the test (fails it under
// PERFUSE_TEST_STRICT=1) when it is not installed.
func need(t testing.TB, program string) string {
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
	if os.Getenv("PERFUSE_TEST_STRICT") == "1" {
		t.Fatalf("%s (PERFUSE_TEST_STRICT=1)", msg)
	}
	if !errors.Is(err, exec.ErrNotFound) {
		msg += fmt.Sprintf(" (%v)", err)
	}
	t.Skip(msg)
	return ""
}
