package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/kerneltest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("PERFUSE_TEST_STRICT") == "1" {
			t.Fatal("needs root and PERFUSE_TEST_STRICT=1")
		}
		t.Skip("needs root to act as other users")
	}
}

// A user's own /proc/PID and /proc/PID/fd are theirs and readable, but a
// mount there would hide the process from root: procfs is not on the
// fstype allowlist.
func TestProcMountpointsRefused(t *testing.T) {
	needRoot(t)
	const uid = 1000
	p := exec.Command("sleep", "60")
	p.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Process.Kill(); p.Wait() })
	for _, target := range []string{fmt.Sprintf("/proc/%d", p.Process.Pid), fmt.Sprintf("/proc/%d/fd", p.Process.Pid)} {
		f, err := OpenMountpoint(target, uid, true)
		if f != nil {
			f.Close()
		}
		if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "file system type") {
			t.Errorf("OpenMountpoint(%s, uid %d, ro) = %v, want EPERM for the file system type", target, uid, err)
		}
	}
	// sysfs too, for a directory the user owns there if any: none is, so
	// the type check is shown on a tmpfs (allowed) instead.
	dir := reachableTempDir(t)
	os.Chown(dir, uid, uid)
	f, err := OpenMountpoint(dir, uid, false)
	if err != nil {
		t.Errorf("a directory of uid %d on %s: %v", uid, dir, err)
	} else {
		f.Close()
	}
}

// A target under a parent only root may search is refused as the user
// would be refused: the same EACCES whether it exists or not.
func TestMountpointLookedUpWithOwnersRights(t *testing.T) {
	needRoot(t)
	const uid = 1000
	base := reachableTempDir(t)
	secret := filepath.Join(base, "secret")
	mine := filepath.Join(secret, "mine")
	if err := os.MkdirAll(mine, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(secret, 0o700)
	os.Chown(mine, uid, uid)
	var msgs []string
	for _, target := range []string{mine, filepath.Join(secret, "absent")} {
		f, err := OpenMountpoint(target, uid, false)
		if f != nil {
			f.Close()
		}
		if !errors.Is(err, syscall.EACCES) {
			t.Errorf("OpenMountpoint(%s, uid %d) = %v, want EACCES", target, uid, err)
			continue
		}
		msgs = append(msgs, strings.Replace(err.Error(), target, "TARGET", 1))
	}
	if len(msgs) == 2 && msgs[0] != msgs[1] {
		t.Errorf("the refusal tells an existing target from a missing one:\n%s\n%s", msgs[0], msgs[1])
	}
	// The owner's supplementary groups count, as they would for the owner.
	shared := filepath.Join(base, "group")
	ours := filepath.Join(shared, "ours")
	os.MkdirAll(ours, 0o755)
	os.Chown(shared, 0, 4242)
	os.Chmod(shared, 0o750)
	os.Chown(ours, uid, uid)
	if f, err := OpenMountpointAs(context.Background(), ours, Owner{UID: uid, GID: uid, Groups: []uint32{4242}}, false); err != nil {
		t.Errorf("with group 4242, %s: %v", ours, err)
	} else {
		f.Close()
	}
	if _, err := OpenMountpointAs(context.Background(), ours, Owner{UID: uid, GID: uid}, false); !errors.Is(err, syscall.EACCES) {
		t.Errorf("without group 4242, %s: %v, want EACCES", ours, err)
	}
}

// A target inside a hung FUSE mount fails within ResolveTimeout, and the
// lookup helper, killed, is gone soon after.
func TestMountpointInHungMountTimesOut(t *testing.T) {
	needRoot(t)
	old := ResolveTimeout
	ResolveTimeout = 300 * time.Millisecond
	t.Cleanup(func() { ResolveTimeout = old })
	dir := kerneltest.HungMount(t)
	target := filepath.Join(dir, "sub")
	for i := range 3 {
		start := time.Now()
		_, err := OpenMountpoint(target, 1000, false)
		if took := time.Since(start); took > ResolveTimeout+2*time.Second {
			t.Errorf("lookup %d took %v, bound %v", i, took, ResolveTimeout)
		}
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Errorf("lookup %d in a hung mount: %v, want ETIMEDOUT", i, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for helpersOf(target) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d lookup helpers still alive 5s after they were given up on", helpersOf(target))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Others are not held up meanwhile.
	other := reachableTempDir(t)
	os.Chown(other, 1001, 1001)
	if f, err := OpenMountpoint(other, 1001, false); err != nil {
		t.Errorf("uid 1001's own directory: %v", err)
	} else {
		f.Close()
	}
}

// helpersOf counts the lookup helpers alive for target.
func helpersOf(target string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), helperFlag+"\x00"+target) {
			if st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); !strings.Contains(string(st), ") Z ") {
				n++
			}
		}
	}
	return n
}

// Lookups given up on but not over count against their owner only.
func TestStuckLookupsBounded(t *testing.T) {
	var over []func()
	for range maxStuckPerUser {
		over = append(over, giveUp(7))
	}
	if !tooManyStuck(7) || tooManyStuck(8) {
		t.Errorf("with %d stuck lookups of uid 7: uid 7 refused %v, uid 8 refused %v", maxStuckPerUser, tooManyStuck(7), tooManyStuck(8))
	}
	for _, f := range over {
		f()
	}
	if tooManyStuck(7) {
		t.Error("uid 7 still refused once its lookups are over")
	}
}

// A lookup stuck in a hung mount ends when its context does (perfused
// stopping), well before ResolveTimeout.
func TestMountpointLookupEndsWithContext(t *testing.T) {
	needRoot(t)
	dir := kerneltest.HungMount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := OpenMountpointAs(ctx, filepath.Join(dir, "sub"), Owner{UID: 1000, GID: 1000}, false)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("lookup took %v after its context ended (ResolveTimeout %v)", took, ResolveTimeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lookup in a hung mount with an ending context: %v, want its deadline", err)
	}
}
