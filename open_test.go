package perfuse

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

// openFdCount counts this process's descriptors. Call it once before taking
// a baseline: the first directory read may create the runtime's poller fds.
func openFdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFdCount waits for the descriptor count to return to want: a reaped
// child's pidfd is closed only when its Wait returns.
func waitFdCount(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := openFdCount(t)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("descriptor leak: %d open, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOpenOrdinaryPath(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	_, err := Open(missing, os.O_RDONLY, 0)
	_, want := os.OpenFile(missing, os.O_RDONLY, 0)
	if err == nil || err.Error() != want.Error() || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want %v", err, want)
	}

	name := filepath.Join(dir, "file")
	fd, err := Open(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if st, err := os.Stat(name); err != nil || st.Mode().Perm() != 0o600 || st.Size() != 2 {
		t.Errorf("created file: %v, %v", st, err)
	}
	if _, err := Open(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Open(O_EXCL existing) = %v, want ErrExist", err)
	}
}

// listeningStandIn is a SEQPACKET listener at PERFUSE_SOCKET, where Open
// connects; PERFUSED names nothing, so that Open never starts one.
func listeningStandIn(t *testing.T) *net.UnixListener {
	path := filepath.Join(t.TempDir(), "perfused.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	t.Setenv("PERFUSE_SOCKET", path)
	t.Setenv("PERFUSED", filepath.Join(t.TempDir(), "must-not-run"))
	return ln
}

// TestOpenDaemonMode talks to a listening perfused stand-in.
func TestOpenDaemonMode(t *testing.T) {
	ln := listeningStandIn(t)
	t.Setenv("PERFUSE_BUFSIZE", "0x20000")

	fd, err := Open(FusePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if typ, err := sock.Type(fd); err != nil || typ != unix.SOCK_SEQPACKET {
		t.Errorf("socket type = %d, %v; want SOCK_SEQPACKET", typ, err)
	}
	if n, err := sock.SendBuffer(fd); err != nil || n != 2*0x20000 {
		t.Errorf("SO_SNDBUF = %d, %v; want %d (PERFUSE_BUFSIZE doubled)", n, err, 2*0x20000)
	}
	if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("socket is not close-on-exec")
	}

	quickMountAnswer(t) // this test accepts only after Mount returns
	data := "fd=" + itoa(uintptr(fd)) + ",rootmode=40000,user_id=0"
	if err := Mount("squashfuse", "/mnt/data", "fuse.squashfuse", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		t.Fatal(err)
	}

	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cf, err := conn.File() // non-blocking, as the net package leaves it
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	mi, err := ReadMountFrame(cf)
	if err != nil {
		t.Fatal(err)
	}
	want := MountInfo{
		Source: "squashfuse", Target: "/mnt/data", FSType: "fuse.squashfuse",
		Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: data,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid()),
	}
	if *mi != want {
		t.Errorf("ReadMountFrame = %+v, want %+v", *mi, want)
	}
}

// TestOpenConnectError checks that only "nobody listens" leads to a spawn.
func TestOpenConnectError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dgram.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("PERFUSE_SOCKET", path)
	t.Setenv("PERFUSED", filepath.Join(t.TempDir(), "must-not-run"))
	openFdCount(t)
	before := openFdCount(t)
	if _, err := Open(FusePath, os.O_RDWR, 0); !errors.Is(err, syscall.EPROTOTYPE) {
		t.Errorf("Open with a DGRAM socket at PERFUSE_SOCKET = %v, want EPROTOTYPE", err)
	}
	waitFdCount(t, before)
}

func buildStandin(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("PERFUSE_TEST_STRICT") == "1" {
			t.Fatal("go not on PATH (PERFUSE_TEST_STRICT=1):", err)
		}
		t.Skip("go not on PATH:", err)
	}
	bin := filepath.Join(t.TempDir(), "perfused")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, "./internal/standin")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/standin: %v\n%s", err, out)
	}
	return bin
}

func TestOpenAutoSpawn(t *testing.T) {
	bin := buildStandin(t)
	out := filepath.Join(t.TempDir(), "mountinfo.json")
	t.Setenv("PERFUSED", bin)
	t.Setenv("PERFUSE_SOCKET", filepath.Join(t.TempDir(), "nobody-listens.sock"))
	t.Setenv("PERFUSE_STANDIN_OUT", out)

	openFdCount(t)
	before := openFdCount(t)

	fd, err := Open(FusePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if typ, err := sock.Type(fd); err != nil || typ != unix.SOCK_SEQPACKET {
		t.Errorf("socket type = %d, %v; want SOCK_SEQPACKET", typ, err)
	}
	data := "fd=" + itoa(uintptr(fd)) + ",rootmode=40000"
	if err := Mount("squashfuse", "/mnt/data", "fuse.squashfuse", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}

	var b []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err = os.ReadFile(out); err == nil {
			break
		}
		if time.Now().After(deadline) {
			unix.Close(fd)
			t.Fatalf("stand-in wrote no %s: %v", out, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Close(fd)

	var mi MountInfo
	if err := json.Unmarshal(b, &mi); err != nil {
		t.Fatalf("stand-in output %q: %v", b, err)
	}
	want := MountInfo{
		Source: "squashfuse", Target: "/mnt/data", FSType: "fuse.squashfuse",
		Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: data,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid()),
	}
	if mi != want {
		t.Errorf("stand-in got %+v, want %+v", mi, want)
	}
	waitFdCount(t, before)
}

func TestOpenSpawnFailure(t *testing.T) {
	t.Setenv("PERFUSED", filepath.Join(t.TempDir(), "no-such-perfused"))
	t.Setenv("PERFUSE_SOCKET", filepath.Join(t.TempDir(), "nobody-listens.sock"))
	openFdCount(t)
	before := openFdCount(t)
	fd, err := Open(FusePath, os.O_RDWR, 0)
	if err == nil {
		unix.Close(fd)
		t.Fatal("Open succeeded without a perfused to start")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open error = %v, want one wrapping ErrNotExist", err)
	}
	waitFdCount(t, before)
}

// The descriptor Open returns is the caller's until it closes it: nothing
// closes it when the garbage collector runs, though only its number is
// kept (as a daemon serving "/dev/fd/N" keeps it).
func TestOpenDescriptorOutlivesGC(t *testing.T) {
	ln := listeningStandIn(t)
	fd, err := Open(FusePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	peer, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := unix.Write(fd, []byte("frame")); err != nil {
		t.Fatalf("write on Open's descriptor after GC: %v", err)
	}
	buf := make([]byte, 16)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := peer.Read(buf); err != nil || string(buf[:n]) != "frame" {
		t.Fatalf("perfused end read %q, %v", buf[:n], err)
	}
}
