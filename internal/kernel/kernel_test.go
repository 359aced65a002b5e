package kernel_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
)

// Reading a go-fuse loopback daemon's tree through the kernel mount gives
// the source, byte for byte, with the daemon's modes and links.
func TestRelayGoFuseLoopbackReadsSource(t *testing.T) {
	kerneltest.NeedMount(t)
	src := t.TempDir()
	kerneltest.MakeTree(t, src)
	r := kerneltest.Mount(t, gofusepeer.ServeLoopback(t, src), kernel.Config{})
	kerneltest.CompareTrees(t, src, r.Dir)
	line := kerneltest.MountLine(r.Dir)
	if !strings.Contains(line, " fuse.perfuse ") || !strings.HasPrefix(line, "perfuse-test ") {
		t.Errorf("/proc/mounts line %q: want source perfuse-test and type fuse.perfuse", line)
	}
	for _, o := range []string{"nosuid", "nodev"} {
		if !strings.Contains(line, o) {
			t.Errorf("/proc/mounts line %q lacks %s", line, o)
		}
	}
}

// squashfuse (libfuse 3) through the relay: find, stat and a tar of the
// mount give what the source gives.
func TestRelaySquashfuseShellWorkload(t *testing.T) {
	kerneltest.NeedMount(t)
	src := t.TempDir()
	kerneltest.MakeTree(t, src)
	d := daemonpeer.Squashfuse(t, src)
	r := kerneltest.Mount(t, d.Conn, kernel.Config{})
	kerneltest.CompareTrees(t, src, r.Dir)

	find := func(dir string) string {
		// Directory sizes are the filesystem's own: sizes of files only.
		out, err := exec.Command("find", dir, "-printf", "%P %y %m %l\n", "-type", "f", "-printf", "%P size %s\n").Output()
		if err != nil {
			t.Fatalf("find %s: %v", dir, err)
		}
		return strings.ReplaceAll(string(out), dir, "")
	}
	if got, want := sorted(find(r.Dir)), sorted(find(src)); got != want {
		t.Errorf("find differs:\nmount:\n%s\nsource:\n%s", got, want)
	}
	out := t.TempDir()
	tarf := filepath.Join(t.TempDir(), "x.tar")
	run(t, "tar", "-C", r.Dir, "-cf", tarf, ".")
	run(t, "tar", "-C", out, "-xf", tarf)
	kerneltest.CompareTrees(t, src, out)
	if _, err := os.Stat(filepath.Join(r.Dir, "nonexistent")); !os.IsNotExist(err) {
		t.Errorf("stat of a missing name: %v, want ENOENT", err)
	}
}

func sorted(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	slicesSort(lines)
	return strings.Join(lines, "\n")
}

func run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out)
	}
	return string(out)
}

// Mount takes a session that has done INIT and has a target; any other is
// refused with EINVAL before anything is mounted or sent.
func TestMountNeedsInitAndTarget(t *testing.T) {
	sent := 0
	cb := &perfuse.Callbacks{XchgMsg: func(context.Context, *perfuse.Usermount, *perfuse.Message, perfuse.Wait) error {
		sent++
		return syscall.ENOTCONN
	}}
	dir := t.TempDir()
	for _, mi := range []*perfuse.MountInfo{{Target: dir}, {}} {
		u, err := perfuse.Init(cb, mi)
		if err != nil {
			t.Fatal(err)
		}
		m, err := kernel.Mount(context.Background(), u, kernel.Config{})
		if !errors.Is(err, syscall.EINVAL) || m != nil {
			t.Errorf("Mount(target %q, no INIT) = %v, %v; want nil, EINVAL", mi.Target, m, err)
		}
	}
	if sent != 0 {
		t.Errorf("%d frames sent; want none", sent)
	}
	if kerneltest.Mounted(dir) {
		t.Errorf("%s mounted", dir)
	}
}
