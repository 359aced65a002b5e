package perfuse

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
)

// start runs argv through Start and unmounts at cleanup.
func start(t *testing.T, argv []string, opts ...Option) *Daemon {
	t.Helper()
	d, err := Start(testCtx(t), exec.Command(daemonpeer.Need(t, argv[0]), argv[1:]...), opts...)
	if err != nil {
		t.Fatalf("Start %q: %v", argv, err)
	}
	t.Cleanup(func() {
		d.Unmount(context.Background())
		if t.Failed() {
			t.Logf("%s said:\n%s", argv[0], d.Stderr())
		}
	})
	return d
}

// bounded runs f, failing the test if it has not returned within limit: a
// wait the code under test should have bounded itself.
func bounded(t *testing.T, limit time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("%s still waiting after %v", what, limit)
	}
}

// bigTree holds a file larger than libfuse's 1 MiB max_write and
// squashfuse's largest READ reply.
func bigTree(t *testing.T) (dir string, data []byte) {
	dir = t.TempDir()
	data = make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(i*31 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, data
}

// squashfuse answers a 1 MiB READ with one 1 MiB record; with the daemon's
// end left at the default SO_SNDBUF (212992) its write fails with EMSGSIZE
// ("writing device: Message too long") and the read would wait forever.
func TestStartReadsFileLargerThanDefaultSocketBuffer(t *testing.T) {
	dir, data := bigTree(t)
	d := start(t, daemonpeer.SquashfuseArgs(t, dir))
	var got []byte
	var err error
	bounded(t, 30*time.Second, "reading 3 MiB from squashfuse", func() {
		got, err = fs.ReadFile(d.FS(testCtx(t), nil), "big")
	})
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, differing from the %d in the image", len(got), len(data))
	}
	if s := d.Stderr(); s != "" {
		t.Errorf("squashfuse complained: %q", s)
	}
}

// With buffers smaller than a 1 MiB frame, INIT settles sizes that fit
// both ends, and a large file still reads, in more pieces.
func TestStartSizesFitBothEnds(t *testing.T) {
	dir, data := bigTree(t)
	const size = 96 << 10
	d := start(t, daemonpeer.SquashfuseArgs(t, dir), WithBufSize(size))
	// The kernel doubles the size asked for and keeps 32 bytes of it.
	frame := 2*size - 32
	_, _, maxWrite, maxRead := d.Negotiated()
	if maxWrite+writeHeader > frame || maxRead+outHeaderSize > frame {
		t.Errorf("negotiated max_write %d, max_read %d: frames exceed the %d bytes a record can hold", maxWrite, maxRead, frame)
	}
	var got []byte
	var err error
	bounded(t, 30*time.Second, "reading 3 MiB from squashfuse", func() {
		got, err = fs.ReadFile(d.FS(testCtx(t), nil), "big")
	})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadFile: %d bytes (want %d), %v", len(got), len(data), err)
	}
}

func TestStartDaemonExitingBeforeInitGivesStatusAndStderr(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `echo "fuse: unknown option -x" >&2; exit 3`)
	_, err := Start(testCtx(t), cmd)
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("Start = %v; want an *exec.ExitError with status 3", err)
	}
	if !strings.Contains(err.Error(), "unknown option -x") {
		t.Errorf("error %q lacks the daemon's stderr", err)
	}
}

func TestStartTeesCallersStderr(t *testing.T) {
	var mine bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", `echo first >&2; echo last >&2; exit 1`)
	cmd.Stderr = &mine
	_, err := Start(testCtx(t), cmd)
	if err == nil || !strings.Contains(err.Error(), "last") {
		t.Errorf("Start = %v; want an error with the stderr tail", err)
	}
	if mine.String() != "first\nlast\n" {
		t.Errorf("caller's stderr got %q", mine.String())
	}
}

func TestStartSquashfuseMissingImage(t *testing.T) {
	cmd := exec.Command(daemonpeer.Need(t, "squashfuse"), "-f", filepath.Join(t.TempDir(), "none.sqfs"), "/dev/fd/3")
	_, err := Start(testCtx(t), cmd)
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || !strings.Contains(err.Error(), "Can't open squashfs image") {
		t.Fatalf("Start = %v; want an exit error with squashfuse's complaint", err)
	}
}

// A daemon that keeps the socket open and never answers INIT: ctx ends the
// wait, and the daemon is killed and reaped.
func TestStartInitBoundedByContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	cmd := exec.Command("/bin/sleep", "60")
	var err error
	bounded(t, 10*time.Second, "Start with a silent daemon", func() { _, err = Start(ctx, cmd) })
	if err == nil {
		t.Fatal("Start succeeded with a daemon that never answered INIT")
	}
	if cmd.ProcessState == nil {
		t.Error("the silent daemon was not reaped")
	}
}

// A daemon that hands fd 3 to a child and exits: the socket stays open, but
// its exit ends the wait, well before initTimeout.
func TestStartInitBoundedByDaemonExit(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `sleep 3 >/dev/null 2>&1 & echo "gave the socket away" >&2; exit 0`)
	var err error
	bounded(t, 10*time.Second, "Start with a daemon that exited", func() { _, err = Start(context.Background(), cmd) })
	if err == nil || !strings.Contains(err.Error(), "exited before INIT") || !strings.Contains(err.Error(), "gave the socket away") {
		t.Fatalf("Start = %v; want an exited-before-INIT error with the stderr tail", err)
	}
	// The socket was still open: the exit, not end-of-file, ended INIT.
	if errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("Start = %v: INIT ended by the socket closing, not by the daemon's exit", err)
	}
}

// A daemon that dies during the session: Unmount reports its status.
func TestUnmountReportsDaemonCrash(t *testing.T) {
	dir, _ := bigTree(t)
	d := start(t, daemonpeer.SquashfuseArgs(t, dir))
	d.cmd.Process.Signal(syscall.SIGSEGV)
	<-d.Exited()
	err := d.Unmount(testCtx(t))
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGSEGV {
		t.Fatalf("Unmount = %v; want the daemon's SIGSEGV as an *exec.ExitError", err)
	}
}

// goFuseExample builds one of go-fuse's own example daemons.
func goFuseExample(t *testing.T, name string) string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/hanwen/go-fuse/v2/example/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("building go-fuse's example %s: %v\n%s", name, err, out)
	}
	return bin
}

// After Unmount every daemon has exited, having printed nothing while it
// ended, and Unmount reports no error.
//
// Exit statuses: over a socket only an exit by signal is clean for libfuse,
// whose loop ends without error only on the ENODEV a kernel unmount gives;
// libfuse 3.14 reports the signal as a failure (squashfuse 8, fuse-overlayfs
// and sshfs 1), which Unmount does not count as an error. pyfuse3 daemons
// that end their loop on SIGTERM exit 0. go-fuse programs are ended by
// closing the socket, which ends their server loop, and exit 0, whether they
// catch SIGTERM (loopback) or not (hello); go-fuse v2.12 prints two lines
// per reader then, taking end-of-file for a read error ("Short read for
// input header", "Failed to read from fuse conn: 22"): only ENODEV is quiet.
func TestUnmountEndsDaemonsCleanly(t *testing.T) {
	tree := func(t *testing.T) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	goFuseEOF := []string{"Short read for input header: []", "Failed to read from fuse conn: 22=invalid argument"}
	for _, tc := range []struct {
		name    string
		argv    func(t *testing.T) []string
		file    string // a file the daemon serves
		exit0   bool
		atClose []string // lines the daemon is known to print as it ends
	}{
		{"squashfuse", func(t *testing.T) []string { return daemonpeer.SquashfuseArgs(t, tree(t)) }, "hello.txt", false, nil},
		{"fuse-overlayfs", func(t *testing.T) []string {
			return daemonpeer.FuseOverlayfsArgs(tree(t), t.TempDir(), t.TempDir())
		}, "hello.txt", false, nil},
		{"sshfs", func(t *testing.T) []string { return daemonpeer.SshfsArgs(t, tree(t)) }, "hello.txt", false, nil},
		{"pyfuse3", func(t *testing.T) []string {
			script, err := filepath.Abs("testdata/pyfuse3_hello.py")
			if err != nil {
				t.Fatal(err)
			}
			return daemonpeer.Pyfuse3Args(t, script)
		}, "hello.txt", true, nil},
		{"go-fuse loopback", func(t *testing.T) []string {
			return []string{goFuseExample(t, "loopback"), "-q", "/dev/fd/3", tree(t)}
		}, "hello.txt", true, goFuseEOF},
		{"go-fuse hello", func(t *testing.T) []string {
			return []string{goFuseExample(t, "hello"), "/dev/fd/3"}
		}, "file.txt", true, goFuseEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			d := start(t, tc.argv(t))
			e, err := d.NodeLookup(ctx, nil, d.Root(), tc.file)
			if err != nil {
				t.Fatalf("lookup: %v", err)
			}
			h, err := d.NodeOpen(ctx, nil, e.Node, syscall.O_RDONLY)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			buf := make([]byte, 64)
			if n, err := d.NodeRead(ctx, nil, h, buf, 0); err != nil || n == 0 {
				t.Fatalf("read: %d bytes, %v", n, err)
			}
			if err := d.NodeRelease(ctx, h); err != nil {
				t.Fatalf("release: %v", err)
			}
			before := d.Stderr()
			begun := time.Now()
			if err := d.Unmount(ctx); err != nil {
				t.Errorf("Unmount: %v", err)
			}
			if err := d.Unmount(ctx); err != nil {
				t.Errorf("second Unmount: %v", err)
			}
			ps := d.ProcessState()
			if ps == nil {
				t.Fatal("Unmount returned with the daemon still running")
			}
			t.Logf("ended in %v: %v", time.Since(begun).Round(time.Millisecond), ps)
			if tc.exit0 && !ps.Success() {
				t.Errorf("exit status %v, want 0", ps)
			}
			for _, line := range strings.Split(strings.TrimPrefix(d.Stderr(), before), "\n") {
				if line != "" && !knownLine(line, tc.atClose) {
					t.Errorf("printed while ending: %q", line)
				}
			}
		})
	}
}

// knownLine reports whether line ends with one of known (go-fuse's log
// lines carry a timestamp first).
func knownLine(line string, known []string) bool {
	for _, k := range known {
		if strings.HasSuffix(line, k) {
			return true
		}
	}
	return false
}

// unprivilegedRun marks the re-run of this test binary as nobody.
const unprivilegedRun = "PERFUSE_TEST_UNPRIVILEGED"

// Start needs no privileges: as nobody the buffers cannot exceed
// net.core.wmem_max (SO_SNDBUFFORCE needs CAP_NET_ADMIN), and sizes still
// fit. This test binary runs the large-read and clean-exit tests again as
// uid 65534.
func TestStartUnprivileged(t *testing.T) {
	if os.Getenv(unprivilegedRun) != "" {
		t.Skip("this is the unprivileged run")
	}
	if os.Getuid() != 0 {
		t.Skip("not root: the other tests already run unprivileged")
	}
	daemonpeer.Need(t, "squashfuse")
	// A world-searchable directory for a copy of this binary (go test
	// keeps it in a directory only root can search) and for TMPDIR.
	dir, err := os.MkdirTemp("", "perfuse-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "perfuse.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	// The pyfuse3 daemon, found relative to the working directory.
	script, err := os.ReadFile("testdata/pyfuse3_hello.py")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "testdata", "pyfuse3_hello.py"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	cmd := exec.CommandContext(testCtx(t), bin, "-test.v", "-test.count=1",
		"-test.run=^(TestStartReadsFileLargerThanDefaultSocketBuffer|TestStartSizesFitBothEnds|TestUnmountEndsDaemonsCleanly)$/^(squashfuse|fuse-overlayfs|sshfs|pyfuse3)?$")
	cmd.Env = append(os.Environ(), unprivilegedRun+"=1", "TMPDIR="+dir, "HOME="+dir)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tests as uid %d: %v\n%s", nobody, err, out)
	}
	for _, want := range []string{"--- PASS: TestStartReadsFileLargerThanDefaultSocketBuffer", "--- PASS: TestStartSizesFitBothEnds", "--- PASS: TestUnmountEndsDaemonsCleanly/squashfuse", "--- PASS: TestUnmountEndsDaemonsCleanly/pyfuse3"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("as uid %d, no %q:\n%s", nobody, want, out)
		}
	}
	t.Logf("as uid %d:\n%s", nobody, out)
}
