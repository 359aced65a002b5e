package fusermount

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
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

// The stand-in, as libfuse runs it, with no environment but _FUSE_COMMFD
// and no descriptor from perfused: it fetches the relay's socket over the
// channel of its mount namespace, telling perfused what it was asked, and
// passes that very socket over _FUSE_COMMFD.
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
	t.Setenv(CommFDEnv, strconv.Itoa(comm[0]))
	ns, err := Namespace(0)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	// Unmounting does nothing, asks nothing.
	if err := Standin([]string{"-u", "-q", "-z", "--", "/mnt/x"}); err != nil {
		t.Fatal(err)
	}
	args := []string{"-o", "rw,fsname=src", "--", "/mnt/x"}
	served := make(chan error, 1)
	go func() {
		h, err := ch.Accept(time.Now().Add(5*time.Second), nil)
		if err != nil {
			served <- err
			return
		}
		if h.Mountpoint != "/mnt/x" || h.Options != "rw,fsname=src" {
			served <- fmt.Errorf("request %+v", h.Request)
			h.Refuse("bad request")
			return
		}
		served <- h.Give(theirs, nil)
	}()
	if err := Standin(args); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
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

// A refusal reaches the stand-in, which reports it as its error.
func TestStandinRefused(t *testing.T) {
	comm, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(comm[0])
	defer unix.Close(comm[1])
	t.Setenv(CommFDEnv, strconv.Itoa(comm[0]))
	ns, _ := Namespace(0)
	ch, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	go func() {
		if h, err := ch.Accept(time.Now().Add(5*time.Second), nil); err == nil {
			h.Refuse("mount option blksize=512 cannot be applied")
		}
	}()
	if err := Standin([]string{"-o", "blksize=512", "--", "/mnt"}); err == nil || !strings.Contains(err.Error(), "blksize=512") {
		t.Errorf("refused stand-in: %v", err)
	}
}

// A stand-in with nobody listening for its namespace says so, within its
// bound.
func TestStandinWithoutPerfused(t *testing.T) {
	comm, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(comm[0])
	defer unix.Close(comm[1])
	t.Setenv(CommFDEnv, strconv.Itoa(comm[0]))
	defer func(d time.Duration) { standinWait = d }(standinWait)
	standinWait = 200 * time.Millisecond
	start := time.Now()
	if err := Standin([]string{"--", "/mnt"}); err == nil || !strings.Contains(err.Error(), "no perfused") {
		t.Errorf("stand-in without perfused: %v", err)
	}
	if d := time.Since(start); d > 2*standinWait {
		t.Errorf("took %v", d)
	}
}

func TestStandinWithoutCommFD(t *testing.T) {
	t.Setenv(CommFDEnv, "")
	if err := Standin([]string{"--", "/mnt"}); err == nil {
		t.Error("stand-in without _FUSE_COMMFD succeeded")
	}
}

// The stand-in is known by its name alone: go-fuse runs it with an empty
// environment.
func TestRunKnowsTheStandinByName(t *testing.T) {
	t.Setenv(EnvSetup, "")
	if _, ok := Run([]string{"perfused", "-demo"}); ok {
		t.Error("Run took over perfused's own invocation")
	}
	for _, name := range []string{"/usr/bin/fusermount3", "fusermount", "/bin/fusermount"} {
		if !IsStandin(name) {
			t.Errorf("%s not taken for the stand-in", name)
		}
	}
}

// The placeholder is a detached read-only tmpfs holding go-fuse's probe
// file.
func TestPlaceholder(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("PERFUSE_TEST_STRICT") == "1" {
			t.Fatal("fsmount needs root and PERFUSE_TEST_STRICT=1")
		}
		t.Skip("fsmount needs root")
	}
	f, err := Placeholder()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.Openat(int(f.Fd()), ProbeName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open the probe: %v", err)
	}
	unix.Close(fd)
	if _, err := unix.Openat(int(f.Fd()), "new", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); err != unix.EROFS {
		t.Errorf("create in the placeholder: %v, want EROFS", err)
	}
}

// A connection from outside the daemon's mount namespace gets nothing: it
// is closed and reported, and the channel goes on waiting.
func TestChannelRejectsOutsiders(t *testing.T) {
	ns := "outsider-test-" + strconv.Itoa(os.Getpid()) // no process has this namespace
	ch, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	rejected := make(chan error, 4)
	accepted := make(chan error, 1)
	go func() {
		_, err := ch.Accept(time.Now().Add(time.Second), func(err error) { rejected <- err })
		accepted <- err
	}()
	conn, err := net.DialUnix("unixpacket", nil, channelAddr(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(Hello([]string{"--", "/mnt"}))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, _, _, err := conn.ReadMsgUnix(make([]byte, 16), make([]byte, 64)); n > 0 {
		t.Errorf("an outsider got an answer (%d bytes, %v)", n, err)
	}
	select {
	case err := <-rejected:
		if !strings.Contains(err.Error(), "outside the daemon's mount namespace") {
			t.Errorf("rejection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no rejection reported")
	}
	if err := <-accepted; err == nil {
		t.Error("Accept returned a hand-off for an outsider")
	}
}
