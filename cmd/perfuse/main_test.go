package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
)

// Every test here runs the real perfuse binary, built once, as uid 65534
// (through setpriv when the tests run as root) against real daemons:
// squashfuse on an image and go-fuse's loopback example on a directory.

const nobody = "65534"

var (
	buildOnce sync.Once
	buildDir  string // world-readable: the binaries, and the daemons' data
	buildErr  error
)

// tools builds perfuse and go-fuse's loopback example into a directory
// uid 65534 can read, once per test binary.
func tools(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "perfuse-cmd-")
		if buildErr != nil {
			return
		}
		if buildErr = os.Chmod(buildDir, 0o755); buildErr != nil {
			return
		}
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		for _, pkg := range []string{".", "github.com/hanwen/go-fuse/v2/example/loopback"} {
			out, err := exec.Command(goTool, "build", "-o", buildDir, pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// shared is a directory uid 65534 can use, removed at cleanup.
func shared(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "perfuse-cmd-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeTree writes files (name: content) under dir, world-readable.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o666); err != nil {
			t.Fatal(err)
		}
	}
}

var treeFiles = map[string]string{
	"hello.txt":       "hello, world\n",
	"docs/a.txt":      "alpha\n",
	"docs/deep/b.txt": strings.Repeat("beta ", 100000),
}

// squashfuse returns the daemon command line serving treeFiles (and a
// link) from an image uid 65534 can read.
func squashfuse(t *testing.T) []string {
	t.Helper()
	src := shared(t)
	writeTree(t, src, treeFiles)
	if err := os.Symlink("docs/a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	mksquashfs := daemonpeer.Need(t, "mksquashfs")
	daemonpeer.Need(t, "squashfuse")
	img := filepath.Join(shared(t), "img.sqfs")
	if out, err := exec.Command(mksquashfs, src, img, "-noappend", "-quiet", "-all-root").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	if err := os.Chmod(img, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"squashfuse", "-f", img, "/dev/fd/3"}
}

// loopback returns the directory go-fuse's loopback serves (holding
// treeFiles, writable by uid 65534) and its command line.
func loopback(t *testing.T) (string, []string) {
	t.Helper()
	dir := shared(t)
	writeTree(t, dir, treeFiles)
	if err := os.Symlink("docs/a.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	chownTree(t, dir)
	return dir, []string{filepath.Join(tools(t), "loopback"), "-q", "/dev/fd/3", dir}
}

// chownTree gives dir to uid 65534, when the tests run as root, so the
// loopback daemon running as it may write there.
func chownTree(t *testing.T, dir string) {
	t.Helper()
	if os.Getuid() != 0 {
		return
	}
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, 65534, 65534)
		}
		return err
	})
}

type result struct {
	stdout, stderr string
	code           int
}

// perfuse runs the binary as uid 65534 in dir with stdin, and returns
// what it printed and its exit status.
func runTool(t *testing.T, dir, stdin string, args ...string) result {
	t.Helper()
	bin := filepath.Join(tools(t), "perfuse")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var cmd *exec.Cmd
	if os.Getuid() == 0 {
		setpriv := daemonpeer.Need(t, "setpriv")
		cmd = exec.CommandContext(ctx, setpriv, append([]string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "TMPDIR="+dir)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("perfuse %q: %v", args, err)
	}
	return r
}

// ok runs perfuse and fails the test unless it exits 0.
func ok(t *testing.T, dir, stdin string, args ...string) result {
	t.Helper()
	r := runTool(t, dir, stdin, args...)
	if r.code != 0 {
		t.Fatalf("perfuse %q: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

func with(daemon []string, args ...string) []string {
	return append(append(args, "--"), daemon...)
}

func wantLines(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

func TestHelpAndUsage(t *testing.T) {
	dir := shared(t)
	r := ok(t, dir, "", "help")
	for name := range commands {
		wantLines(t, "perfuse help", r.stdout, "  "+name+" ")
	}
	for name := range commands {
		r := ok(t, dir, "", "help", name)
		wantLines(t, "perfuse help "+name, r.stdout, "usage: perfuse "+name, "-timeout")
		if r2 := ok(t, dir, "", name, "--help"); r2.stdout != r.stdout {
			t.Errorf("perfuse %s --help differs from perfuse help %s:\n%s", name, name, r2.stdout)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage: perfuse"},
		{[]string{"bogus", "--", "true"}, `unknown command "bogus"`},
		{[]string{"ls", "/"}, "no daemon"},
		{[]string{"ls", "-x", "/", "--", "true"}, "flag provided but not defined: -x"},
		{[]string{"cp", "a", "--", "true"}, "want SRC and DST"},
		{[]string{"cp", ":a", ":b", "--", "true"}, "one must be local"},
		{[]string{"help", "bogus"}, "unknown command"},
	} {
		r := runTool(t, dir, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("perfuse %q: exit %d, stderr %q; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

// Operation errors are exit status 1, naming the path (from the daemon's
// root, as the user gave it) and the errno.
func TestOperationErrors(t *testing.T) {
	d := squashfuse(t)
	dir := shared(t)
	writeTree(t, dir, map[string]string{"local": "data"})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{with(d, "cat", "/nope"), "perfuse cat: open /nope: no such file or directory (ENOENT)"},
		{with(d, "stat", "docs/none"), "perfuse stat: lstat /docs/none: no such file or directory (ENOENT)"},
		{with(d, "ls", "/hello.txt/x"), "perfuse ls: stat /hello.txt/x: not a directory (ENOTDIR)"},
		{with(d, "tree", "/nope"), "open /nope: no such file or directory (ENOENT)"},
		{with(d, "cp", "/docs", "out"), "/docs: a directory (use -r): is a directory (EISDIR)"},
		{with(d, "cp", "local", ":/x"), "create /x: read-only file system (EROFS)"},
		{[]string{"ls", "--", "/nonexistent/daemon"}, "no such file or directory"},
	} {
		r := runTool(t, dir, "", tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("perfuse %q: exit %d, stderr %q; want 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

// A libfuse 2 daemon takes /dev/fd/3 for a directory to mount on, and
// fails at once: perfuse reports its exit status and complaint (exit 1).
// Only perfused's wrap mode, with a private mount namespace and a
// stand-in fusermount, can give such a daemon a socket.
func TestLibfuse2DaemonRefused(t *testing.T) {
	a, b := shared(t), shared(t)
	unionfs := daemonpeer.Need(t, "unionfs-fuse")
	r := runTool(t, shared(t), "", "ls", "--", unionfs, "-f", a+"=RW:"+b+"=RO", "/dev/fd/3")
	if r.code != 1 || !strings.Contains(r.stderr, "unionfs-fuse exited before INIT") || !strings.Contains(r.stderr, "bad mount point `/dev/fd/3'") {
		t.Errorf("exit %d, stderr %q; want 1 with the daemon's exit and complaint", r.code, r.stderr)
	}
}
