package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"github.com/perfuse-go/perfuse/internal/policy"
)

// needTools skips (fails under PERFUSE_TEST_STRICT=1) when a program is
// missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if kerneltest.Strict() {
				t.Fatalf("%s missing and PERFUSE_TEST_STRICT=1", tool)
			}
			t.Skipf("%s missing", tool)
		}
	}
}

// sftpServer is Debian's sftp-server (package openssh-sftp-server).
const sftpServer = "/usr/lib/openssh/sftp-server"

// sshfsArgs returns sshfs's command line serving src with opts (besides
// its ssh_command, a script that runs the local sftp-server: no sshd is
// needed), mounted at mnt.
func sshfsArgs(t *testing.T, src, opts, mnt string) []string {
	t.Helper()
	needTools(t, "sshfs")
	if _, err := os.Stat(sftpServer); err != nil {
		if kerneltest.Strict() {
			t.Fatalf("%s missing (openssh-sftp-server) and PERFUSE_TEST_STRICT=1", sftpServer)
		}
		t.Skipf("%s missing (openssh-sftp-server)", sftpServer)
	}
	script := filepath.Join(t.TempDir(), "ssh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec "+sftpServer+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{"sshfs", "-f", "-o", "ssh_command=" + script + "," + opts, "localhost:" + src, mnt}
}

// mountOptions returns the options field of dir's /proc/mounts line and
// the line.
func mountOptions(t *testing.T, dir string) (map[string]bool, string) {
	t.Helper()
	line := kerneltest.MountLine(dir)
	f := strings.Fields(line)
	if len(f) < 4 {
		t.Fatalf("no /proc/mounts line for %s", dir)
	}
	opts := map[string]bool{}
	for _, o := range strings.Split(f[3], ",") {
		opts[o] = true
	}
	return opts, line
}

// The first-day case: sshfs given -o ro,default_permissions,
// allow_other, both on /dev/fd/3 and on its real mountpoint (through the
// stand-in fusermount). The kernel mount is read-only and has both
// options; a write fails with EROFS and reaches nothing on the server.
func TestWrapSshfsOptionsHonoured(t *testing.T) {
	for _, route := range []string{"/dev/fd/3", "real mountpoint"} {
		t.Run(strings.ReplaceAll(route, "/", "_"), func(t *testing.T) {
			if route == "real mountpoint" {
				needStandin(t)
			} else {
				kerneltest.NeedMount(t)
			}
			src, target := t.TempDir(), t.TempDir()
			writeTree(t, src, "sshfs")
			mnt := "/dev/fd/3"
			if route == "real mountpoint" {
				mnt = target
			}
			detachAtCleanup(t, target)
			pd := start(t, "perfused", nil, nil, append([]string{target, "--"}, sshfsArgs(t, src, "ro,default_permissions,allow_other", mnt)...)...)
			defer watchdog(t, pd, target, 60*time.Second)()
			waitMounted(t, target, pd)
			opts, line := mountOptions(t, target)
			for _, want := range []string{"ro", "default_permissions", "allow_other"} {
				if !opts[want] {
					t.Errorf("/proc/mounts %q lacks %s", line, want)
				}
			}
			if b, err := os.ReadFile(filepath.Join(target, "hello.txt")); err != nil || string(b) != "hello from sshfs\n" {
				t.Errorf("read through the mount: %q, %v", b, err)
			}
			err := os.WriteFile(filepath.Join(target, "new"), []byte("x"), 0o644)
			if !errors.Is(err, syscall.EROFS) {
				t.Errorf("write on an -o ro mount: %v, want EROFS", err)
			}
			if _, err := os.Stat(filepath.Join(src, "new")); err == nil {
				t.Error("the write reached the server")
			}
			unmountAndCheck(t, pd, target)
		})
	}
}

// The other kernel options reach the mount on both routes, with a
// libfuse 3 daemon (squashfuse): noexec, sync, dirsync, noatime, fsname,
// subtype (the type shows as fuse.SUBTYPE). (libfuse 3 refuses -o
// max_read= for a daemon whose init sets no max_read, as squashfuse.)
func TestWrapKernelOptionsBothRoutes(t *testing.T) {
	needTools(t, "squashfuse", "mksquashfs")
	src := t.TempDir()
	writeTree(t, src, "squashfuse")
	img := filepath.Join(t.TempDir(), "img.sqfs")
	if out, err := exec.Command("mksquashfs", src, img, "-quiet", "-noappend").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	for _, route := range []string{"/dev/fd/3", "real mountpoint"} {
		t.Run(strings.ReplaceAll(route, "/", "_"), func(t *testing.T) {
			if route == "real mountpoint" {
				needStandin(t)
			} else {
				kerneltest.NeedMount(t)
			}
			target := t.TempDir()
			mnt := "/dev/fd/3"
			if route == "real mountpoint" {
				mnt = target
			}
			detachAtCleanup(t, target)
			pd := start(t, "perfused", nil, nil, target, "--", "squashfuse", "-f",
				"-o", "noexec,sync,dirsync,noatime,fsname=sq-opts,subtype=mine", img, mnt)
			defer watchdog(t, pd, target, 60*time.Second)()
			waitMounted(t, target, pd)
			opts, line := mountOptions(t, target)
			for _, want := range []string{"noexec", "sync", "dirsync", "noatime", "nosuid", "nodev"} {
				if !opts[want] {
					t.Errorf("/proc/mounts %q lacks %s", line, want)
				}
			}
			if f := strings.Fields(line); len(f) < 3 || f[0] != "sq-opts" || f[2] != "fuse.mine" {
				t.Errorf("/proc/mounts %q: want source sq-opts and type fuse.mine", line)
			}
			if b, err := os.ReadFile(filepath.Join(target, "hello.txt")); err != nil || string(b) != "hello from squashfuse\n" {
				t.Errorf("read through the mount: %q, %v", b, err)
			}
			unmountAndCheck(t, pd, target)
		})
	}
}

// Options perfused cannot apply, or cannot tell about, refuse the mount
// before the daemon starts, with a message naming the option and the fix;
// the same flag is accepted once perfused's own -o settles it.
func TestWrapRefusesOptionsItCannotApply(t *testing.T) {
	kerneltest.NeedMount(t)
	for _, c := range []struct {
		name   string
		admin  []string
		daemon []string
		want   []string // in perfused's message; nil: accepted
	}{
		{"blksize", nil, []string{"-o", "blksize=4096"}, []string{"blksize=4096", "fuseblk", "drop -o blksize=4096"}},
		{"context", nil, []string{"-ocontext=system_u:object_r:fusefs_t:s0"}, []string{"context=", "SELinux"}},
		{"Go-style -ro", nil, []string{"-ro"}, []string{`"-ro"`, "perfused -o ro"}},
		{"--allow-other", nil, []string{"--allow-other"}, []string{`"--allow-other"`, "perfused -o allow_other"}},
		{"-ro settled by perfused -o ro", []string{"-o", "ro"}, []string{"-ro"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := t.TempDir()
			detachAtCleanup(t, target)
			marker := filepath.Join(t.TempDir(), "started")
			// The daemon records that it ran; it never serves, so an
			// accepted mount fails at INIT, which is all this test needs.
			args := append(append(c.admin, target, "--", "sh", "-c", `touch "$0"`, marker), c.daemon...)
			args = append(args, "/dev/fd/3")
			pd := start(t, "perfused", nil, nil, args...)
			err := pd.wait(t, 15*time.Second)
			if err == nil {
				t.Fatalf("perfused exited 0:\n%s", pd.out)
			}
			_, ran := os.Stat(marker)
			if c.want == nil {
				if ran != nil {
					t.Errorf("the daemon was never started:\n%s", pd.out)
				}
				return
			}
			if ran == nil {
				t.Errorf("the daemon was started before the refusal")
			}
			for _, w := range c.want {
				if !strings.Contains(pd.out.String(), w) {
					t.Errorf("perfused's message lacks %q:\n%s", w, pd.out)
				}
			}
		})
	}
}

// A user's wrapped daemon asking allow_other goes through the same policy:
// without user_allow_other in /etc/fuse.conf it is refused, and says so.
func TestWrapUserAllowOtherNeedsFuseConf(t *testing.T) {
	kerneltest.NeedMount(t)
	needTools(t, "squashfuse", "mksquashfs")
	if policy.UserAllowOther() {
		t.Skip(policy.FuseConf + " has user_allow_other: a user may ask allow_other here")
	}
	const nobody = 65534
	shared, err := os.MkdirTemp("", "perfused-wrap-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	os.Chmod(shared, 0o755)
	src, target, img := filepath.Join(shared, "src"), filepath.Join(shared, "mnt"), filepath.Join(shared, "img.sqfs")
	os.Mkdir(src, 0o755)
	os.Mkdir(target, 0o755)
	os.Chown(target, nobody, nobody)
	writeTree(t, src, "nobody")
	if out, err := exec.Command("mksquashfs", src, img, "-quiet", "-noappend").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	os.Chmod(img, 0o644)
	self, _ := os.Executable()
	exe := filepath.Join(shared, "perfused.test")
	if b, err := os.ReadFile(self); err != nil || os.WriteFile(exe, b, 0o755) != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	detachAtCleanup(t, target)
	pd := startExe(t, exe, "perfused", nil, &syscall.Credential{Uid: nobody, Gid: nobody},
		target, "--", "squashfuse", "-f", "-o", "allow_other", img, "/dev/fd/3")
	if err := pd.wait(t, 15*time.Second); err == nil {
		t.Fatalf("a user's allow_other was mounted without user_allow_other:\n%s", pd.out)
	}
	for _, w := range []string{"allow_other", "user_allow_other", policy.FuseConf} {
		if !strings.Contains(pd.out.String(), w) {
			t.Errorf("perfused's message lacks %q:\n%s", w, pd.out)
		}
	}
	if kerneltest.Mounted(target) {
		t.Error("mounted anyway")
	}
}

// On the stand-in route an option perfused cannot apply reaches it through
// fusermount: the stand-in fails with the reason (every time libfuse runs
// it), the daemon exits on its own, and perfused names the option.
func TestWrapStandinRefusesOptions(t *testing.T) {
	needStandin(t, "squashfuse", "mksquashfs")
	src := t.TempDir()
	writeTree(t, src, "squashfuse")
	img := filepath.Join(t.TempDir(), "img.sqfs")
	if out, err := exec.Command("mksquashfs", src, img, "-quiet", "-noappend").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	target := t.TempDir()
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, target, "--", "squashfuse", "-f", "-o", "blksize=4096", img, target)
	err := pd.wait(t, 15*time.Second)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("perfused exit: %v, want status 1", err)
	}
	out := pd.out.String()
	for _, w := range []string{"fusermount (perfused's stand-in): mount option blksize=4096", "perfused: " + target, "drop -o blksize=4096", "squashfuse: exit status"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "killing it") {
		t.Errorf("the daemon had to be killed:\n%s", out)
	}
	if kerneltest.Mounted(target) {
		t.Error("mounted anyway")
	}
}
