package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/policy"
	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

// socketPath is -l, else $PERFUSE_SOCKET, else the default.
func socketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if p := os.Getenv("PERFUSE_SOCKET"); p != "" {
		return p
	}
	return perfuse.DefaultSocketPath
}

// listen binds a SEQPACKET socket at path. A socket file nobody listens
// on (left by a perfused that died) is replaced; a live one is an error.
func listen(path string) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unixpacket"}
	l, err := net.ListenUnix("unixpacket", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		if c, cerr := net.DialTimeout("unixpacket", path, time.Second); cerr == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another perfused is listening there", path)
		}
		if st, serr := os.Lstat(path); serr == nil && st.Mode()&os.ModeSocket != 0 {
			os.Remove(path)
			l, err = net.ListenUnix("unixpacket", addr)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	// Anyone may connect; each mount is checked against its owner.
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, err
	}
	l.SetUnlinkOnClose(true)
	return l, nil
}

// activated returns the listening socket systemd passed (socket
// activation: LISTEN_PID is us, LISTEN_FDS is 1, the socket is fd 3), or
// nil. Its unit decides its path, owner and mode (SocketMode=,
// SocketGroup=), and it is left in place at exit.
func activated() (*net.UnixListener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		return nil, nil
	}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v) // not for the daemons we start
	}
	if n != 1 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%d, want one socket", n)
	}
	f := os.NewFile(3, "systemd-socket")
	defer f.Close()
	syscall.CloseOnExec(3)
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok || ul.Addr().Network() != "unixpacket" {
		ln.Close()
		return nil, fmt.Errorf("socket activation: fd 3 is not a SEQPACKET unix socket (ListenSequentialPacket=)")
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// listenAndServe is listening mode: one mount per connection, many at
// once, until SIGINT/SIGTERM.
func (d *daemon) listenAndServe(flagPath string) error {
	path := socketPath(flagPath)
	l, err := activated()
	switch {
	case err != nil:
		return err
	case l != nil:
		path = l.Addr().String() + " (systemd)"
	default:
		if l, err = listen(path); err != nil {
			return err
		}
	}
	var once sync.Once
	d.mu.Lock()
	d.onStop = func() { once.Do(func() { l.Close() }) }
	d.mu.Unlock()
	d.log.Info("perfused: listening", "socket", path)
	var wg sync.WaitGroup
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			d.mu.Lock()
			stopping := d.stopping
			d.mu.Unlock()
			if stopping || errors.Is(err, net.ErrClosed) {
				break
			}
			// EMFILE and the like: others keep being served once
			// descriptors are free again.
			d.refusals.log(d.log, "accept", "perfused: accept failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// A non-blocking dup, so waits go through the runtime poller.
		f, err := c.File()
		c.Close()
		if err != nil {
			d.refusals.log(d.log, "accept", "perfused: connection", "err", err)
			continue
		}
		uid, ok := d.admit(f)
		if !ok {
			f.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.serveConn(f, uid)
		}()
	}
	// Every mount unmounts, or is aborted, within the grace. A session
	// can still be stuck where nothing reaches it: a thread in a system
	// call on a hung filesystem (a mountpoint inside another user's hung
	// mount). perfused exits anyway, which ends such calls.
	served := make(chan struct{})
	go func() { wg.Wait(); close(served) }()
	select {
	case <-served:
	case <-time.After(d.f.grace + stopSlack):
		d.log.Warn("perfused: connections still stuck at exit; leaving them", "after", d.f.grace+stopSlack)
	}
	return nil
}

// stopSlack is how long, past the grace, stopping waits for connections
// whose aborts are under way.
const stopSlack = 5 * time.Second

// admit counts a new connection against the pending limits (total and its
// user's). A connection over them gets a status record saying so and is
// closed at once: it never holds a goroutine.
func (d *daemon) admit(f *os.File) (uid uint32, ok bool) {
	var cred *unix.Ucred
	var err error
	if rc, rerr := f.SyscallConn(); rerr != nil {
		err = rerr
	} else if cerr := rc.Control(func(fd uintptr) { cred, err = sock.PeerCred(int(fd)) }); cerr != nil {
		err = cerr
	}
	if err != nil {
		d.refusals.log(d.log, "peercred", "perfused: connection without peer credentials refused", "err", err)
		return 0, false
	}
	if why := d.pending.take(cred.Uid, d.f.lim.PendingTotal, d.f.lim.PendingPerUser); why != "" {
		err := fmt.Errorf("too many connections waiting to mount (%s); try again later: %w", why, syscall.EAGAIN)
		d.refusals.log(d.log, why, "perfused: connection refused", "uid", cred.Uid, "pid", cred.Pid, "reason", err)
		sendStatus(f, err)
		return 0, false
	}
	return cred.Uid, true
}

// serveConn serves the one mount of a connection. Failures are logged:
// they end that mount, never the daemon.
func (d *daemon) serveConn(f *os.File, uid uint32) {
	var once sync.Once
	admitted := func() { once.Do(func() { d.pending.give(uid) }) }
	defer admitted()
	// A client that connects and says nothing must not hold a descriptor
	// for ever, nor keep perfused from exiting.
	if err := d.awaitFrame(f, frameWait); err != nil {
		f.Close()
		d.refusals.log(d.log, fmt.Sprint("noframe ", uid), "perfused: no mount request", "uid", uid, "err", err)
		return
	}
	mi, err := perfuse.ReadMountFrame(f)
	if err != nil {
		sendStatus(f, err)
		f.Close()
		d.refusals.log(d.log, fmt.Sprint("badframe ", uid), "perfused: bad mount request", "uid", uid, "err", err)
		return
	}
	d.log.Debug("perfused: mount request", "target", policy.Clip(mi.Target), "source", policy.Clip(mi.Source), "uid", mi.UID, "pid", mi.PID)
	err = d.serveMount(f, mi, true, admitted)
	var refused refusal
	switch {
	case err == nil:
		d.log.Info("perfused: unmounted", "target", mi.Target)
	case errors.As(err, &refused):
		d.refusals.log(d.log, fmt.Sprint("refused ", mi.UID), "perfused: mount refused", "target", mi.Target, "uid", mi.UID, "pid", mi.PID, "err", err)
	case errors.Is(err, errDaemonGone):
		d.log.Warn("perfused: "+err.Error(), "target", mi.Target)
	default:
		d.refusals.log(d.log, fmt.Sprint("failed ", mi.UID), "perfused: mount failed", "target", mi.Target, "uid", mi.UID, "err", err)
	}
}

// frameWait bounds how long a new connection may take to send its mount
// frame. In -i mode the peer is the process that started perfused, which
// may open the socket well before it mounts: it gets inheritedFrameWait.
const (
	frameWait          = 10 * time.Second
	inheritedFrameWait = 2 * time.Minute
)

// errStopping refuses work once perfused is stopping.
var errStopping = errors.New("perfused is stopping")

// awaitFrame waits until f, a non-blocking socket, has a record to read,
// or times out. The wait is the runtime poller's: no thread is held.
// armed, called once the deadline is set, may move the deadline (to cut the
// wait short) and returns false to give up at once.
func awaitFrame(f *os.File, wait time.Duration, armed func() bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if err := f.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	defer f.SetReadDeadline(time.Time{})
	if !armed() {
		return errStopping
	}
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, perr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// A record, an end of file or an error: ReadMountFrame says which.
		return perr != unix.EAGAIN && perr != unix.EINTR
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("no mount frame within %v: %w", wait, syscall.ETIMEDOUT)
	}
	return err
}

// sendStatus answers a mount frame with a refusal (perfuse.Mount returns
// it to the client). It never waits: a client whose socket is full gets
// only the close.
func sendStatus(f *os.File, refusal error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.Sendmsg(int(fd), perfuse.EncodeMountStatus(refusal), nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	})
}

// limits bound what clients may hold. Root's connections and mounts are
// counted but never refused.
type limits struct {
	// PendingTotal and PendingPerUser bound connections not yet mounted:
	// from accept until INIT and the kernel mount are done.
	PendingTotal, PendingPerUser int
	// MountsTotal and MountsPerUser bound live mounts of users other
	// than root (fusermount3's mount_max is a total).
	MountsTotal, MountsPerUser int
}

// Defaults for limits. mount_max comes from /etc/fuse.conf when set there.
const (
	defaultPendingTotal   = 128
	defaultPendingPerUser = 16
	defaultMountMax       = 1000 // fusermount3's default mount_max
	defaultMountsPerUser  = 100
)

// counter counts held resources in total and per user.
type counter struct {
	mu    sync.Mutex
	total int
	byUID map[uint32]int
}

// take counts one more for uid, unless that would pass total or perUser
// (0: no limit); it then returns which limit, and counts nothing.
func (c *counter) take(uid uint32, total, perUser int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byUID == nil {
		c.byUID = map[uint32]int{}
	}
	if uid != 0 {
		if perUser > 0 && c.byUID[uid] >= perUser {
			return fmt.Sprintf("limit of %d for uid %d reached", perUser, uid)
		}
		if total > 0 && c.total >= total {
			return fmt.Sprintf("limit of %d in total reached", total)
		}
	}
	c.total++
	c.byUID[uid]++
	return ""
}

func (c *counter) give(uid uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byUID[uid]--; c.byUID[uid] <= 0 {
		delete(c.byUID, uid)
	}
}

// refusalLog logs each kind of refusal once, then at most once per
// refusalEvery with the number left unsaid, so a flood of refused clients
// cannot flood the log.
type refusalLog struct {
	mu   sync.Mutex
	kind map[string]*refusalKind
}

type refusalKind struct {
	last       time.Time
	suppressed int
}

const refusalEvery = 10 * time.Second

func (r *refusalLog) log(l *slog.Logger, kind, msg string, args ...any) {
	r.mu.Lock()
	if r.kind == nil || len(r.kind) > 1024 {
		r.kind = map[string]*refusalKind{}
	}
	k := r.kind[kind]
	if k == nil {
		k = &refusalKind{}
		r.kind[kind] = k
	}
	now := time.Now()
	if !k.last.IsZero() && now.Sub(k.last) < refusalEvery {
		k.suppressed++
		r.mu.Unlock()
		return
	}
	if k.suppressed > 0 {
		args = append(args, "similar_refusals_not_logged", k.suppressed)
	}
	k.last, k.suppressed = now, 0
	r.mu.Unlock()
	l.Warn(msg, args...)
}
