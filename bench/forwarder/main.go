// Command forwarder is the least a FUSE relay can do, the baseline the
// benchmarks hold perfused against: it mounts MOUNTPOINT with /dev/fuse,
// starts COMMAND with a SEQPACKET socket as fd 3, and copies FUSE frames
// unchanged between the two, one goroutine each way, with no decoding and
// no policy.
//
//	forwarder MOUNTPOINT -- COMMAND [ARGS...]
//
// COMMAND takes /dev/fd/3 for its mountpoint, as under perfused's wrap mode.
// The socket gets the buffers perfused gives it (PERFUSE_BUFSIZE). It runs
// until MOUNTPOINT is unmounted or COMMAND closes the socket; SIGINT or
// SIGTERM unmounts. It must run as root.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

// bufSize holds any frame: the kernel's largest WRITE (1 MiB) and its
// headers, and any reply a daemon may send.
const bufSize = 1<<20 + 4096

// exitWait is how long COMMAND gets to exit once its socket is shut.
const exitWait = 5 * time.Second

func main() {
	if len(os.Args) < 4 || os.Args[2] != "--" {
		fmt.Fprintln(os.Stderr, "usage: forwarder MOUNTPOINT -- COMMAND [ARGS...]")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[3:]); err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
}

func run(mnt string, argv []string) error {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		return err
	}
	size := int(perfuse.BufVarFromEnv("PERFUSE_BUFSIZE", perfuse.DefaultBufSize))
	for _, f := range []*os.File{ours, theirs} {
		if err := sock.SetBuffers(int(f.Fd()), size); err != nil {
			return err
		}
	}
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/fuse: %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d", dev, os.Getuid(), os.Getgid())
	if err := unix.Mount("bench", mnt, "fuse.bench", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		unix.Unmount(mnt, unix.MNT_DETACH)
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	theirs.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		unix.Unmount(mnt, unix.MNT_DETACH)
	}()

	s := int(ours.Fd())
	done := make(chan error, 2)
	go func() { done <- toDaemon(dev, s) }()
	go func() { done <- toKernel(s, dev) }()
	err = <-done
	// Whichever side ended, end the other: the mount goes (a reader of
	// /dev/fuse then gets ENODEV) and the daemon sees its socket close.
	unix.Unmount(mnt, unix.MNT_DETACH)
	unix.Shutdown(s, unix.SHUT_RDWR)
	select {
	case <-exited:
	case <-time.After(exitWait):
		cmd.Process.Kill()
		<-exited
	}
	return err
}

// toDaemon copies requests from the kernel to the daemon until the mount
// goes away. It blocks its thread in read(2) on purpose: that is what a
// minimal C forwarder does, and the cheapest way to wait.
func toDaemon(dev, s int) error {
	buf := make([]byte, bufSize)
	for {
		n, err := unix.Read(dev, buf)
		switch {
		case errors.Is(err, unix.ENODEV):
			return nil // unmounted
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOENT):
			continue // ENOENT: the request was interrupted before it was read
		case err != nil:
			return fmt.Errorf("read /dev/fuse: %w", err)
		}
		if err := unix.Sendto(s, buf[:n], unix.MSG_NOSIGNAL, nil); err != nil {
			return fmt.Errorf("send to daemon: %w", err)
		}
	}
}

// toKernel copies replies and notifications from the daemon to the kernel
// until the daemon closes its socket.
func toKernel(s, dev int) error {
	buf := make([]byte, bufSize)
	for {
		n, err := unix.Read(s, buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("read from daemon: %w", err)
		case n == 0:
			return errors.New("daemon closed its socket")
		}
		// ENOENT: the request was interrupted and is gone; the kernel
		// drops the reply, and so do we.
		if _, err := unix.Write(dev, buf[:n]); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINTR) {
			if errors.Is(err, unix.ENODEV) {
				return nil
			}
			return fmt.Errorf("write /dev/fuse: %w", err)
		}
	}
}
