package kerneltest

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// HungMount mounts, at a new directory every user can search, a FUSE file
// system whose daemon never answers (not even INIT), with allow_other:
// every lookup in it, by anyone, blocks. At cleanup its connection is
// aborted (the blocked lookups fail) and it is detached.
func HungMount(t testing.TB) string {
	t.Helper()
	NeedMount(t)
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "hung-")
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", dev.Fd())
	if err := unix.Mount("hung", dir, "fuse.hung", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		dev.Close()
		os.Remove(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dev.Close()
		unix.Unmount(dir, unix.MNT_DETACH)
		os.Remove(dir)
	})
	return dir
}
