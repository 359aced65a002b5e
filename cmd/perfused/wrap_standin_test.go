package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/fusermount"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
)

// In a wrapped daemon's namespace the stand-in fusermount is perfused's
// executable, here this test binary, run under fusermount's name with
// whatever environment the daemon gives it (go-fuse: none, so no
// PERFUSED_TEST_ROLE): it must play its part before TestMain runs tests.
func init() {
	if fusermount.IsStandin(os.Args[0]) {
		status, _ := fusermount.Run(os.Args)
		os.Exit(status)
	}
}

// testDaemon builds the daemon of internal/testdaemon named (the build
// cache makes this quick after the first time) and returns its path.
func testDaemon(t *testing.T, name string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command(gobin, "build", "-o", bin, "github.com/perfuse-go/perfuse/internal/testdaemon/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// A go-fuse daemon given its real mountpoint: go-fuse runs fusermount with
// an empty environment and only its own socket as fd 3, and then probes
// the mount; its -ro reaches the kernel mount (EROFS).
func TestWrapStandinGoFuse(t *testing.T) {
	needStandin(t)
	bin := testDaemon(t, "gofusefs")
	src, target := t.TempDir(), t.TempDir()
	kerneltest.MakeTree(t, src)
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, target, "--", bin, "-ro", src, target)
	defer watchdog(t, pd, target, 60*time.Second)()
	waitMounted(t, target, pd)
	kerneltest.CompareTrees(t, src, target)
	opts, line := mountOptions(t, target)
	if !opts["ro"] || !strings.HasPrefix(line, "gofusefs ") || !strings.Contains(line, " fuse.gofusefs ") {
		t.Errorf("/proc/mounts %q: want ro, source gofusefs, type fuse.gofusefs", line)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write on a -ro mount: %v, want EROFS", err)
	}
	unmountAndCheck(t, pd, target)
}

// A bazil.org/fuse daemon (rclone's library) given its real mountpoint: it
// puts its own socket on fusermount's fd 3, and checks, as rclone does,
// that the mountpoint is not mounted yet. Its ReadOnly() reaches the
// kernel mount.
func TestWrapStandinBazil(t *testing.T) {
	needStandin(t)
	bin := testDaemon(t, "bazilfs")
	target := t.TempDir()
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, target, "--", bin, target)
	defer watchdog(t, pd, target, 60*time.Second)()
	waitMounted(t, target, pd)
	if b, err := os.ReadFile(filepath.Join(target, "hello")); err != nil || string(b) != "hello from bazil\n" {
		t.Errorf("read through the mount: %q, %v", b, err)
	}
	opts, line := mountOptions(t, target)
	if !opts["ro"] || !strings.HasPrefix(line, "bazilfs ") || !strings.Contains(line, " fuse.bazilfs ") {
		t.Errorf("/proc/mounts %q: want ro, source bazilfs, type fuse.bazilfs", line)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write on a read-only mount: %v, want EROFS", err)
	}
	unmountAndCheck(t, pd, target)
}

// A daemon that calls mount(2) itself and never runs fusermount (ntfs-3g's
// built-in FUSE; mount(8) does the same) gets a refusal that says so.
func TestWrapStandinDaemonThatMountsItself(t *testing.T) {
	needStandin(t, "mount", "ntfs-3g", "mkntfs")
	img := filepath.Join(t.TempDir(), "ntfs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil || os.Truncate(img, 16<<20) != nil {
		t.Fatal("make the image file")
	}
	if out, err := exec.Command("mkntfs", "-q", "-F", "-f", img).CombinedOutput(); err != nil {
		t.Fatalf("mkntfs: %v\n%s", err, out)
	}
	for _, c := range []struct {
		name string
		argv func(target string) []string
	}{
		{"ntfs-3g", func(target string) []string { return []string{"ntfs-3g", "-o", "ro", img, target} }},
		{"mount", func(target string) []string { return []string{"mount", "-t", "tmpfs", "none", target} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := t.TempDir()
			detachAtCleanup(t, target)
			pd := start(t, "perfused", nil, nil, append([]string{target, "--"}, c.argv(target)...)...)
			err := pd.wait(t, 15*time.Second)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Errorf("perfused exit: %v, want status 1", err)
			}
			for _, w := range []string{c.name + " exited", "without running fusermount", "calls mount(2) itself", "EPERM"} {
				if !strings.Contains(pd.out.String(), w) {
					t.Errorf("perfused's message lacks %q:\n%s", w, pd.out)
				}
			}
			if kerneltest.Mounted(target) {
				t.Error("something is mounted")
			}
		})
	}
}

// A go-fuse daemon on /dev/fd/3 mounts nothing, so its own -ro never
// reaches a kernel: perfused refuses to mount without it, and once
// perfused's -o ro settles it the mount is read-only.
func TestWrapGoFuseFlagOnDevFd(t *testing.T) {
	kerneltest.NeedMount(t)
	bin := testDaemon(t, "gofusefs")
	src, target := t.TempDir(), t.TempDir()
	writeTree(t, src, "go-fuse")
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, target, "--", bin, "-ro", src, "/dev/fd/3")
	if err := pd.wait(t, 10*time.Second); err == nil || !strings.Contains(pd.out.String(), `flag "-ro"`) {
		t.Errorf("-ro on /dev/fd/3 without perfused -o ro: %v\n%s", err, pd.out)
	}
	pd = start(t, "perfused", nil, nil, "-o", "ro", target, "--", bin, "-ro", src, "/dev/fd/3")
	defer watchdog(t, pd, target, 60*time.Second)()
	waitMounted(t, target, pd)
	if b, err := os.ReadFile(filepath.Join(target, "hello.txt")); err != nil || string(b) != "hello from go-fuse\n" {
		t.Errorf("read through the mount: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write: %v, want EROFS", err)
	}
	unmountAndCheck(t, pd, target)
}
