package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/fusermount"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"golang.org/x/sys/unix"
)

// needStandin skips (fails under PERFUSE_TEST_STRICT=1) unless kernel
// mounts, root (for the daemon's private mount namespace) and tools are
// there.
func needStandin(t *testing.T, tools ...string) {
	t.Helper()
	kerneltest.NeedMount(t)
	skip := func(why string) {
		t.Helper()
		if kerneltest.Strict() {
			t.Fatalf("%s and PERFUSE_TEST_STRICT=1", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		skip("the stand-in fusermount needs root (a private mount namespace)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := map[string]string{"mke2fs": "e2fsprogs", "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs", "xargs": "findutils", "cmp": "diffutils"}[tool]
			if pkg == "" {
				pkg = tool
			}
			skip(tool + " missing (Debian package " + pkg + ")")
		}
	}
}

// watchdog turns a hang in a wrap test into a failure with diagnostics:
// after d it asks perfused for its goroutines (SIGQUIT), lists the
// daemon's threads' kernel stacks and aborts target's FUSE connection, so
// the blocked calls return and the cleanup can unmount. The returned stop
// disarms it.
func watchdog(t *testing.T, pd *proc, target string, d time.Duration) (stop func()) {
	timer := time.AfterFunc(d, func() {
		t.Errorf("wrap test still running after %v: dumping perfused and aborting %s", d, target)
		for _, l := range daemonsLeft(target) {
			var pid int
			fmt.Sscan(l, &pid)
			tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stack", pid))
			for _, task := range tasks {
				b, _ := os.ReadFile(task)
				t.Logf("%s (%s):\n%s", task, l, b)
			}
		}
		pd.cmd.Process.Signal(unix.SIGQUIT)
		time.Sleep(time.Second)
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[4] == target {
				_, minor, _ := strings.Cut(f[2], ":")
				os.WriteFile("/sys/fs/fuse/connections/"+minor+"/abort", []byte("1"), 0)
			}
		}
	})
	return func() { timer.Stop() }
}

// daemonsLeft lists the processes run through the stand-in for target
// that still live (the daemon and anything it started).
func daemonsLeft(target string) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !bytes.Contains(env, []byte(fusermount.EnvDaemon+"=")) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte(target)) {
			left = append(left, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return left
}

// unmountAndCheck unmounts target with umount(2) and checks that perfused
// exits 0, the mount is gone and no process is left.
func unmountAndCheck(t *testing.T, pd *proc, target string) {
	t.Helper()
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatalf("umount %s: %v", target, err)
	}
	if err := pd.wait(t, 15*time.Second); err != nil {
		t.Errorf("perfused after unmount: %v\n%s", err, pd.out)
	}
	if kerneltest.Mounted(target) {
		t.Errorf("%s still mounted after umount", target)
	}
	// libfuse unmounts its mountpoint itself at exit as root; in the
	// daemon's namespace that is a no-op, not an error message.
	if strings.Contains(pd.out.String(), "failed to unmount") {
		t.Errorf("the daemon complained at exit:\n%s", pd.out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := daemonsLeft(target)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left after unmount: %q", left)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitGone(t, "wrap")
}

// bindfsWorkload is run by sh in the mount ($T) with the source $S and a
// work directory $W outside both.
const bindfsWorkload = `set -eu
cd "$T"
cp -r data copy
cp -r a "$W/a-out"
# The mount lists and stats like the source.
find . -print | sort > "$W/find-mnt"
(cd "$S" && find . -print | sort) > "$W/find-src"
cmp "$W/find-mnt" "$W/find-src"
find . -print | sort | xargs stat -c '%n %s %a %F %u %g %Y' > "$W/stat-mnt"
(cd "$S" && find . -print | sort | xargs stat -c '%n %s %a %F %u %g %Y') > "$W/stat-src"
cmp "$W/stat-mnt" "$W/stat-src"
chmod 640 copy/big.bin
chmod 700 copy/notes
mv copy/notes copy/moved
mv README README.moved
ln -s moved/one.txt copy/sl
test "$(cat copy/sl)" = one
truncate -s 1000 copy/big.bin
truncate -s 100000 empty
# A tar round trip, out of the mount and back into it.
tar -cf "$W/t.tar" -C "$T" .
mkdir "$W/x" untar
tar -xf "$W/t.tar" -C "$W/x"
tar -xpf "$W/t.tar" -C untar
`

// A libfuse 2 daemon (bindfs) through wrap mode, given the real
// mountpoint: it runs in a private mount namespace with perfused as its
// fusermount. A shell workload through the mount shows in the source; the
// tree matches it; umount ends perfused (status 0) and bindfs.
func TestWrapModeBindfs(t *testing.T) {
	needStandin(t, "bindfs", "tar", "stat", "truncate", "xargs", "cmp")
	src, target, work := t.TempDir(), t.TempDir(), t.TempDir()
	kerneltest.MakeTree(t, src)
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, "-f", target, "--", "bindfs", "-f", src, target)
	defer watchdog(t, pd, target, 90*time.Second)()
	waitMounted(t, target, pd)

	line := kerneltest.MountLine(target)
	// bindfs asks for an fsname and no subtype: fuse.perfuse.
	if !strings.HasPrefix(line, src+" ") || !strings.Contains(line, " fuse.perfuse ") || !strings.Contains(line, "allow_other") {
		t.Errorf("/proc/mounts: %q, want bindfs's fsname %s, type fuse.perfuse and its allow_other", line, src)
	}
	if !strings.Contains(pd.out.String(), "minor=19") {
		t.Errorf("INIT with bindfs (libfuse 2.9) did not settle on minor 19:\n%s", pd.out)
	}
	kerneltest.CompareTrees(t, src, target)

	sh := exec.Command("sh", "-c", bindfsWorkload)
	sh.Env = append(os.Environ(), "T="+target, "S="+src, "W="+work)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("workload: %v\n%s", err, out)
	}
	// The mount mirrors the source after the workload, the tar round trip
	// is faithful both ways, and what was done through the mount is in the
	// source.
	kerneltest.CompareTrees(t, src, target)
	kerneltest.CompareTrees(t, filepath.Join(work, "x"), filepath.Join(target, "untar"))
	kerneltest.CompareTrees(t, filepath.Join(src, "a"), filepath.Join(work, "a-out"))
	if fi, err := os.Stat(filepath.Join(src, "copy/big.bin")); err != nil || fi.Size() != 1000 || fi.Mode().Perm() != 0o640 {
		t.Errorf("copy/big.bin in the source: %v, %v; want 1000 bytes, mode 0640", fi, err)
	} else {
		a, _ := os.ReadFile(filepath.Join(src, "copy/big.bin"))
		b, _ := os.ReadFile(filepath.Join(src, "data/big.bin"))
		if !bytes.Equal(a, b[:1000]) {
			t.Error("copy/big.bin is not the first 1000 bytes of data/big.bin")
		}
	}
	if l, err := os.Readlink(filepath.Join(src, "copy/sl")); err != nil || l != "moved/one.txt" {
		t.Errorf("symlink in the source: %q, %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(src, "copy/moved")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("copy/moved in the source: %v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(src, "README")); err == nil {
		t.Error("README still in the source after mv")
	}
	if fi, err := os.Stat(filepath.Join(src, "empty")); err != nil || fi.Size() != 100000 {
		t.Errorf("empty after truncate: %v, %v", fi, err)
	}
	unmountAndCheck(t, pd, target)
}

// fuse-zip (libfuse 2) given the real mountpoint: the archive's tree reads
// back through the mount, and its "-r" becomes a read-only mount.
func TestWrapModeFuseZip(t *testing.T) {
	needStandin(t, "fuse-zip", "zip")
	src, target := t.TempDir(), t.TempDir()
	kerneltest.MakeTree(t, src)
	archive := filepath.Join(t.TempDir(), "tree.zip")
	zip := exec.Command("zip", "-qry", archive, ".")
	zip.Dir = src
	if out, err := zip.CombinedOutput(); err != nil {
		t.Fatalf("zip: %v\n%s", err, out)
	}
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, target, "--", "fuse-zip", "-f", "-r", archive, target)
	defer watchdog(t, pd, target, 90*time.Second)()
	waitMounted(t, target, pd)
	kerneltest.CompareTrees(t, src, target)
	if line := kerneltest.MountLine(target); !strings.Contains(line, " ro,") && !strings.Contains(line, " ro ") {
		t.Errorf("/proc/mounts: %q, want ro", line)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); err == nil {
		t.Error("created a file on a read-only fuse-zip mount")
	}
	unmountAndCheck(t, pd, target)
}

// fuse2fs (libfuse 2) given the real mountpoint: an ext2 image made from a
// tree reads back through the mount; what is written through it is in the
// image after the unmount (read with debugfs), and the image checks clean.
func TestWrapModeFuse2fs(t *testing.T) {
	needStandin(t, "fuse2fs", "mke2fs", "debugfs", "e2fsck")
	src, target := t.TempDir(), t.TempDir()
	kerneltest.MakeTree(t, src)
	img := filepath.Join(t.TempDir(), "fs.img")
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext2", "-d", src, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, target, "--", "fuse2fs", "-f", img, target)
	defer watchdog(t, pd, target, 90*time.Second)()
	waitMounted(t, target, pd)
	if err := os.Remove(filepath.Join(target, "lost+found")); err != nil {
		t.Fatal(err)
	}
	kerneltest.CompareTrees(t, src, target)
	if err := os.WriteFile(filepath.Join(target, "written"), []byte("through perfuse\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmountAndCheck(t, pd, target)
	out, err := exec.Command("debugfs", "-R", "cat /written", img).Output()
	if err != nil || string(out) != "through perfuse\n" {
		t.Errorf("debugfs cat /written: %q, %v", out, err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
}
