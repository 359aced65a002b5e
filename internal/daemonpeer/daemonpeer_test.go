package daemonpeer

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/peerutil"
	"github.com/perfuse-go/perfuse/internal/wire"
)

// kernelFlags is what a Linux kernel might offer, without the splice and
// passthrough flags a socket peer must never be offered.
const kernelFlags = fuse.CAP_ASYNC_READ | fuse.CAP_POSIX_LOCKS | fuse.CAP_ATOMIC_O_TRUNC |
	fuse.CAP_BIG_WRITES | fuse.CAP_DONT_MASK | fuse.CAP_AUTO_INVAL_DATA |
	fuse.CAP_READDIRPLUS | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_MAX_PAGES

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// initAndLookup does the INIT exchange as a kernel would, checks that the
// daemon answers as libfuse 3.14 does, and looks name up in the root.
func initAndLookup(t *testing.T, d *Daemon, name string) fuse.EntryOut {
	t.Helper()
	c := peerutil.NewClient(t, d.Conn)
	out, n := c.Init(31, kernelFlags)
	t.Logf("INIT reply: %d bytes, %d.%d max_write %d max_readahead %d flags %#x max_pages %d max_background %d",
		n, out.Major, out.Minor, out.MaxWrite, out.MaxReadAhead, out.Flags, out.MaxPages, out.MaxBackground)
	if out.Major != 7 || out.Minor != 31 || n != 64 || out.MaxWrite == 0 {
		t.Errorf("INIT reply (%d bytes) %+v, want 7.31 with a 64-byte init_out", n, out)
	}
	h, p := c.Call(wire.OpLookup, 1, peerutil.CString(name))
	e, ok := peerutil.Decode[fuse.EntryOut](p)
	if h.Status != 0 || !ok {
		t.Fatalf("LOOKUP(%q): status %d, %d payload bytes", name, h.Status, len(p))
	}
	return e
}

func TestSquashfuseServesOverSocket(t *testing.T) {
	d := Squashfuse(t, writeTree(t, map[string]string{"hello.txt": "hello\n"}))
	e := initAndLookup(t, d, "hello.txt")
	if e.Size != 6 || e.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("hello.txt: size %d mode %o, want a 6-byte regular file", e.Size, e.Mode)
	}
}

func TestFuseOverlayfsServesOverSocket(t *testing.T) {
	d := newOverlay(t, map[string]string{"low.txt": "lower\n"})
	e := initAndLookup(t, d, "low.txt")
	if e.Size != 6 || e.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("low.txt: size %d mode %o, want a 6-byte regular file", e.Size, e.Mode)
	}
}

func TestFuseOverlayfsRefusesInitWithoutDontMask(t *testing.T) {
	d := newOverlay(t, nil)
	c := peerutil.NewClient(t, d.Conn)
	h, _ := c.Call(wire.OpInit, 0, peerutil.InPayload(fuse.InitIn{Major: 7, Minor: 31, Flags: kernelFlags &^ fuse.CAP_DONT_MASK}))
	if h.Status != -int32(syscall.EPROTO) {
		t.Errorf("INIT without DONT_MASK: status %d, want -EPROTO", h.Status)
	}
	d.Wait()
	if want := "requested capabilities 0x40 that are not supported by kernel"; !strings.Contains(d.Stderr(), want) {
		t.Errorf("stderr %q, want it to contain %q", d.Stderr(), want)
	}
}

func newOverlay(t *testing.T, files map[string]string) *Daemon {
	t.Helper()
	lower := writeTree(t, files)
	upperBase := t.TempDir()
	upper, work := filepath.Join(upperBase, "upper"), filepath.Join(upperBase, "work")
	for _, dir := range []string{upper, work} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return FuseOverlayfs(t, lower, upper, work)
}

func TestDaemonExitsWhenSocketCloses(t *testing.T) {
	d := Squashfuse(t, writeTree(t, map[string]string{"f": "x"}))
	peerutil.NewClient(t, d.Conn).Init(31, kernelFlags)
	start := time.Now()
	d.Conn.Close()
	err := d.Wait()
	t.Logf("exit after %v: %v; stderr %q", time.Since(start), err, d.Stderr())
	if !strings.Contains(d.Stderr(), "short read on fuse device") {
		t.Errorf("stderr %q, want libfuse's \"short read on fuse device\"", d.Stderr())
	}
}

func TestKillClosesDaemonEnd(t *testing.T) {
	d := Squashfuse(t, writeTree(t, map[string]string{"f": "x"}))
	peerutil.NewClient(t, d.Conn).Init(31, kernelFlags)
	d.Kill()
	if !d.Exited() {
		t.Fatal("Kill returned before the daemon exited")
	}
	buf := make([]byte, 64)
	d.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := d.Conn.Read(buf); err != io.EOF {
		t.Errorf("read after Kill: %d bytes, %v; want EOF", n, err)
	}
	var ws syscall.WaitStatus
	if err := d.Wait(); err == nil {
		t.Errorf("Wait after Kill: nil, want the signal")
	} else if ee, ok := err.(interface{ Sys() any }); ok {
		ws, _ = ee.Sys().(syscall.WaitStatus)
		if ws.Signal() != syscall.SIGKILL {
			t.Errorf("exit status %v, want killed by SIGKILL", err)
		}
	}
}

// stopTB records how a helper stopped the test: Skip or Fatal.
type stopTB struct {
	testing.TB
	how, msg string
}

func (s *stopTB) Skip(args ...any) { s.stop("skip", fmt.Sprint(args...)) }
func (s *stopTB) Fatalf(format string, args ...any) {
	s.stop("fatal", fmt.Sprintf(format, args...))
}
func (s *stopTB) stop(how, msg string) {
	s.how, s.msg = how, msg
	runtime.Goexit()
}

// run calls f with s on a goroutine of its own, as Skip and Fatal end it.
func (s *stopTB) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(s)
	}()
	<-done
}

func TestMissingProgramSkipsUnlessStrict(t *testing.T) {
	for _, strict := range []string{"", "1"} {
		t.Setenv("PERFUSE_TEST_STRICT", strict)
		s := &stopTB{TB: t}
		s.run(func(tb testing.TB) { Start(tb, "perfuse-no-such-daemon", "-f", "/dev/fd/3") })
		want := "skip"
		if strict == "1" {
			want = "fatal"
		}
		if s.how != want || !strings.Contains(s.msg, "perfuse-no-such-daemon not installed: apt-get install perfuse-no-such-daemon") {
			t.Errorf("PERFUSE_TEST_STRICT=%q: %s %q, want %s with an install hint", strict, s.how, s.msg, want)
		}
	}
}
