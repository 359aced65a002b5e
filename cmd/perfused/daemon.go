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

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/policy"
)

// initTimeout bounds FUSE INIT plus the kernel mount.
const initTimeout = 30 * time.Second

// errDaemonGone is returned when a mount ended because its FUSE daemon
// exited or died rather than by an unmount.
var errDaemonGone = errors.New("FUSE daemon exited while mounted")

// daemon is one perfused process: its settings and its live mounts.
type daemon struct {
	f   *flags
	log *slog.Logger

	mu       sync.Mutex
	mounts   map[*mount]bool
	tracing  bool
	diagOn   bool // with -s: whether the -d classes are on now
	stopping bool
	onStop   func() // after a signal has unmounted everything
}

// mount is one live session.
type mount struct {
	u *perfuse.Usermount
	m *kernel.Mounter
}

func newDaemon(f *flags) *daemon {
	d := &daemon{f: f, log: slog.Default(), mounts: map[*mount]bool{}, tracing: f.diag&perfuse.DiagTrace != 0, diagOn: !f.swap}
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
	cfg, dir, err := policy.Decide(mi, d.f.opts, d.log)
	if err != nil {
		sock.Close()
		return err
	}
	defer dir.Close()
	cfg.Logger = d.log
	cfg.Debug = d.sessionDiag()&perfuse.DiagPuffs != 0
	m := kernel.NewMounter(cfg)
	diag := d.sessionDiag()
	cb, err := perfuse.SocketCallbacks(sock, perfuse.WithLogger(d.log))
	if err != nil {
		return err
	}
	u, err := perfuse.Init(cb, mi, perfuse.WithMounter(m), perfuse.WithLogger(d.log), perfuse.WithDiag(diag))
	if err != nil {
		cb.Umount(nil)
		return err
	}
	mt := &mount{u: u, m: m}
	if !d.add(mt) {
		cb.Umount(u)
		return errors.New("perfused is stopping")
	}
	defer d.remove(mt)
	ctx, cancel := context.WithTimeout(context.Background(), initTimeout)
	err = u.FsInit(ctx)
	cancel()
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		u.Unmount(ctx)
		cancel()
		return err
	}
	// dir stays open while mounted: the unmount goes through it.
	minor, _, maxWrite, _ := u.Negotiated()
	d.log.Debug("perfused: mounted", "target", mi.Target, "source", mi.Source, "owner", mi.UID,
		"daemon_minor", minor, "max_write", maxWrite)
	if missing := kernel.Missing(u); len(missing) > 0 {
		d.log.Debug("perfused: operations this perfuse lacks answer ENOSYS", "ops", strings.Join(missing, ","))
	}
	merr := u.Mainloop()
	<-m.Done()
	if m.Err() != nil {
		if merr == nil {
			merr = m.Err()
		}
		return fmt.Errorf("%w (%v); %s unmounted", errDaemonGone, merr, mi.Target)
	}
	return nil
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
	f := os.NewFile(uintptr(fd), "fuse-socket")
	if f == nil {
		return fmt.Errorf("-i %d: bad descriptor", fd)
	}
	syscall.CloseOnExec(fd)
	mi, err := perfuse.ReadMountFrame(f)
	if err != nil {
		f.Close()
		return err
	}
	if err := d.serve(f, mi); err != nil {
		return fmt.Errorf("%s: %w", mi.Target, err)
	}
	return nil
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
func (d *daemon) stop(s os.Signal) {
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	d.log.Info("perfused: unmounting on signal", "signal", s)
	var wg sync.WaitGroup
	for _, mt := range d.live() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := mt.m.Unmount(ctx); err != nil {
				d.log.Warn("perfused: unmount", "target", mt.m.Target(), "err", err)
			}
		}()
	}
	wg.Wait()
	if d.onStop != nil {
		d.onStop()
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

// traceDir returns where dumps go: -t, else /run/perfused, else the
// temporary directory.
func (d *daemon) traceDir() string {
	if d.f.traceDir != "" {
		return d.f.traceDir
	}
	dir := "/run/perfused"
	if err := os.MkdirAll(dir, 0o755); err == nil && syscall.Access(dir, 2) == nil {
		return dir
	}
	return os.TempDir()
}

// tracePath names a mount's dump as upstream does: the target with every
// "/" made "-", after "perfused" and before ".trace".
func tracePath(dir, target string) string {
	return filepath.Join(dir, "perfused"+strings.ReplaceAll(target, "/", "-")+".trace")
}

func (d *daemon) dumpTrace(mt *mount) (string, error) {
	path := tracePath(d.traceDir(), mt.m.Target())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	if err := mt.u.TraceDump(f); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}
