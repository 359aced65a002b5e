package fusermount

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

func TestParseHello(t *testing.T) {
	args := []string{"-o", "rw,nosuid,nodev,allow_other,fsname=/src", "-o", "subtype=bindfs", "--", "/mnt/x"}
	r, err := ParseHello(Hello(args))
	if err != nil {
		t.Fatal(err)
	}
	if r.Options != "rw,nosuid,nodev,allow_other,fsname=/src,subtype=bindfs" || r.Mountpoint != "/mnt/x" || !slices.Equal(r.Args, args) {
		t.Errorf("got %+v", r)
	}
	// fusermount3 also takes the mountpoint without "--".
	if r, err := ParseHello(Hello([]string{"-ofsname=a", "/mnt/y"})); err != nil || r.Mountpoint != "/mnt/y" || r.Options != "fsname=a" {
		t.Errorf("got %+v, %v", r, err)
	}
	if r, err := ParseHello(Hello(nil)); err != nil || r.Mountpoint != "" {
		t.Errorf("no arguments: %+v, %v", r, err)
	}
	for _, bad := range [][]byte{nil, []byte("\x28\x00\x00\x00"), []byte(helloMagic + "unterminated")} {
		if _, err := ParseHello(bad); err == nil {
			t.Errorf("ParseHello(%q) accepted", bad)
		}
	}
}

// The stand-in, as libfuse runs it: it tells perfused's end what it was
// asked and passes the very socket it was given over _FUSE_COMMFD.
func TestStandinHandsOverTheSocket(t *testing.T) {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	defer theirs.Close()
	comm, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(comm[0])
	defer unix.Close(comm[1])
	t.Setenv(EnvFD, strconv.Itoa(int(theirs.Fd())))
	t.Setenv(CommFDEnv, strconv.Itoa(comm[0]))

	// Unmounting does nothing, sends nothing.
	if err := Standin([]string{"-u", "-q", "-z", "--", "/mnt/x"}); err != nil {
		t.Fatal(err)
	}
	args := []string{"-o", "rw,fsname=src", "--", "/mnt/x"}
	if err := Standin(args); err != nil {
		t.Fatal(err)
	}
	r, err := ReadHello(int(ours.Fd()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mountpoint != "/mnt/x" || r.Options != "rw,fsname=src" {
		t.Errorf("hello %+v", r)
	}
	// libfuse's receive_fd: one byte and SCM_RIGHTS.
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(comm[1], buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights %v, %v", fds, err)
	}
	got := os.NewFile(uintptr(fds[0]), "received")
	defer got.Close()
	var a, b unix.Stat_t
	unix.Fstat(fds[0], &a)
	unix.Fstat(int(theirs.Fd()), &b)
	if a.Ino != b.Ino || a.Dev != b.Dev {
		t.Errorf("received descriptor is not the socket handed down")
	}
	// What the daemon writes on it reaches perfused.
	if err := sock.SendRecord(fds[0], []byte("reply")); err != nil {
		t.Fatal(err)
	}
	rb := make([]byte, 16)
	if n, _, err := sock.RecvRecord(int(ours.Fd()), rb); err != nil || string(rb[:n]) != "reply" {
		t.Errorf("read %q, %v", rb[:n], err)
	}
}

func TestStandinWithoutCommFD(t *testing.T) {
	t.Setenv(EnvFD, "3")
	t.Setenv(CommFDEnv, "")
	if err := Standin([]string{"--", "/mnt"}); err == nil {
		t.Error("stand-in without _FUSE_COMMFD succeeded")
	}
}

func TestReadHelloEOF(t *testing.T) {
	ours, theirs, _, err := sock.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	theirs.Close()
	if _, err := ReadHello(int(ours.Fd()), 5*time.Second); err != ErrNoHello {
		t.Errorf("ReadHello after close: %v, want ErrNoHello", err)
	}
}

func TestRunIgnoresOrdinaryInvocations(t *testing.T) {
	t.Setenv(EnvSetup, "")
	t.Setenv(EnvFD, "")
	if _, ok := Run([]string{"perfused", "-demo"}); ok {
		t.Error("Run took over perfused's own invocation")
	}
	// Named fusermount but not started by a wrapped daemon: not ours.
	if _, ok := Run([]string{"/usr/bin/fusermount3", "-u", "/mnt"}); ok {
		t.Error("Run took over a fusermount invocation without " + EnvFD)
	}
}
