package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/sock"
)

// daemonExitWait is how long a wrapped daemon gets to exit once its socket
// is closed before it is killed.
const daemonExitWait = 5 * time.Second

// wrap is MOUNTPOINT -- COMMAND: run an unmodified FUSE daemon on our
// socket as fd 3 and mount it at target.
func (d *daemon) wrap(target string, argv []string) error {
	abs, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		return err
	}
	size := int(perfuse.BufVarFromEnv("PERFUSE_BUFSIZE", perfuse.DefaultBufSize))
	for _, f := range []*os.File{ours, theirs} {
		if err := sock.SetBuffers(int(f.Fd()), size); err != nil {
			d.log.Warn("perfused: socket buffers not set", "size", size, "err", err)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Its own process group: a terminal's ^C reaches perfused, which
	// unmounts cleanly, after which the daemon sees its socket close.
	// Pdeathsig: a daemon does not outlive a perfused that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	base := filepath.Base(argv[0])
	mi := &perfuse.MountInfo{
		Source: base, Target: abs, FSType: "fuse." + base,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid()),
	}
	serr := d.serve(ours, mi)
	var werr error
	select {
	case werr = <-exited:
	case <-time.After(daemonExitWait):
		d.log.Warn("perfused: daemon still running after its socket closed; killing it", "command", base)
		cmd.Process.Kill()
		werr = <-exited
	}
	switch {
	case serr == nil:
		return nil
	case errors.Is(serr, errDaemonGone):
		return fmt.Errorf("%s: %s exited (%v) while mounted; %s unmounted", abs, base, exitStatus(werr), abs)
	default:
		if werr != nil {
			return fmt.Errorf("%s: %w (%s: %v)", abs, serr, base, exitStatus(werr))
		}
		return fmt.Errorf("%s: %w", abs, serr)
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
