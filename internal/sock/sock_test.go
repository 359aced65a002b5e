package sock

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (a, b *os.File) {
	t.Helper()
	a, b, typ, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	if typ != unix.SOCK_SEQPACKET {
		t.Fatalf("Pair type = %d, want SOCK_SEQPACKET", typ)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func fd(f *os.File) int { return int(f.Fd()) }

func TestPair(t *testing.T) {
	a, b := pair(t)
	for _, f := range []*os.File{a, b} {
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: FD_CLOEXEC not set", f.Name())
		}
		if typ, err := Type(fd(f)); err != nil || typ != unix.SOCK_SEQPACKET {
			t.Errorf("Type = %d, %v; want SOCK_SEQPACKET", typ, err)
		}
	}
	// Record boundaries are kept.
	if err := SendRecord(fd(a), []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := SendRecord(fd(a), []byte("two!")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for _, want := range []string{"one", "two!"} {
		n, _, err := RecvRecord(fd(b), buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("RecvRecord = %q, %v; want %q", buf[:n], err, want)
		}
	}
}

func TestType(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if typ, err := Type(fds[0]); err != nil || typ != unix.SOCK_DGRAM {
		t.Errorf("Type = %d, %v; want SOCK_DGRAM", typ, err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if _, err := Type(fd(r)); !errors.Is(err, unix.ENOTSOCK) {
		t.Errorf("Type(pipe) err = %v, want ENOTSOCK", err)
	}
}

func TestSetBuffers(t *testing.T) {
	a, _ := pair(t)
	const size = 1 << 20
	before, err := SendBuffer(fd(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := SetBuffers(fd(a), size); err != nil {
		t.Fatal(err)
	}
	got, err := SendBuffer(fd(a))
	if err != nil {
		t.Fatal(err)
	}
	// Without CAP_NET_ADMIN the kernel caps at wmem_max, then doubles.
	want := 2 * size
	if b, err := os.ReadFile("/proc/sys/net/core/wmem_max"); err == nil && os.Geteuid() != 0 {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && max < size {
			want = 2 * max
		}
	}
	if got < want {
		t.Errorf("SendBuffer = %d (was %d), want >= %d", got, before, want)
	}
	rcv, err := unix.GetsockoptInt(fd(a), unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil || rcv < want {
		t.Errorf("SO_RCVBUF = %d, %v; want >= %d", rcv, err, want)
	}
	if err := SetBuffers(fd(a), -1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetBuffers(-1) = %v, want EINVAL", err)
	}
	if err := SetBuffers(-1, size); !errors.Is(err, unix.EBADF) {
		t.Errorf("SetBuffers(bad fd) = %v, want EBADF", err)
	}
}

func TestPeerCred(t *testing.T) {
	a, b := pair(t)
	for _, f := range []*os.File{a, b} {
		c, err := PeerCred(fd(f))
		if err != nil {
			t.Fatal(err)
		}
		if int(c.Pid) != os.Getpid() || int(c.Uid) != os.Getuid() || int(c.Gid) != os.Getgid() {
			t.Errorf("PeerCred = %+v, want pid %d uid %d gid %d", c, os.Getpid(), os.Getuid(), os.Getgid())
		}
	}
}

func TestRecvRecordCredentials(t *testing.T) {
	a, b := pair(t)
	buf := make([]byte, 16)

	if err := SendRecord(fd(a), []byte("plain")); err != nil {
		t.Fatal(err)
	}
	if _, cred, err := RecvRecord(fd(b), buf); err != nil || cred != nil {
		t.Fatalf("without SO_PASSCRED: cred %+v, err %v; want nil, nil", cred, err)
	}

	if err := SetPassCred(fd(b), true); err != nil {
		t.Fatal(err)
	}
	if err := SendRecord(fd(a), []byte("hello")); err != nil {
		t.Fatal(err)
	}
	n, cred, err := RecvRecord(fd(b), buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("RecvRecord = %q, %v", buf[:n], err)
	}
	if cred == nil {
		t.Fatal("no SCM_CREDENTIALS with SO_PASSCRED on")
	}
	if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() || int(cred.Gid) != os.Getgid() {
		t.Errorf("cred = %+v, want pid %d uid %d gid %d", cred, os.Getpid(), os.Getuid(), os.Getgid())
	}

	if err := SetPassCred(fd(b), false); err != nil {
		t.Fatal(err)
	}
	if v, _ := unix.GetsockoptInt(fd(b), unix.SOL_SOCKET, unix.SO_PASSCRED); v != 0 {
		t.Errorf("SO_PASSCRED = %d after SetPassCred(false)", v)
	}
}

func TestRecvRecordTruncated(t *testing.T) {
	a, b := pair(t)
	if err := SendRecord(fd(a), bytes.Repeat([]byte{'x'}, 100)); err != nil {
		t.Fatal(err)
	}
	if err := SendRecord(fd(a), []byte("next")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	n, _, err := RecvRecord(fd(b), buf)
	if !errors.Is(err, unix.EMSGSIZE) || n != len(buf) {
		t.Fatalf("RecvRecord = %d, %v; want %d, EMSGSIZE", n, err, len(buf))
	}
	// The rest of the long record is gone; the next one is intact.
	n, _, err = RecvRecord(fd(b), buf)
	if err != nil || string(buf[:n]) != "next" {
		t.Fatalf("RecvRecord after truncation = %q, %v", buf[:n], err)
	}
}

func TestRecvRecordEOF(t *testing.T) {
	a, b := pair(t)
	a.Close()
	n, _, err := RecvRecord(fd(b), make([]byte, 8))
	if err != io.EOF || n != 0 {
		t.Fatalf("RecvRecord after peer close = %d, %v; want 0, io.EOF", n, err)
	}
	if err := SendRecord(fd(b), []byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("SendRecord to closed peer = %v, want EPIPE", err)
	}
}

func TestRecvRecordEmptyDatagram(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := SendRecord(fds[0], nil); err != nil {
		t.Fatal(err)
	}
	n, _, err := RecvRecord(fds[1], make([]byte, 8))
	if err != nil || n != 0 {
		t.Fatalf("RecvRecord(empty datagram) = %d, %v; want 0, nil", n, err)
	}
}

func TestRecvRecordNonBlocking(t *testing.T) {
	a, b := pair(t)
	if err := unix.SetNonblock(fd(b), true); err != nil {
		t.Fatal(err)
	}
	afd, bfd := fd(a), fd(b)
	sent := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		sent <- SendRecord(afd, []byte("late"))
	}()
	buf := make([]byte, 8)
	n, _, err := RecvRecord(bfd, buf)
	if serr := <-sent; serr != nil {
		t.Fatal(serr)
	}
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("RecvRecord(non-blocking) = %q, %v", buf[:n], err)
	}
}

func countFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

func TestRecvRecordClosesPassedFds(t *testing.T) {
	a, b := pair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	countFds(t)
	before := countFds(t)
	rights := unix.UnixRights(int(r.Fd()), int(w.Fd()))
	if err := unix.Sendmsg(fd(a), []byte("fds"), rights, nil, 0); err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	if _, _, err := RecvRecord(fd(b), make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if after := countFds(t); after != before-2 {
		t.Errorf("fds: %d before, %d after receiving 2 and closing the originals; want %d", before, after, before-2)
	}
}

// MaxRecord is exact: a record of that size goes, one byte more is EMSGSIZE.
func TestMaxRecord(t *testing.T) {
	a, b := pair(t)
	if err := SetBuffers(fd(a), 64<<10); err != nil {
		t.Fatal(err)
	}
	if err := SetBuffers(fd(b), 1<<20); err != nil {
		t.Fatal(err)
	}
	n, err := MaxRecord(fd(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := SendRecord(fd(a), make([]byte, n)); err != nil {
		t.Errorf("record of MaxRecord = %d bytes: %v", n, err)
	}
	if err := SendRecord(fd(a), make([]byte, n+1)); !errors.Is(err, unix.EMSGSIZE) {
		t.Errorf("record of MaxRecord+1 bytes: %v, want EMSGSIZE", err)
	}
}
