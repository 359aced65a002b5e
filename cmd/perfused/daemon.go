package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/policy"
	"golang.org/x/sys/unix"
)

// initTimeout bounds how long wrap mode waits for a wrapped daemon's
// stand-in fusermount.
const initTimeout = 30 * time.Second

// initWindow bounds FUSE INIT plus the kernel mount: a connection whose
// daemon does not answer INIT holds its descriptor no longer. Past it by
// initSlack, the socket is closed whatever the exchange does.
const (
	initWindow = 10 * time.Second
	initSlack  = 2 * time.Second
)

// abortWait bounds how long an aborted mount may take to end before its
// session is ended without it.
const abortWait = 5 * time.Second

// errDaemonGone is returned when a mount ended because its FUSE daemon
// exited or died rather than by an unmount.
var errDaemonGone = errors.New("FUSE daemon exited while mounted")

// daemon is one perfused process: its settings and its live mounts.
type daemon struct {
	f   *flags
	log *slog.Logger

	// ctx ends when perfused stops: mounts in their INIT window give up.
	ctx    context.Context
	cancel context.CancelFunc

	pending  counter // connections not yet mounted, by their uid
	owned    counter // live mounts, by their owner
	refusals refusalLog

	mu       sync.Mutex
	mounts   map[*mount]bool
	waiting  map[*os.File]bool // connections waiting for their mount frame
	tracing  bool
	diagOn   bool // with -s: whether the -d classes are on now
	stopping bool
	onStop   func() // after a signal has unmounted everything
}

// mount is one live session.
type mount struct {
	u *perfuse.Usermount
	m *kernel.Mountpoint
}

func newDaemon(f *flags) *daemon {
	d := &daemon{f: f, log: slog.Default(), mounts: map[*mount]bool{}, waiting: map[*os.File]bool{},
		tracing: f.diag&perfuse.DiagTrace != 0, diagOn: !f.swap}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.handleSignals()
	return d
}

// sessionDiag is the diagnostic classes a new session starts with.
func (d *daemon) sessionDiag() perfuse.Diag {
	d.mu.Lock()
	defer d.mu.Unlock()
	var diag perfuse.Diag
	if d.diagOn {
		diag = d.f.diag &^ perfuse.DiagTrace
	}
	if d.tracing {
		diag |= perfuse.DiagTrace
	}
	return diag
}

// serve runs one mount to its end: policy, Init on the socket, INIT and
// the kernel mount, the relay. It returns nil after an unmount,
// errDaemonGone if the daemon left first, or why the mount was refused.
func (d *daemon) serve(sock *os.File, mi *perfuse.MountInfo) error {
	return d.serveMount(sock, mi, false, nil)
}

// refusal is an error that refused a mount before INIT.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

// serveMount is serve for a mount asked for by a mount frame (answer):
// refusals are answered with a mount status record (perfuse.Mount returns
// it). admitted, if set, is called once INIT and the kernel mount are done.
func (d *daemon) serveMount(sock *os.File, mi *perfuse.MountInfo, answer bool, admitted func()) error {
	refuse := func(err error) error {
		if answer {
			sendStatus(sock, err)
		}
		sock.Close()
		return refusal{err}
	}
	lim := d.f.lim
	if why := d.owned.take(mi.UID, lim.MountsTotal, lim.MountsPerUser); why != "" {
		return refuse(fmt.Errorf("too many FUSE mounts: %s (mount_max in %s, or perfused -mount-max): %w", why, policy.FuseConf, syscall.EUSERS))
	}
	defer d.owned.give(mi.UID)
	cfg, dir, err := policy.Decide(d.ctx, mi, peerGroups(sock, mi.UID), d.f.opts, d.log)
	if err != nil {
		return refuse(err)
	}
	defer dir.Close()
	cfg.Logger = d.log
	cfg.Debug = d.sessionDiag()&perfuse.DiagPuffs != 0
	diag := d.sessionDiag()
	cb, err := perfuse.SocketCallbacks(sock, perfuse.WithLogger(d.log))
	if err != nil {
		return refuse(err)
	}
	u, err := perfuse.Init(cb, mi, perfuse.WithLogger(d.log), perfuse.WithDiag(diag))
	if err != nil {
		cb.Umount(nil)
		return err
	}
	ctx, cancel := context.WithTimeout(d.ctx, initWindow)
	// Whatever the exchange does with ctx, the socket goes at the end of
	// the window.
	watchdog := time.AfterFunc(initWindow+initSlack, func() { cb.Umount(u) })
	var m *kernel.Mountpoint
	mainloop := make(chan error, 1)
	if err = u.FsInit(ctx); err == nil {
		go func() { mainloop <- u.Mainloop() }()
		m, err = kernel.Mount(ctx, u, cfg)
	}
	watchdog.Stop()
	cancel()
	if err != nil {
		// Nothing was mounted, and a daemon that failed INIT is owed no
		// DESTROY: the socket goes now.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		u.Unmount(ctx)
		return fmt.Errorf("INIT or mount within %v: %w", initWindow, err)
	}
	if admitted != nil {
		admitted()
	}
	mt := &mount{u: u, m: m}
	if !d.add(mt) {
		m.Abort()
		select {
		case <-m.Done():
		case <-time.After(abortWait):
		}
		return errStopping
	}
	defer d.remove(mt)
	// dir stays open while mounted: the unmount goes through it.
	minor, _, maxWrite, _ := u.Negotiated()
	d.log.Info("perfused: mounted", "target", mi.Target, "source", mi.Source, "owner", mi.UID)
	d.log.Debug("perfused: negotiated", "target", mi.Target, "daemon_minor", minor, "max_write", maxWrite)
	merr := <-mainloop
	<-m.Done()
	switch err := m.Err(); {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ECONNABORTED):
		return err
	default:
		if merr == nil {
			merr = err
		}
		return fmt.Errorf("%w (%v); %s unmounted", errDaemonGone, merr, mi.Target)
	}
}

// peerGroups returns the supplementary groups of the process at the other
// end of sock (SO_PEERGROUPS) if it is uid's, else none: the mountpoint is
// then looked up with uid and gid alone, never more.
func peerGroups(sock *os.File, uid uint32) []uint32 {
	rc, err := sock.SyscallConn()
	if err != nil {
		return nil
	}
	var groups []uint32
	rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil || cred.Uid != uid {
			return
		}
		// A peer with more groups (ERANGE) gets none: fewer rights, never more.
		buf := make([]uint32, 4096)
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == 0 {
			groups = buf[:n/4]
		}
	})
	return groups
}

func (d *daemon) add(mt *mount) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return false
	}
	d.mounts[mt] = true
	return true
}

func (d *daemon) remove(mt *mount) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.mounts, mt)
}

func (d *daemon) live() []*mount {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*mount, 0, len(d.mounts))
	for mt := range d.mounts {
		out = append(out, mt)
	}
	return out
}

// serveFd is -i FD: one mount frame, one mount, then exit.
func (d *daemon) serveFd(fd int) error {
	// Non-blocking, so the wait for the frame goes through the poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("-i %d: bad descriptor: %w", fd, err)
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "fuse-socket")
	if err := d.awaitFrame(f, inheritedFrameWait); err != nil {
		f.Close()
		return err
	}
	mi, err := perfuse.ReadMountFrame(f)
	if err != nil {
		sendStatus(f, err)
		f.Close()
		return err
	}
	if err := d.serveMount(f, mi, true, nil); err != nil {
		return fmt.Errorf("%s: %w", mi.Target, err)
	}
	return nil
}

// awaitFrame is awaitFrame for a connection that stop may cut short.
func (d *daemon) awaitFrame(f *os.File, wait time.Duration) error {
	defer func() {
		d.mu.Lock()
		delete(d.waiting, f)
		d.mu.Unlock()
	}()
	return awaitFrame(f, wait, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.waiting[f] = true
		return !d.stopping
	})
}

// handleSignals: SIGINT/SIGTERM unmount everything; SIGUSR1 toggles
// tracing and dumps; SIGUSR2 toggles diagnostics (-s).
func (d *daemon) handleSignals() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for s := range ch {
			switch s {
			case syscall.SIGUSR1:
				d.toggleTrace()
			case syscall.SIGUSR2:
				d.toggleDiag()
			default:
				d.stop(s)
			}
		}
	}()
}

// stop unmounts every mount; each session then ends and perfused exits.
// A mount still in use after the grace (-grace) gets its own kernel
// connection aborted, so no process is left waiting on it, and its
// daemon's socket closed.
func (d *daemon) stop(s os.Signal) {
	d.mu.Lock()
	d.stopping = true
	for f := range d.waiting {
		f.SetReadDeadline(time.Now())
	}
	d.mu.Unlock()
	d.cancel()
	d.log.Info("perfused: unmounting on signal", "signal", s)
	var wg sync.WaitGroup
	for _, mt := range d.live() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.stopMount(mt)
		}()
	}
	wg.Wait()
	if d.onStop != nil {
		d.onStop()
	}
}

func (d *daemon) stopMount(mt *mount) {
	ctx, cancel := context.WithTimeout(context.Background(), d.f.grace)
	err := mt.m.Unmount(ctx)
	cancel()
	if err == nil {
		return
	}
	d.log.Warn("perfused: mount still in use after the grace (open files, or requests its daemon has not answered); aborting its kernel connection",
		"target", mt.m.Target(), "grace", d.f.grace, "err", err)
	mt.m.Abort()
	select {
	case <-mt.m.Done():
	case <-time.After(abortWait):
		d.log.Warn("perfused: mount not over after its abort; ending its session", "target", mt.m.Target())
		mt.u.Shutdown(fmt.Errorf("perfused stopping: %w", syscall.ECONNABORTED))
	}
}

// toggleTrace is SIGUSR1, as upstream: tracing on, or dump and off.
func (d *daemon) toggleTrace() {
	d.mu.Lock()
	d.tracing = !d.tracing
	on := d.tracing
	d.mu.Unlock()
	for _, mt := range d.live() {
		if on {
			mt.u.SetDiag(mt.u.Diag() | perfuse.DiagTrace)
			continue
		}
		if path, err := d.dumpTrace(mt); err != nil {
			d.log.Warn("perfused: trace not dumped", "target", mt.m.Target(), "err", err)
		} else {
			d.log.Info("perfused: trace dumped, trace disabled", "file", path)
		}
		mt.u.SetDiag(mt.u.Diag() &^ perfuse.DiagTrace)
	}
	if on {
		d.log.Info("perfused: trace enabled")
	}
}

// toggleDiag is SIGUSR2 with -s: swap the -d classes on or off.
func (d *daemon) toggleDiag() {
	if !d.f.swap {
		return
	}
	d.mu.Lock()
	d.diagOn = !d.diagOn
	on := d.diagOn
	d.mu.Unlock()
	for _, mt := range d.live() {
		diag := mt.u.Diag() & perfuse.DiagTrace
		if on {
			diag |= d.f.diag &^ perfuse.DiagTrace
		}
		mt.u.SetDiag(diag)
	}
	d.log.Info("perfused: debug " + map[bool]string{true: "enabled", false: "disabled"}[on])
}

// traceDir returns where dumps go: -t, else /run/perfused. There is no
// fallback to a shared temporary directory: dumps are written as root.
func (d *daemon) traceDir() string {
	if d.f.traceDir != "" {
		return d.f.traceDir
	}
	dir := "/run/perfused"
	os.MkdirAll(dir, 0o755)
	return dir
}

// traceName names a mount's dump as upstream does, "perfused" then the
// target with every "/" made "-", then ".trace"; "%" and "-" in the target
// are escaped first (%25, %2D), so two targets never share a name ("/a-b"
// is perfused-a%2Db.trace, "/a/b" perfused-a-b.trace).
func traceName(target string) string {
	esc := strings.NewReplacer("%", "%25", "-", "%2D", "/", "-").Replace(target)
	return "perfused" + esc + ".trace"
}

func tracePath(dir, target string) string { return filepath.Join(dir, traceName(target)) }

func (d *daemon) dumpTrace(mt *mount) (string, error) {
	f, err := createDump(d.traceDir(), mt.m.Target())
	if err != nil {
		return "", err
	}
	if err := mt.u.TraceDump(f); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}

// createDump creates target's dump file in dir, which must be ours and
// writable by nobody else (so nobody else can plant a name in it), as a
// new file: O_EXCL|O_NOFOLLOW, after removing our previous dump.
func createDump(dir, target string) (*os.File, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("trace directory %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return nil, fmt.Errorf("trace directory %s: %w", dir, err)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("trace directory %s is owned by uid %d with mode %o; it must be perfused's own and writable by nobody else: %w",
			dir, st.Uid, st.Mode&0o7777, syscall.EPERM)
	}
	name := traceName(target)
	if len(name) > 255 {
		return nil, fmt.Errorf("trace file name for %s longer than 255 bytes: %w", target, syscall.ENAMETOOLONG)
	}
	if err := unix.Unlinkat(dfd, name, 0); err != nil && err != unix.ENOENT {
		return nil, fmt.Errorf("trace dump %s: %w", name, err)
	}
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("trace dump %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, name)), nil
}
