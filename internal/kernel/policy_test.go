package kernel_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"github.com/perfuse-go/perfuse/internal/policy"
	"golang.org/x/sys/unix"
)

// The mount's owner renames a directory above the mountpoint and leaves a
// symlink in its place: the unmount, as root, goes through the descriptor
// of the directory checked at mount time, so it removes the relay's mount
// and nobody else's.
func TestUnmountIgnoresSwappedPath(t *testing.T) {
	kerneltest.NeedMount(t)
	base := t.TempDir()
	victim := filepath.Join(base, "victim", "x")
	if err := os.MkdirAll(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", victim, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(victim, unix.MNT_DETACH)

	a := filepath.Join(base, "a")
	target := filepath.Join(a, "x")
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := policy.OpenMountpoint(target, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	r := kerneltest.MountAt(t, gofusepeer.ServeLoopback(t, t.TempDir()), target, kernel.Config{Dir: dir})
	if err := os.Rename(a, filepath.Join(base, "b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "victim"), a); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.M.Unmount(ctx); err != nil {
		t.Errorf("Unmount: %v", err)
	}
	if !kerneltest.Mounted(victim) {
		t.Errorf("the unmount followed the swapped path and removed %s", victim)
	}
	if moved := filepath.Join(base, "b", "x"); kerneltest.Mounted(moved) {
		t.Errorf("the relay mount is still at %s", moved)
		unix.Unmount(moved, unix.MNT_DETACH)
	}
}

// A FIFO named like go-fuse's poll-hack file in the mountpoint directory
// must not block the mount: nothing in the user's directory is opened as
// root.
func TestMountIgnoresPlantedPollHackFile(t *testing.T) {
	kerneltest.NeedMount(t)
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, ".go-fuse-epoll-hack"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := policy.OpenMountpoint(dir, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		kerneltest.MountAt(t, gofusepeer.ServeLoopback(t, t.TempDir()), dir, kernel.Config{Dir: f})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("mount blocked on the planted FIFO")
		// Unblock it: open the FIFO for writing in the directory beneath.
		if w, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d/.go-fuse-epoll-hack", f.Fd()), os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
	}
}
