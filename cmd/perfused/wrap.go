package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/fusermount"
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
	standin := d.f.fusermount || !namesSocket(argv)
	var cmd *exec.Cmd
	if standin {
		// The daemon mounts a real mountpoint itself (libfuse 2): run it
		// with a stand-in fusermount that hands it our socket.
		if os.Geteuid() != 0 {
			theirs.Close()
			ours.Close()
			return fmt.Errorf("%s names no /dev/fd/%d, so it must be run with a stand-in fusermount in a private mount namespace, which needs root", filepath.Base(argv[0]), fusermount.SocketFD)
		}
		self, err := os.Executable()
		if err != nil {
			theirs.Close()
			ours.Close()
			return err
		}
		cmd = fusermount.Command(self, argv, theirs, abs)
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.ExtraFiles = []*os.File{theirs} // fd 3
		// Its own process group: a terminal's ^C reaches perfused, which
		// unmounts cleanly, after which the daemon sees its socket close.
		// Pdeathsig: a daemon does not outlive a perfused that is killed.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
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
	var serr error
	if standin {
		serr = d.hello(ours, mi, abs)
	}
	if serr == nil {
		serr = d.serve(ours, mi)
	} else {
		ours.Close()
	}
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

// namesSocket reports whether the daemon's command line names our socket
// (/dev/fd/3) as its mountpoint; if it does not, the daemon mounts a real
// mountpoint itself and gets a stand-in fusermount.
func namesSocket(argv []string) bool {
	for _, a := range argv[1:] {
		if strings.Contains(a, fmt.Sprintf("/dev/fd/%d", fusermount.SocketFD)) {
			return true
		}
	}
	return false
}

// hello waits for the stand-in fusermount's report and takes the daemon's
// mount options (fsname, allow_other, ro, …) into mi; subtype is left to
// perfused (mounts show as fuse.perfuse).
func (d *daemon) hello(ours *os.File, mi *perfuse.MountInfo, abs string) error {
	req, err := fusermount.ReadHello(int(ours.Fd()), initTimeout)
	if err != nil {
		return fmt.Errorf("%s did not mount: %w", mi.Source, err)
	}
	d.log.Debug("perfused: the daemon ran fusermount", "args", strings.Join(req.Args, " "))
	if want, _ := filepath.EvalSymlinks(abs); req.Mountpoint != "" && req.Mountpoint != abs && req.Mountpoint != want {
		d.log.Warn("perfused: the daemon asked for another mountpoint; mounting the one perfused was given",
			"daemon", req.Mountpoint, "mountpoint", abs)
	}
	var keep []string
	for _, o := range strings.Split(req.Options, ",") {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "subtype", "":
		case "fsname":
			mi.Source = v
		default:
			keep = append(keep, o)
		}
	}
	mi.Data = strings.Join(keep, ",")
	return nil
}

func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
