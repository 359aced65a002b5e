package kernel_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
)

// workload is a shell session on a writable tree: copy a source tree in,
// then change it with the usual tools. It runs in a plain directory and in
// the mount, and the two results must be the same. $1 is the source tree,
// $2 the place to work in. Its output (getfattr, stat of
// sizes, find) must be the same too.
const workload = `set -eu
src=$1
cd "$2"
cp -r "$src" copy
find copy -printf '%P %y %m\n' | sort
stat -c '%n %s %F %a' copy/README copy/data/big.bin copy/link
chmod 600 copy/README
chmod 750 copy/a
mv copy/data/notes/two.txt copy/data/two-moved.txt
mv copy/a/b copy/ab
ln -s ../README copy/data/readme-link
ln copy/empty copy/empty-hardlink
stat -c '%n %h' copy/empty
truncate -s 1000 copy/a/medium.bin
truncate -s 5000 copy/sparse
echo appended >> copy/README
printf XY | dd of=copy/data/big.bin bs=1 seek=10 conv=notrunc status=none
mkdir -p copy/newdir/sub
echo x > copy/newdir/sub/x
rm copy/data/notes/one.txt
rm -r copy/ab/c
tar -C copy -cf t.tar .
mkdir untar
tar -C untar -xf t.tar
rm t.tar
setfattr -n user.perfuse -v hello copy/README
getfattr -n user.perfuse --only-values copy/README; echo
getfattr -d -m 'user\.' copy/README | sort
setfattr -x user.perfuse copy/README
getfattr -d -m 'user\.' copy/README | sort
flock copy/README -c 'echo locked'
flock -s copy/newdir/sub/x -c 'echo shared'
readlink copy/data/readme-link
cat copy/data/readme-link
ls copy | sort
`

// runWorkload runs the workload in dir and returns its output. The shell
// changes into dir itself: a child of this process must not touch the
// mount between fork and exec, while its parent (which serves the mount)
// may be stopped by vfork.
func runWorkload(t *testing.T, dir, src string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", workload, "sh", src, dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("workload in %s: %v\n%s", dir, err, out)
	}
	return strings.ReplaceAll(string(out), dir, "DIR")
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if kerneltest.Strict() {
				t.Fatalf("%s not installed and PERFUSE_TEST_STRICT=1", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

// compareWorkload runs the workload in a plain directory and in mnt and
// compares output and resulting trees byte for byte.
func compareWorkload(t *testing.T, mnt string) {
	t.Helper()
	needTools(t, "setfattr", "getfattr", "flock", "tar", "truncate")
	src := t.TempDir()
	kerneltest.MakeTree(t, src)
	ref := t.TempDir()
	want := runWorkload(t, ref, src)
	got := runWorkload(t, mnt, src)
	if got != want {
		t.Errorf("workload output through the relay:\n%s\nin a plain directory:\n%s", got, want)
	}
	kerneltest.CompareTrees(t, ref, mnt)
}

// A go-fuse loopback daemon, writable, through the relay: the shell
// workload gives what it gives in a plain directory, and the daemon's
// backing directory holds the same.
func TestRelayGoFuseLoopbackShellWorkload(t *testing.T) {
	kerneltest.NeedMount(t)
	backing := t.TempDir()
	r := kerneltest.Mount(t, gofusepeer.ServeLoopback(t, backing), kernel.Config{})
	compareWorkload(t, r.Dir)
	kerneltest.CompareTrees(t, backing, r.Dir)
}

// fuse-overlayfs (libfuse 3, writable) through the relay: the same.
func TestRelayFuseOverlayfsShellWorkload(t *testing.T) {
	kerneltest.NeedMount(t)
	lower, upper, work := overlayDirs(t)
	if err := os.WriteFile(filepath.Join(lower, "from-lower"), []byte("lower layer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := daemonpeer.FuseOverlayfs(t, lower, upper, work)
	r := kerneltest.Mount(t, d.Conn, kernel.Config{})
	b, err := os.ReadFile(filepath.Join(r.Dir, "from-lower"))
	if err != nil || string(b) != "lower layer\n" {
		t.Fatalf("lower layer file: %q, %v", b, err)
	}
	if err := os.Remove(filepath.Join(r.Dir, "from-lower")); err != nil {
		t.Fatal(err)
	}
	compareWorkload(t, r.Dir)
}
