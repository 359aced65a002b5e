package perfuse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata golden files")

const mountGoldenPath = "testdata/mountframe.golden"

// goldenMount is the frame stored in testdata/mountframe.golden.
var goldenMount = MountInfo{
	Source: "squashfuse",
	Target: "/mnt/data",
	FSType: "fuse.squashfuse",
	Flags:  unix.MS_NOSUID | unix.MS_NODEV,
	Data:   "fd=3,rootmode=40000",
}

func encodeInfo(mi *MountInfo) ([]byte, error) {
	return EncodeMountFrame(mi.Source, mi.Target, mi.FSType, mi.Flags, mi.Data, mi.Sock)
}

func goldenFrame(t *testing.T) []byte {
	t.Helper()
	b, err := encodeInfo(&goldenMount)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMountFrameGolden(t *testing.T) {
	got := goldenFrame(t)
	if *updateGolden {
		if err := os.WriteFile(mountGoldenPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(mountGoldenPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("encoded frame differs from %s (run with -update to rewrite)\ngot  %x\nwant %x", mountGoldenPath, got, want)
	}
}

// TestMountFrameLayout checks the §1.6 offsets independently of the golden file.
func TestMountFrameLayout(t *testing.T) {
	b := goldenFrame(t)
	ne := binary.NativeEndian
	strs := "squashfuse\x00/mnt/data\x00fuse.squashfuse\x00fd=3,rootmode=40000\x00"
	if len(b) != 56+len(strs) {
		t.Fatalf("frame is %d bytes, want %d", len(b), 56+len(strs))
	}
	for _, c := range []struct {
		name string
		off  int
		want uint32
	}{
		{"len", 0, uint32(len(b))},
		{"error", 4, 0},
		{"source_len", 28, 11},
		{"target_len", 32, 10},
		{"fstype_len", 36, 16},
		{"mountflags", 40, 6},
		{"data_len", 44, 20},
		{"sock_len", 48, 0},
		{"tail padding", 52, 0},
	} {
		if got := ne.Uint32(b[c.off:]); got != c.want {
			t.Errorf("%s @%d = %d, want %d", c.name, c.off, got, c.want)
		}
	}
	if u := ne.Uint64(b[8:]); u != math.MaxUint64 {
		t.Errorf("unique = %#x", u)
	}
	if m := string(b[16:28]); m != "noFuseRq\x00\x00\x00\x00" {
		t.Errorf("magic+padding = %q", m)
	}
	if s := string(b[56:]); s != strs {
		t.Errorf("strings = %q, want %q", s, strs)
	}
}

func TestMountFrameRoundTrip(t *testing.T) {
	for _, mi := range []MountInfo{
		goldenMount,
		{},
		{Target: "/mnt", Sock: "/tmp/prog-42", Flags: math.MaxUint32},
		{
			Source: strings.Repeat("s", MaxMountPathLen-1),
			Target: strings.Repeat("t", MaxMountPathLen-1),
			FSType: strings.Repeat("f", MaxMountFSTypeLen-1),
			Data:   strings.Repeat("d", MaxMountDataLen-1),
			Sock:   strings.Repeat("k", MaxMountSockLen-1),
		},
	} {
		b, err := encodeInfo(&mi)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMountFrame(b)
		if err != nil {
			t.Fatalf("DecodeMountFrame(%+v): %v", mi, err)
		}
		if *got != mi {
			t.Errorf("round trip: got %+v, want %+v", *got, mi)
		}
	}
}

func TestEncodeMountFrameRejects(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	for _, c := range []struct {
		name                               string
		source, target, fstype, data, sock string
	}{
		{name: "NUL in source", source: "a\x00b"},
		{name: "NUL in target", target: "/mnt\x00"},
		{name: "NUL in fstype", fstype: "\x00"},
		{name: "NUL in data", data: "fd=3\x00x"},
		{name: "NUL in sock", sock: "/tmp/\x00"},
		{name: "long target", target: long(MaxMountPathLen)},
		{name: "long fstype", fstype: long(MaxMountFSTypeLen)},
		{name: "long data", data: long(MaxMountDataLen)},
		{name: "long sock", sock: long(MaxMountSockLen)},
	} {
		_, err := EncodeMountFrame(c.source, c.target, c.fstype, 0, c.data, c.sock)
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: err = %v, want EINVAL", c.name, err)
		}
	}
}

func TestDecodeMountFrameRejects(t *testing.T) {
	ne := binary.NativeEndian
	golden := goldenFrame(t)
	// mut returns a copy of the golden frame changed by f.
	mut := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(golden))
	}
	set := func(off int, v uint32) []byte {
		return mut(func(b []byte) []byte { ne.PutUint32(b[off:], v); return b })
	}
	add := func(b []byte, off int, d int) {
		ne.PutUint32(b[off:], uint32(int(ne.Uint32(b[off:]))+d))
	}
	// build makes a frame with the given string fields, bypassing
	// EncodeMountFrame's checks.
	build := func(fields ...[]byte) []byte {
		b := make([]byte, 56)
		copy(b[16:], "noFuseRq")
		ne.PutUint64(b[8:], math.MaxUint64)
		for i, off := range []int{28, 32, 36, 44, 48} {
			if i < len(fields) {
				ne.PutUint32(b[off:], uint32(len(fields[i])))
				b = append(b, fields[i]...)
			}
		}
		ne.PutUint32(b, uint32(len(b)))
		return b
	}
	huge := make([]byte, MaxMountFrameSize+1)
	copy(huge, build())
	ne.PutUint32(huge, uint32(len(huge)))

	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"shorter than header", golden[:55]},
		{"truncated", golden[:len(golden)-1]},
		{"trailing byte", append(bytes.Clone(golden), 0)},
		{"len mismatch", set(0, uint32(len(golden)+1))},
		{"len zero", set(0, 0)},
		{"non-zero error field", set(4, 1)},
		{"negative error field", set(4, uint32(0xfffffffe))}, // -ENOENT
		{"unique not all ones", mut(func(b []byte) []byte { b[8] = 0; return b })},
		{"bad magic", mut(func(b []byte) []byte { b[16] = 'N'; return b })},
		{"magic without NUL", mut(func(b []byte) []byte { b[24] = '!'; return b })},
		{"non-zero padding", mut(func(b []byte) []byte { b[26] = 1; return b })},
		{"non-zero tail padding", mut(func(b []byte) []byte { b[55] = 1; return b })},
		{"length overflow", set(28, math.MaxUint32)},
		{"huge data length", set(44, 1<<20)},
		{"sum mismatch", mut(func(b []byte) []byte { add(b, 28, -1); return b })},
		{"sum mismatch wraps", mut(func(b []byte) []byte { add(b, 28, 1); add(b, 32, -2); return b })},
		{"missing NUL", mut(func(b []byte) []byte { add(b, 28, -1); add(b, 32, 1); return b })},
		{"interior NUL", mut(func(b []byte) []byte { b[56+11+3] = 0; return b })},
		{"present but empty", build([]byte{0})},
		{"source too long", build(append(bytes.Repeat([]byte{'s'}, MaxMountPathLen), 0))},
		{"fstype too long", build(nil, nil, append(bytes.Repeat([]byte{'f'}, MaxMountFSTypeLen), 0))},
		{"sock too long", build(nil, nil, nil, nil, append(bytes.Repeat([]byte{'k'}, MaxMountSockLen), 0))},
		{"frame too large", huge},
	} {
		t.Run(c.name, func(t *testing.T) {
			mi, err := DecodeMountFrame(c.frame)
			if !errors.Is(err, syscall.EPROTO) {
				t.Fatalf("DecodeMountFrame = %+v, %v; want EPROTO", mi, err)
			}
			if mi != nil {
				t.Errorf("non-nil MountInfo with error")
			}
		})
	}
}

func TestMountBadFDOption(t *testing.T) {
	for _, data := range []string{
		"",
		"rootmode=40000",
		"xfd=3",
		"fd=",
		"fd=three",
		"fd=3x",
		"fd=-1",
		"rootmode=40000,fd=,fd=3", // only the first fd= counts
	} {
		err := Mount("src", "/mnt", "fuse", 0, data)
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Mount(data %q) = %v, want EINVAL", data, err)
		}
	}
}

func TestMountErrors(t *testing.T) {
	quickMountAnswer(t)
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	data := "fd=" + itoa(ours.Fd())
	if err := Mount("src", "/mnt", "fuse", 1<<32, data); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Mount with 33-bit flags = %v, want EINVAL", err)
	}
	if err := Mount("src", "/mn\x00t", "fuse", 0, data); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Mount with NUL in target = %v, want EINVAL", err)
	}
	theirs.Close()
	if err := Mount("src", "/mnt", "fuse", 0, data); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Mount to closed peer = %v, want EPIPE", err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if err := Mount("src", "/mnt", "fuse", 0, "fd="+itoa(r.Fd())); err == nil {
		t.Errorf("Mount to a pipe's read end succeeded")
	}
}

func itoa(fd uintptr) string { return strconv.Itoa(int(fd)) }

func TestMountOverSocketpair(t *testing.T) {
	for _, c := range []struct {
		name     string
		typ      int
		passCred bool
	}{
		{"seqpacket peercred", unix.SOCK_SEQPACKET, false},
		{"seqpacket passcred", unix.SOCK_SEQPACKET, true},
		{"dgram peercred", unix.SOCK_DGRAM, false},
		{"dgram passcred", unix.SOCK_DGRAM, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			quickMountAnswer(t)
			fds, err := unix.Socketpair(unix.AF_UNIX, c.typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
			defer ours.Close()
			defer theirs.Close()
			if c.passCred {
				if err := sock.SetPassCred(fds[1], true); err != nil {
					t.Fatal(err)
				}
			}
			data := "fd=" + itoa(ours.Fd()) + ",rootmode=40000"
			if err := Mount("squashfuse", "/mnt/data", "fuse.squashfuse", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
				t.Fatal(err)
			}
			mi, err := ReadMountFrame(theirs)
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
			if v, _ := unix.GetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_PASSCRED); v != 0 {
				t.Errorf("SO_PASSCRED still on after ReadMountFrame")
			}
		})
	}
}

func TestReadMountFrameRejects(t *testing.T) {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	defer theirs.Close()
	ofd := int(ours.Fd())

	if err := sock.SendRecord(ofd, []byte("not a mount frame at all")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMountFrame(theirs); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("garbage record: err = %v, want EPROTO", err)
	}

	// A record above the limit must not be cut down to a valid-looking one.
	for _, f := range []*os.File{ours, theirs} {
		if err := sock.SetBuffers(int(f.Fd()), 4<<20); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, MaxMountFrameSize+2)
	copy(big, goldenFrame(t))
	if err := sock.SendRecord(ofd, big); err != nil {
		t.Skip("cannot send a record above the limit:", err)
	}
	if _, err := ReadMountFrame(theirs); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("oversized record: err = %v, want EPROTO", err)
	}

	ours.Close()
	if _, err := ReadMountFrame(theirs); err == nil {
		t.Errorf("ReadMountFrame after peer close succeeded")
	}
}

func FuzzDecodeMountFrame(f *testing.F) {
	golden, err := os.ReadFile(filepath.FromSlash(mountGoldenPath))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	f.Add(golden[:56])
	f.Add(golden[:len(golden)-1])
	minimal, _ := EncodeMountFrame("", "", "", 0, "", "")
	f.Add(minimal)
	withSock, _ := EncodeMountFrame("", "/m", "", 1, "", "/tmp/x-1")
	f.Add(withSock)
	f.Fuzz(func(t *testing.T, b []byte) {
		mi, err := DecodeMountFrame(b)
		if err != nil {
			if !errors.Is(err, syscall.EPROTO) {
				t.Fatalf("error %v does not wrap EPROTO", err)
			}
			return
		}
		if mi.UID != 0 || mi.GID != 0 || mi.PID != 0 {
			t.Fatalf("credentials taken from the frame: %+v", mi)
		}
		re, err := encodeInfo(mi)
		if err != nil {
			t.Fatalf("accepted frame does not re-encode: %v", err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoded frame differs\nin  %x\nout %x", b, re)
		}
	})
}

// quickMountAnswer shortens Mount's wait for the relay's answer, for tests
// whose peer reads the frame later or never answers it.
func quickMountAnswer(t *testing.T) {
	old := MountAnswerWait
	MountAnswerWait = 100 * time.Millisecond
	t.Cleanup(func() { MountAnswerWait = old })
}

// A relay's refusal reaches Mount: the status record's errno and reason come
// back as its error, and the record is consumed.
func TestMountRefusalReachesClient(t *testing.T) {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	defer theirs.Close()
	relayed := make(chan struct{})
	defer func() { <-relayed }()
	go func() {
		defer close(relayed)
		if _, err := ReadMountFrame(theirs); err != nil {
			t.Error(err)
		}
		sock.SendRecord(int(theirs.Fd()), EncodeMountStatus(fmt.Errorf("mountpoint /x: not yours: %w", syscall.EACCES)))
		sock.SendRecord(int(theirs.Fd()), []byte("next"))
	}()
	err = Mount("src", "/x", "fuse", 0, "fd="+itoa(ours.Fd()))
	var refused *MountRefusedError
	if !errors.As(err, &refused) || !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "mountpoint /x: not yours") {
		t.Fatalf("Mount = %v, want the relay's EACCES and reason", err)
	}
	buf := make([]byte, 64)
	n, _, err := sock.RecvRecord(int(ours.Fd()), buf)
	if err != nil || string(buf[:n]) != "next" {
		t.Errorf("after the refusal the socket has %q, %v; want the status consumed", buf[:n], err)
	}
}

// An accepting relay's first record (its INIT) is left for the daemon, and
// the socket's blocking mode is restored. Closing without a status, as an
// older relay does, is no error for Mount.
func TestMountAcceptedLeavesInit(t *testing.T) {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	defer theirs.Close()
	init := make([]byte, 104)
	binary.NativeEndian.PutUint32(init[0:], 104)
	binary.NativeEndian.PutUint32(init[4:], 26) // FUSE_INIT
	binary.NativeEndian.PutUint64(init[8:], 2)
	relayed := make(chan struct{})
	defer func() { <-relayed }()
	go func() {
		defer close(relayed)
		ReadMountFrame(theirs)
		sock.SendRecord(int(theirs.Fd()), init)
	}()
	if err := Mount("src", "/x", "fuse", 0, "fd="+itoa(ours.Fd())); err != nil {
		t.Fatalf("Mount = %v", err)
	}
	if fl, _ := unix.FcntlInt(ours.Fd(), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Error("Mount left the daemon's socket non-blocking")
	}
	buf := make([]byte, 200)
	n, _, err := sock.RecvRecord(int(ours.Fd()), buf)
	if err != nil || !bytes.Equal(buf[:n], init) {
		t.Errorf("the daemon reads %d bytes, %v; want the relay's INIT", n, err)
	}

	a, b, _, _ := sock.Pair()
	defer a.Close()
	go func() { ReadMountFrame(b); b.Close() }()
	if err := Mount("src", "/x", "fuse", 0, "fd="+itoa(a.Fd())); err != nil {
		t.Errorf("Mount to a relay that closes without a status = %v, want nil (as before)", err)
	}
	<-relayed
}

func TestMountStatusRoundTripAndRejects(t *testing.T) {
	long := strings.Repeat("x", 3000)
	for _, c := range []struct {
		err   error
		errno syscall.Errno
		text  string
	}{
		{fmt.Errorf("too many mounts: %w", syscall.EUSERS), syscall.EUSERS, "too many mounts"},
		{errors.New("no errno"), syscall.EPERM, "no errno"},
		{errors.New("nul\x00inside"), syscall.EPERM, "nul inside"},
		{errors.New(long), syscall.EPERM, long[:MaxMountStatusReason]},
	} {
		b := EncodeMountStatus(c.err)
		if !IsMountStatus(b) {
			t.Errorf("%q: not a status record", c.text)
		}
		var r *MountRefusedError
		if err := DecodeMountStatus(b); !errors.As(err, &r) || r.Errno != c.errno || r.Reason != c.text && !strings.HasPrefix(r.Reason, c.text) {
			t.Errorf("round trip of %v: %v", c.err, err)
		}
	}
	good := EncodeMountStatus(syscall.EACCES)
	frame, _ := EncodeMountFrame("s", "/t", "", 0, "", "")
	for name, b := range map[string][]byte{
		"short":         good[:20],
		"a mount frame": frame,
		"bad len":       append(append([]byte(nil), good...), 0),
		"errno 0":       func() []byte { c := append([]byte(nil), good...); binary.NativeEndian.PutUint32(c[4:], 0); return c }(),
		"no NUL":        func() []byte { c := append([]byte(nil), good...); c[len(c)-1] = 'x'; return c }(),
	} {
		if err := DecodeMountStatus(b); !errors.Is(err, syscall.EPROTO) {
			t.Errorf("%s: DecodeMountStatus = %v, want EPROTO", name, err)
		}
	}
}

// A relay that refuses the connection before the frame is sent (over its
// limits) has closed it: Mount still returns the reason it left.
func TestMountRefusedBeforeTheFrame(t *testing.T) {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	sock.SendRecord(int(theirs.Fd()), EncodeMountStatus(fmt.Errorf("too many connections: %w", syscall.EAGAIN)))
	theirs.Close()
	err = Mount("src", "/x", "fuse", 0, "fd="+itoa(ours.Fd()))
	if !errors.Is(err, syscall.EAGAIN) || !strings.Contains(err.Error(), "too many connections") {
		t.Errorf("Mount = %v, want the relay's EAGAIN and reason", err)
	}
}

// A relay that refuses and closes with the frame unread leaves ECONNRESET
// ahead of its status record: Mount still returns the reason.
func TestMountRefusedWithFrameUnread(t *testing.T) {
	for range 20 {
		ours, theirs, _, err := sock.Pair()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			var b [1]byte
			unix.Recvfrom(int(theirs.Fd()), b[:], unix.MSG_PEEK) // the frame is there
			sock.SendRecord(int(theirs.Fd()), EncodeMountStatus(fmt.Errorf("no: %w", syscall.EUSERS)))
			theirs.Close()
		}()
		err = Mount("src", "/x", "fuse", 0, "fd="+itoa(ours.Fd()))
		ours.Close()
		if !errors.Is(err, syscall.EUSERS) {
			t.Fatalf("Mount = %v, want the relay's EUSERS", err)
		}
	}
}
