package peerutil

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func TestSocketPairEnds(t *testing.T) {
	client, daemon, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer unix.Close(daemon)

	// Without CAP_NET_ADMIN the buffers are capped at the sysctl; the
	// kernel reports twice the value set.
	limit := BufSize
	for _, sysctl := range []string{"wmem_max", "rmem_max"} {
		b, err := os.ReadFile("/proc/sys/net/core/" + sysctl)
		if n, err2 := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && err2 == nil && n < limit && os.Geteuid() != 0 {
			limit = n
		}
	}
	cfd := int(client.Fd()) // makes client blocking; checked before, below
	for _, fd := range []int{cfd, daemon} {
		for _, opt := range []int{unix.SO_SNDBUF, unix.SO_RCVBUF} {
			if n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt); err != nil || n < 2*limit {
				t.Errorf("fd %d option %d: %d, %v; want at least %d", fd, opt, n, err, 2*limit)
			}
		}
		if typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); typ != unix.SOCK_SEQPACKET {
			t.Errorf("fd %d: socket type %d, want SOCK_SEQPACKET", fd, typ)
		}
		if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("fd %d is not close-on-exec", fd)
		}
	}
	if fl, _ := unix.FcntlInt(uintptr(daemon), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Errorf("daemon end is non-blocking, want blocking as /dev/fuse")
	}
}

func TestClientEndIsNonBlocking(t *testing.T) {
	client, daemon, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer unix.Close(daemon)
	raw, err := client.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fl int
	raw.Control(func(fd uintptr) { fl, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if fl&unix.O_NONBLOCK == 0 {
		t.Errorf("client end is blocking; Close would not wake a pending Read")
	}
}

func TestBytesAndDecodeRoundTrip(t *testing.T) {
	out := fuse.InitOut{Major: 7, Minor: 31, MaxWrite: 1 << 20, Flags2: 3}
	b := Bytes(out)
	if len(b) != 64 || b[0] != 7 || b[4] != 31 {
		t.Fatalf("Bytes(InitOut) = %x, want 64 bytes starting 7, 31", b)
	}
	if got, ok := Decode[fuse.InitOut](b); !ok || got != out {
		t.Errorf("Decode = %+v, %v; want %+v", got, ok, out)
	}
	if got, ok := Decode[fuse.InitOut](b[:24]); ok || got.MaxWrite != 1<<20 || got.Flags2 != 0 {
		t.Errorf("Decode of 24 bytes = %+v, %v; want the prefix and ok=false", got, ok)
	}
	if string(Bytes([]byte("raw"))) != "raw" || len(Bytes(&out)) != 64 {
		t.Errorf("Bytes of []byte or of a pointer is wrong")
	}
	if p := InPayload(fuse.ReadIn{Fh: 1}); len(p) != 40 || p[0] != 1 {
		t.Errorf("InPayload(ReadIn) = %x, want the 40 bytes after the header", p)
	}
}
