package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/fusermount"
	"github.com/perfuse-go/perfuse/internal/policy"
	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

// daemonExitWait is how long a wrapped daemon gets to exit once its socket
// is closed before it is killed.
const daemonExitWait = 5 * time.Second

// wrap is MOUNTPOINT -- COMMAND: run an unmodified FUSE daemon on our
// socket and mount it at target, with the kernel mount options the daemon
// was given.
func (d *daemon) wrap(target string, argv []string) error {
	abs, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	base := filepath.Base(argv[0])
	mi := &perfuse.MountInfo{
		Source: base, Target: abs, FSType: "fuse.perfuse",
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid()),
	}
	standin := d.f.fusermount || !namesSocket(argv)
	if !standin {
		// The daemon mounts nothing: its kernel options are read from its
		// command line, as libfuse would have read them.
		if err := d.argvOptions(argv, mi); err != nil {
			return err
		}
	}
	// A mountpoint that will be refused is found before the daemon starts
	// and has its say.
	dir, err := policy.OpenMountpoint(abs, mi.UID, mi.Flags&unix.MS_RDONLY != 0 || d.f.opts.ReadOnly)
	if err != nil {
		return err
	}
	dir.Close()
	if standin && os.Geteuid() != 0 {
		return fmt.Errorf("%s names no /dev/fd/%d, so it must be run with a stand-in fusermount in a private mount namespace, which needs root", base, fusermount.SocketFD)
	}
	ours, theirs, _, err := sock.SizedPair(int(perfuse.BufVarFromEnv("PERFUSE_BUFSIZE", perfuse.DefaultBufSize)))
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	if standin {
		// The daemon mounts a real mountpoint itself: run it with a
		// stand-in fusermount that hands it our socket.
		self, err := os.Executable()
		if err != nil {
			theirs.Close()
			ours.Close()
			return err
		}
		cmd = fusermount.Command(self, argv, abs)
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
	if !standin || err != nil {
		theirs.Close()
	}
	if err != nil {
		ours.Close()
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var serr, werr error
	gone := false
	if standin {
		serr = d.handoff(cmd.Process.Pid, theirs, mi, exited)
		theirs.Close()
		var ee exitedEarly
		if errors.As(serr, &ee) {
			werr, gone = ee.status, true
		}
	}
	if serr == nil {
		serr = d.serve(ours, mi)
	} else {
		ours.Close()
	}
	if !gone {
		select {
		case werr = <-exited:
		case <-time.After(daemonExitWait):
			d.log.Warn("perfused: daemon still running after its socket closed; killing it", "command", base)
			cmd.Process.Kill()
			werr = <-exited
		}
	}
	switch {
	case serr == nil:
		return nil
	case errors.Is(serr, errDaemonGone):
		return fmt.Errorf("%s: %s exited (%v) while mounted; %s unmounted", abs, base, exitStatus(werr), abs)
	case errors.Is(serr, errExited):
		return fmt.Errorf("%s: %s exited (%s) %w", abs, base, exitStatus(werr), serr)
	default:
		if werr != nil {
			return fmt.Errorf("%s: %w (%s: %v)", abs, tidy(serr), base, exitStatus(werr))
		}
		return fmt.Errorf("%s: %w", abs, tidy(serr))
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

// argvOptions takes the kernel mount options on the command line of a
// daemon given /dev/fd/3 into mi. It refuses what perfused cannot apply,
// and the daemon's own flags that read like kernel options (gocryptfs -ro,
// rclone --allow-other) unless perfused's -o or the daemon's -o options
// settle them: from the outside perfused cannot tell what such a flag
// does, and a mount silently without it is worse than none.
func (d *daemon) argvOptions(argv []string, mi *perfuse.MountInfo) error {
	var k fusermount.Kernel
	for _, o := range fusermount.ArgvOptions(argv) {
		if _, err := k.Set(o); err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(argv[0]), err)
		}
	}
	a := d.f.opts
	for _, fl := range fusermount.FlagOptions(argv) {
		settled := map[string]bool{
			"ro":                  a.ReadOnly || k.Flags&unix.MS_RDONLY != 0,
			"allow_other":         a.AllowOther || k.AllowOther,
			"default_permissions": a.DefaultPermissions || k.DefaultPermissions,
			"noexec":              a.NoExec || k.Flags&unix.MS_NOEXEC != 0,
			"suid":                a.Suid || k.Suid,
			"dev":                 a.Dev || k.Dev,
			"sync":                k.Flags&unix.MS_SYNCHRONOUS != 0,
			"dirsync":             k.Flags&unix.MS_DIRSYNC != 0,
			"noatime":             k.Flags&unix.MS_NOATIME != 0,
		}[fl.Option]
		if settled {
			continue
		}
		fix := fmt.Sprintf("perfused -o %s %s -- %s ...", fl.Option, mi.Target, argv[0])
		if fl.Option == "sync" || fl.Option == "dirsync" || fl.Option == "noatime" {
			fix = fmt.Sprintf("-o %s among the daemon's arguments", fl.Option)
		}
		return fmt.Errorf("%s's flag %q reads like the kernel mount option %s, which perfused cannot see: with /dev/fd/%d the daemon mounts nothing itself, and perfused applies only the -o options it reads; say it as a mount option too (%s), or, as root, give the daemon its real mountpoint instead of /dev/fd/%d",
			filepath.Base(argv[0]), fl.Arg, fl.Option, fusermount.SocketFD, fix, fusermount.SocketFD)
	}
	k.Apply(mi)
	return nil
}

// exitedEarly: the daemon exited (with status) before it ran the stand-in
// fusermount.
type exitedEarly struct{ status error }

func (exitedEarly) Error() string { return errExited.Error() }
func (exitedEarly) Unwrap() error { return errExited }

var errExited = errors.New("without running fusermount: perfused hands a daemon its socket only through fusermount (or /dev/fd/3), and a daemon that calls mount(2) itself and never runs fusermount (ntfs-3g's built-in FUSE does) cannot be wrapped; in its namespace mount(2) fails with EPERM")

// handoff serves the stand-in fusermount run by the daemon (process pid,
// in its own mount namespace): it takes the mount options the daemon's
// library passed to fusermount into mi, or refuses them (the stand-in then
// says why), and gives the stand-in theirs, the daemon's end of the relay
// socket.
func (d *daemon) handoff(pid int, theirs *os.File, mi *perfuse.MountInfo, exited <-chan error) error {
	ns, err := fusermount.Namespace(pid)
	if err != nil {
		return err
	}
	ch, err := fusermount.Listen(ns)
	if err != nil {
		return err
	}
	refused := false
	defer func() {
		if !refused {
			ch.Close()
		}
	}()
	type accepted struct {
		h   *fusermount.Handoff
		err error
	}
	got := make(chan accepted, 1)
	go func() {
		warned := false // one line, however many strangers knock
		h, err := ch.Accept(time.Now().Add(initTimeout), func(err error) {
			if !warned {
				warned = true
				d.log.Warn("perfused: " + err.Error())
			}
		})
		got <- accepted{h, err}
	}()
	var h *fusermount.Handoff
	select {
	case a := <-got:
		if a.err != nil {
			return fmt.Errorf("%s did not run fusermount within %v: %w", mi.Source, initTimeout, a.err)
		}
		h = a.h
	case status := <-exited:
		ch.Close()
		<-got
		return exitedEarly{status}
	}
	d.log.Debug("perfused: the daemon ran fusermount", "args", strings.Join(h.Args, " "))
	if want, _ := filepath.EvalSymlinks(mi.Target); h.Mountpoint != "" && h.Mountpoint != mi.Target && h.Mountpoint != want {
		d.log.Warn("perfused: the daemon asked for another mountpoint; mounting the one perfused was given",
			"daemon", h.Mountpoint, "mountpoint", mi.Target)
	}
	var k fusermount.Kernel
	for _, o := range fusermount.SplitOptions(h.Options) {
		known, err := k.Set(o)
		if err == nil && !known {
			err = fmt.Errorf("unknown mount option %q (fusermount would pass it to the kernel, which refuses what it does not know); drop it from the daemon's options", o)
		}
		if err != nil {
			why := err.Error()
			h.Refuse(why)
			// libfuse 3 runs fusermount3 quietly first, then again: every
			// attempt gets the refusal until the daemon has had its time
			// to exit.
			refused = true
			go func() {
				defer ch.Close()
				for {
					h, err := ch.Accept(time.Now().Add(daemonExitWait), nil)
					if err != nil {
						return
					}
					h.Refuse(why)
				}
			}()
			return fmt.Errorf("%s: %w", mi.Source, err)
		}
	}
	base := mi.Source
	k.Apply(mi)
	ph, err := fusermount.Placeholder()
	if err != nil {
		d.log.Warn("perfused: the daemon will find its mountpoint unmounted after fusermount", "err", err)
	} else {
		defer ph.Close()
	}
	if err := h.Give(theirs, ph); err != nil {
		return fmt.Errorf("hand %s its socket: %w", base, err)
	}
	return nil
}

// tidy cleans go-fuse's report of a failed fusermount3 (a user's mount;
// fusermount3 has printed why): "fusermount exited with code 256\n" gives
// a wait status where an exit status is meant, and a trailing newline.
func tidy(err error) error {
	if msg := err.Error(); strings.TrimSpace(msg) != msg || goFuseExit.MatchString(msg) {
		return tidied{err}
	}
	return err
}

var goFuseExit = regexp.MustCompile(`fusermount exited with code (\d+)`)

type tidied struct{ error }

func (t tidied) Error() string {
	return goFuseExit.ReplaceAllStringFunc(strings.TrimSpace(t.error.Error()), func(m string) string {
		code, _ := strconv.Atoi(goFuseExit.FindStringSubmatch(m)[1])
		return fmt.Sprintf("fusermount exited with status %d", syscall.WaitStatus(code).ExitStatus())
	})
}

func (t tidied) Unwrap() error { return t.error }

func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
