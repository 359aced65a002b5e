package perfuse

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse/internal/sock"
)

const (
	// initTimeout bounds INIT when the caller's context has no deadline.
	initTimeout = 30 * time.Second
	// stopGrace is how long Unmount waits for the daemon to exit after
	// the stop signal before it closes the socket. libfuse daemons exit
	// within milliseconds.
	stopGrace = time.Second
	// exitTimeout is how long a daemon may take to exit once its socket
	// is closed before it is killed.
	exitTimeout = 5 * time.Second
	// stderrTail is how much of the daemon's stderr errors carry.
	stderrTail = 4 << 10
)

// Daemon is a mount-free session with a FUSE daemon process run by Start.
// It embeds the session's Usermount: the operation table and the io/fs
// view. Its Unmount ends the session and the process.
type Daemon struct {
	*Usermount

	cmd     *exec.Cmd
	stderr  *tail
	exited  chan struct{} // closed once cmd.Wait has returned
	waitErr error         // cmd.Wait's result, once exited is closed

	stopOnce sync.Once
	stopped  bool // set by stop: the daemon was running when sent the stop signal
}

// Start runs cmd as a FUSE daemon and returns a mount-free session with it,
// INIT done. The daemon gets its end of an AF_UNIX SEQPACKET socket pair as
// fd 3 (the caller's cmd.ExtraFiles follow it), so cmd should name
// "/dev/fd/3" as its mountpoint and stay in the foreground (-f for libfuse
// daemons): libfuse 3.3+ and go-fuse 2.2+ take that as an open FUSE
// connection and mount nothing. No privileges are needed. (A daemon that
// goes to the background serves from a child Start does not see: Unmount
// cannot signal it, and it ends when the socket closes.)
//
//	d, err := perfuse.Start(ctx, exec.Command("squashfuse", "-f", "image.sqfs", "/dev/fd/3"))
//
// On AF_UNIX a record larger than the sender's SO_SNDBUF fails with
// EMSGSIZE, so both ends get the session's buffer size (WithBufSize,
// PERFUSE_BUFSIZE) and INIT settles max_write and reads that fit the
// smaller of the two.
//
// INIT waits at most until ctx is done (30 s when ctx has no deadline) and
// never past the daemon's exit; ctx bounds the start only. A daemon that fails first gives an error
// carrying its exit status (*exec.ExitError) and the tail of its stderr;
// cmd.Stderr, when set, still gets all of it.
func Start(ctx context.Context, cmd *exec.Cmd, opts ...Option) (*Daemon, error) {
	if cmd.Process != nil {
		return nil, fmt.Errorf("perfuse: start %s: already started: %w", filepath.Base(cmd.Path), syscall.EINVAL)
	}
	d := &Daemon{cmd: cmd, stderr: &tail{max: stderrTail}, exited: make(chan struct{})}
	conf := newConfig(opts)
	ours, theirs, theirMax, err := sock.SizedPair(conf.bufSize)
	if err != nil {
		return nil, fmt.Errorf("perfuse: start %s: %w", d.name(), err)
	}

	if cmd.Stderr == nil {
		cmd.Stderr = d.stderr
	} else {
		cmd.Stderr = io.MultiWriter(cmd.Stderr, d.stderr)
	}
	if cmd.WaitDelay == 0 {
		// A grandchild holding the stderr pipe must not keep Wait
		// from returning.
		cmd.WaitDelay = time.Second
	}
	cmd.ExtraFiles = append([]*os.File{theirs}, cmd.ExtraFiles...)
	err = cmd.Start()
	// Our copy of the daemon's end must go, or the daemon would never
	// see the socket close.
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("perfuse: start %s: %w", d.name(), err)
	}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()

	cb, err := SocketCallbacks(ours, opts...)
	if err != nil {
		d.kill()
		return nil, fmt.Errorf("perfuse: start %s: %w", d.name(), err)
	}
	// Replies are records the daemon sends: its buffer bounds them.
	cb.MaxFrame = min(cb.MaxFrame, theirMax)
	closeSocket := cb.Umount
	cb.Umount = func(u *Usermount) {
		d.stop()
		closeSocket(u)
		d.reap()
	}
	u, err := Init(cb, nil, opts...)
	if err != nil {
		closeSocket(nil)
		d.kill()
		return nil, err
	}
	if err := d.init(ctx, u); err != nil {
		err = d.initError(err)
		closeSocket(u)
		d.kill()
		return nil, err
	}
	u.startLoop()
	d.Usermount = u
	return d, nil
}

// init runs INIT, ended early by ctx, by initTimeout and by the daemon's
// exit.
func (d *Daemon) init(ctx context.Context, u *Usermount) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, initTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A daemon that forked, or passed fd 3 on, may exit without the
	// socket closing: its exit alone must end the wait.
	go func() {
		select {
		case <-d.exited:
			cancel(errExited)
		case <-ctx.Done():
		}
	}()
	return u.FsInit(ctx)
}

var errExited = errors.New("daemon exited")

// initError is err with the daemon's exit status and stderr tail. A daemon
// whose socket closed is exiting: it gets a moment to be reaped.
func (d *Daemon) initError(err error) error {
	if errors.Is(err, syscall.ENOTCONN) {
		select {
		case <-d.exited:
		case <-time.After(stopGrace):
		}
	}
	select {
	case <-d.exited:
		status := "exit status 0"
		if d.waitErr != nil {
			status = d.waitErr.Error()
		}
		return fmt.Errorf("perfuse: %s exited before INIT, %s%s (%w)", d.name(), status, d.said(), errors.Join(d.waitErr, err))
	default:
		return fmt.Errorf("perfuse: %s%s: %w", d.name(), d.said(), err)
	}
}

// stop asks the daemon to exit, once DESTROY has been answered (or has
// timed out), in the way its kind expects. libfuse's
// fuse_set_signal_handlers makes SIGTERM end the session loop, and pyfuse3
// daemons catch it to end theirs; closing the socket first would make
// libfuse read end-of-file and fail ("short read on fuse device"), so the
// socket is closed only once the daemon has exited or had stopGrace to do
// so. A Go FUSE server's loop instead ends when the socket closes, and
// SIGTERM would kill a Go program that does not catch it: such a daemon
// gets no signal.
func (d *Daemon) stop() {
	d.stopOnce.Do(func() {
		select {
		case <-d.exited:
			return
		default:
		}
		if d.endsOnClose() {
			return
		}
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err == nil {
			d.stopped = true
		}
		select {
		case <-d.exited:
		case <-time.After(stopGrace):
		}
	})
}

// closeEnded are the Go FUSE libraries whose server loop ends, and whose
// Serve returns, when the connection ends.
var closeEnded = []string{"github.com/hanwen/go-fuse", "bazil.org/fuse"}

// endsOnClose reports whether the daemon is a Go program built on one of
// closeEnded, from the build information in its executable.
func (d *Daemon) endsOnClose() bool {
	bi, err := buildinfo.ReadFile(fmt.Sprintf("/proc/%d/exe", d.cmd.Process.Pid))
	if err != nil {
		return false // not a Go program
	}
	for _, m := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
		for _, lib := range closeEnded {
			if m.Path == lib || strings.HasPrefix(m.Path, lib+"/") {
				return true
			}
		}
	}
	return false
}

// reap waits for the daemon to exit once its socket is closed (a go-fuse
// server's loop ends then), killing it past exitTimeout.
func (d *Daemon) reap() {
	select {
	case <-d.exited:
	case <-time.After(exitTimeout):
		d.kill()
	}
}

// kill kills the daemon and waits for it.
func (d *Daemon) kill() {
	d.cmd.Process.Kill()
	<-d.exited
}

// Unmount ends the session as Usermount.Unmount does (releases, forgets,
// DESTROY) and then the daemon, as its kind expects: a go-fuse or
// bazil.org/fuse program by closing the socket, which ends its server loop;
// any other (libfuse, pyfuse3) by SIGTERM, which ends a libfuse session
// loop, and after a grace period by closing the socket. One still running
// seconds later is killed. It returns once the process is reaped.
//
// Its error is DESTROY's, or the daemon's failure: an error wrapping
// *exec.ExitError, with the tail of its stderr, when the daemon exited
// non-zero without being sent the signal. The exit status of a daemon that
// stopped on the signal is not an error, because over a socket libfuse (up
// to at least 3.14) reports the signal as a failure (squashfuse exits 8,
// sshfs 1): it stays available from ProcessState.
func (d *Daemon) Unmount(ctx context.Context) error {
	err := d.Usermount.Unmount(ctx)
	// Usermount.Unmount reaps through the Umount callback; a second call
	// finds the daemon reaped already.
	d.stop()
	d.reap()
	if exitErr := d.failure(); exitErr != nil {
		return errors.Join(err, exitErr)
	}
	return err
}

// failure is the daemon's exit error unless it exited on the stop signal.
func (d *Daemon) failure() error {
	if d.waitErr == nil || d.stopped {
		return nil
	}
	return fmt.Errorf("perfuse: %s: %w%s", d.name(), d.waitErr, d.said())
}

// Wait waits for the daemon to exit and returns cmd.Wait's result: nil for
// exit status 0, else an error (usually *exec.ExitError).
func (d *Daemon) Wait() error {
	<-d.exited
	return d.waitErr
}

// Exited is closed once the daemon has exited and been reaped.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// ProcessState is the daemon's exit state, or nil while it runs.
func (d *Daemon) ProcessState() *os.ProcessState {
	select {
	case <-d.exited:
		return d.cmd.ProcessState
	default:
		return nil
	}
}

// Stderr returns the last few KiB the daemon wrote to its stderr.
func (d *Daemon) Stderr() string { return d.stderr.String() }

func (d *Daemon) name() string { return filepath.Base(d.cmd.Path) }

// said quotes the daemon's stderr tail for an error message.
func (d *Daemon) said() string {
	s := d.stderr.String()
	if s == "" {
		return ""
	}
	return fmt.Sprintf("; stderr: %q", s)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
