package kernel_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
)

// Killing the daemon in the middle of a workload: the workload's calls
// fail (ENOTCONN, or ENOENT once the mount is gone) instead of hanging, the
// mount goes even though a process keeps it busy, and the session ends
// with an error that says the daemon left.
func TestRelayDaemonKilledDuringWorkload(t *testing.T) {
	kerneltest.NeedMount(t)
	lower, upper, work := overlayDirs(t)
	d := daemonpeer.FuseOverlayfs(t, lower, upper, work)
	r := kerneltest.Mount(t, d.Conn, kernel.Config{})

	// A process that keeps the mount busy (its working directory).
	busy := exec.Command("sh", "-c", `cd "$1" && exec sleep 60`, "sh", r.Dir)
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Process.Kill(); busy.Wait() })

	// Workers writing, reading and listing until their calls fail. They
	// work through a descriptor of the mount's root: after the lazy
	// unmount, paths would lead to the directory underneath.
	root, err := os.OpenRoot(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				p := fmt.Sprintf("w%d-%d", w, i%20)
				err := root.WriteFile(p, make([]byte, 64<<10), 0o644)
				if err == nil {
					_, err = root.ReadFile(p)
				}
				if err == nil {
					var f *os.File
					if f, err = root.Open("."); err == nil {
						_, err = f.ReadDir(-1)
						f.Close()
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	killed := time.Now()
	d.Kill()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(stop)
		t.Fatal("workload calls still running 10s after the daemon was killed")
	}
	for range 4 {
		err := <-errs
		if err == nil {
			t.Error("a worker was stopped, not failed")
			continue
		}
		if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNABORTED) {
			t.Errorf("worker error %v, want ENOTCONN (or ENOENT after the unmount)", err)
		}
	}
	select {
	case <-r.M.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("session not over 10s after the daemon was killed")
	}
	t.Logf("workload failed and session ended %v after the kill", time.Since(killed))
	if kerneltest.Mounted(r.Dir) {
		t.Error("still mounted after the daemon died")
	}
	if err := r.M.Err(); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("Mountpoint.Err() = %v, want ENOTCONN (daemon gone)", err)
	}
	if err := <-r.MainErr; err == nil {
		t.Error("Mainloop returned nil after the daemon died")
	}
}
