package nfsexport

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/peerutil"
)

// The export driven by libnfs's command-line tools (nfs-cp, nfs-cat,
// nfs-ls), an NFS client independent of go-nfs, with the server run as
// nobody (uid 65534): "perfuse nfs".

// nobody is the unprivileged user the servers run as.
const nobody = 65534

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the perfuse command and go-fuse's loopback example into a directory
// nobody can read, once per test binary.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "nfsexport-bin-")
		if buildErr != nil {
			return
		}
		os.Chmod(binDir, 0o755)
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		for name, pkg := range map[string]string{
			"perfuse":  "github.com/perfuse-go/perfuse/cmd/perfuse",
			"loopback": "github.com/hanwen/go-fuse/v2/example/loopback",
		} {
			out, err := exec.Command(goTool, "build", "-o", filepath.Join(binDir, name), pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("building %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// need returns the path of a tool from a Debian package, or skips the
// test (fails it under PERFUSE_TEST_STRICT=1).
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		skipOrFail(t, fmt.Sprintf("%s not installed: apt-get install %s", tool, pkg))
	}
	return p
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("PERFUSE_TEST_STRICT") == "1" {
		t.Fatalf("%s (PERFUSE_TEST_STRICT=1)", msg)
	}
	t.Skip(msg)
}

// publicDir returns a new directory owned by nobody that nobody can reach,
// removed at cleanup.
func publicDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "nfsexport-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return d
}

// chownTree gives dir and everything under it to nobody.
func chownTree(t *testing.T, dir string) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, nobody, nobody)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// exportProc is a "perfuse nfs" process.
type exportProc struct {
	cmd    *exec.Cmd
	port   int
	stderr peerutil.LockedBuffer
	done   chan struct{}
	err    error
}

// startExport runs "perfuse nfs" as nobody on a free loopback port, serving
// the daemon argv (its mountpoint /dev/fd/3), and stops it at cleanup.
func startExport(t *testing.T, ro bool, argv ...string) *exportProc {
	t.Helper()
	if os.Getuid() != 0 {
		skipOrFail(t, "serving as uid 65534 needs root to switch to it")
	}
	setpriv := need(t, "setpriv", "util-linux")
	args := []string{fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups",
		filepath.Join(binaries(t), "perfuse"), "nfs", "-addr", "127.0.0.1:0"}
	if ro {
		args = append(args, "-ro")
	}
	args = append(append(args, "--"), argv...)
	e := &exportProc{cmd: exec.Command(setpriv, args...), done: make(chan struct{})}
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	e.cmd.Dir = "/"
	stderr, err := e.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first line is the address; all of it is kept.
	line := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			e.stderr.Write([]byte(s.Text() + "\n"))
			if a, ok := strings.CutPrefix(s.Text(), "serving nfs "); ok {
				line <- a
			}
		}
	}()
	go func() {
		<-copied
		e.err = e.cmd.Wait()
		close(e.done)
	}()
	t.Cleanup(func() {
		select {
		case <-e.done: // ended by the test
		default:
			e.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-e.done:
				if e.err != nil {
					t.Errorf("perfuse nfs after SIGTERM: %v", e.err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("perfuse nfs still running 10 s after SIGTERM; killing it")
				e.cmd.Process.Kill()
				<-e.done
			}
		}
		if t.Failed() {
			t.Logf("perfuse nfs (%v) said:\n%s", e.err, e.stderr.String())
		}
	})
	select {
	case a := <-line:
		port, ok := strings.CutPrefix(a, "127.0.0.1:")
		if e.port, err = strconv.Atoi(port); !ok || err != nil {
			t.Fatalf("perfuse nfs serves on %q", a)
		}
	case <-e.done:
		t.Fatalf("perfuse nfs ended (%v): %s", e.err, e.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("perfuse nfs did not start in 30 s: %s", e.stderr.String())
	}
	return e
}

// url is the libnfs URL of path in the export: MOUNT and NFS on one port,
// NFSv3, and no MOUNT EXPORT call (go-nfs has none).
func (e *exportProc) url(path string) string {
	return fmt.Sprintf("nfs://127.0.0.1//%s?nfsport=%d&mountport=%d&version=3&auto-traverse-mounts=0", path, e.port, e.port)
}

// libnfs runs one of libnfs's tools, bounded, and returns its output.
func libnfs(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	p := need(t, tool, "libnfs-utils")
	cmd := exec.Command(p, args...)
	cmd.WaitDelay = time.Second
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustLibnfs(t *testing.T, tool string, args ...string) string {
	t.Helper()
	out, err := libnfs(t, tool, args...)
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", tool, args, err, out)
	}
	return out
}

// lsNames returns the names nfs-ls -R lists (its last field), sorted.
func lsNames(t *testing.T, e *exportProc, dir string) []string {
	t.Helper()
	var out []string
	for l := range strings.Lines(mustLibnfs(t, "nfs-ls", "-R", e.url(dir))) {
		if f := strings.Fields(l); len(f) >= 6 {
			// The name, which may hold spaces, follows the size.
			out = append(out, strings.Join(f[5:], " "))
		}
	}
	slices.Sort(out)
	return out
}

// copyOut copies every file of files out of the export with nfs-cp and
// compares them.
func copyOut(t *testing.T, e *exportProc, files map[string][]byte) {
	t.Helper()
	local := t.TempDir()
	for p, want := range files {
		dst := filepath.Join(local, strings.ReplaceAll(p, "/", "_"))
		mustLibnfs(t, "nfs-cp", e.url(p), dst)
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("nfs-cp out %s: %d bytes; want %d", p, len(got), len(want))
		}
	}
}

func treeNames(files map[string][]byte) []string {
	var out []string
	for p := range files {
		out = append(out, p)
	}
	out = append(out, dirsOf(files)...)
	slices.Sort(out)
	return out
}
