// Package peerutil holds what the test peers (fakepeer, gofusepeer,
// daemonpeer) share: the socketpair a FUSE client and a daemon talk over, raw
// encoding of go-fuse wire structs, opcode names, and a tiny FUSE client for
// the peers' own tests.
package peerutil

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BufSize is the SO_SNDBUF/SO_RCVBUF asked for on both ends. On an AF_UNIX
// SEQPACKET socket a record larger than the send buffer fails with EMSGSIZE,
// so the buffer must hold the largest frame either side may send (1 MiB
// writes from libfuse daemons); the kernel doubles the value.
const BufSize = 2 << 20

// SocketPair returns a connected AF_UNIX SOCK_SEQPACKET pair with BufSize
// buffers on both ends. Both ends are close-on-exec, so a daemon started later
// inherits only the end handed to it on purpose and sees EOF when we close.
//
// client is non-blocking and wrapped by os.NewFile, which registers it with
// Go's poller: deadlines work and Close wakes a pending Read. daemon is a raw
// blocking descriptor, as a FUSE daemon expects of /dev/fuse; the caller owns
// it.
func SocketPair() (client *os.File, daemon int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("socketpair: %w", err)
	}
	for _, fd := range fds {
		if err := setBuffers(fd); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, -1, err
		}
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, -1, err
	}
	return os.NewFile(uintptr(fds[0]), "fuse-client"), fds[1], nil
}

// setBuffers sets both buffers of fd to BufSize. The *FORCE options ignore
// net.core.[rw]mem_max but need CAP_NET_ADMIN; without it the plain options
// apply, capped at the sysctl.
func setBuffers(fd int) error {
	for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], BufSize) == nil {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], BufSize); err != nil {
			return fmt.Errorf("setsockopt buffer size: %w", err)
		}
	}
	return nil
}

// Bytes returns the wire form of v: v itself when it is a []byte, else the
// raw memory of a fixed-size value (a go-fuse wire struct, or a pointer to
// one), in host byte order and with the kernel's layout, as go-fuse sends it.
// It panics for values that are not fixed-size.
func Bytes(v any) []byte {
	if b, ok := v.([]byte); ok {
		return b
	}
	if binary.Size(v) < 0 {
		panic(fmt.Sprintf("peerutil: %T is neither []byte nor a fixed-size value", v))
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	p := reflect.New(rv.Type())
	p.Elem().Set(rv)
	return unsafe.Slice((*byte)(p.UnsafePointer()), rv.Type().Size())
}

// Decode fills a T (a pointer-free wire struct) from the start of b. ok is
// false when b is shorter than T; v then holds the bytes there were, the rest
// zero, which is how a FUSE peer reads the shorter structs of old minors.
func Decode[T any](b []byte) (v T, ok bool) {
	if binary.Size(&v) < 0 {
		panic(fmt.Sprintf("peerutil: %T is not a fixed-size value", v))
	}
	dst := unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v))
	n := copy(dst, b)
	return v, n == len(dst)
}

// CString returns s as a NUL-terminated name, as FUSE requests carry names.
func CString(s string) []byte {
	return append([]byte(s), 0)
}

// LockedBuffer is a bytes.Buffer safe for the writer goroutines of os/exec
// and a reader in the test.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Clone(b.buf.String())
}
