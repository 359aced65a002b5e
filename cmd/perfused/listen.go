package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
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

// listenAndServe is listening mode: one mount per connection, many at
// once, until SIGINT/SIGTERM.
func (d *daemon) listenAndServe(flagPath string) error {
	path := socketPath(flagPath)
	l, err := listen(path)
	if err != nil {
		return err
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
			d.log.Warn("perfused: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		f, err := c.File() // a dup, blocking
		c.Close()
		if err != nil {
			d.log.Warn("perfused: connection", "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.serveConn(f)
		}()
	}
	wg.Wait()
	return nil
}

// serveConn serves the one mount of a connection. Failures are logged:
// they end that mount, never the daemon.
func (d *daemon) serveConn(f *os.File) {
	// A client that connects and says nothing must not hold a goroutine
	// and a descriptor for ever, nor keep perfused from exiting.
	if err := awaitFrame(f, frameWait); err != nil {
		f.Close()
		d.log.Warn("perfused: no mount request", "err", err)
		return
	}
	mi, err := perfuse.ReadMountFrame(f)
	if err != nil {
		f.Close()
		d.log.Warn("perfused: bad mount request", "err", err)
		return
	}
	d.log.Info("perfused: mount request", "target", mi.Target, "source", mi.Source, "uid", mi.UID, "pid", mi.PID)
	switch err := d.serve(f, mi); {
	case err == nil:
		d.log.Info("perfused: unmounted", "target", mi.Target)
	case errors.Is(err, errDaemonGone):
		d.log.Warn("perfused: "+err.Error(), "target", mi.Target)
	default:
		d.log.Warn("perfused: mount refused or failed", "target", mi.Target, "uid", mi.UID, "err", err)
	}
}

// frameWait bounds how long a new connection may take to send its mount
// frame.
const frameWait = 10 * time.Second

// awaitFrame waits until f has a record to read, or times out.
func awaitFrame(f *os.File, wait time.Duration) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var perr error
	deadline := time.Now().Add(wait)
	cerr := rc.Control(func(fd uintptr) {
		for {
			ms := int(time.Until(deadline) / time.Millisecond)
			if ms <= 0 {
				n, perr = 0, nil
				return
			}
			n, perr = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
			if perr != unix.EINTR {
				return
			}
		}
	})
	switch {
	case cerr != nil:
		return cerr
	case perr != nil:
		return perr
	case n == 0:
		return fmt.Errorf("no mount frame within %v: %w", wait, syscall.ETIMEDOUT)
	}
	return nil
}
