package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/fakepeer"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"github.com/perfuse-go/perfuse/internal/peerutil"
	"github.com/perfuse-go/perfuse/internal/sock"
	"github.com/perfuse-go/perfuse/internal/wire"
	"golang.org/x/sys/unix"
)

// Tests of perfused as a root service facing hostile local users.

const (
	nobody = 65534 // the attacker
	victim = 65533 // another user, whose mount must keep working
)

// idleClient is the "idle" role: it opens $PERFUSED_TEST_IDLE connections
// to $PERFUSE_SOCKET, sends nothing on any, says how many it got, and
// holds them until killed.
func idleClient() int {
	n, _ := strconv.Atoi(os.Getenv("PERFUSED_TEST_IDLE"))
	path := os.Getenv("PERFUSE_SOCKET")
	var fds []int
	for range n {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Println("socket:", err)
			return 1
		}
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			fmt.Println("connect:", err)
			return 1
		}
		fds = append(fds, fd)
	}
	fmt.Printf("connected %d\n", len(fds))
	time.Sleep(time.Minute)
	return 0
}

// initSilentClient is the "initsilent" role: $PERFUSED_TEST_IDLE times, it
// connects to $PERFUSE_SOCKET and sends a mount frame for
// $PERFUSED_TEST_TARGET, then never answers INIT. It says how many mounts
// perfused went on with and how many it refused, and holds on until
// killed.
func initSilentClient() int {
	n, _ := strconv.Atoi(os.Getenv("PERFUSED_TEST_IDLE"))
	path, target := os.Getenv("PERFUSE_SOCKET"), os.Getenv("PERFUSED_TEST_TARGET")
	accepted, refused := 0, map[string]int{}
	var keep []int
	for range n {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Println("socket:", err)
			return 1
		}
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			fmt.Println("connect:", err)
			return 1
		}
		keep = append(keep, fd)
		if err := perfuse.Mount("silent", target, "fuse.silent", 0, fmt.Sprintf("fd=%d", fd)); err != nil {
			var r *perfuse.MountRefusedError
			if !errors.As(err, &r) {
				fmt.Println("mount:", err)
				return 1
			}
			refused[r.Errno.Error()]++
			continue
		}
		accepted++
	}
	fmt.Printf("accepted %d refused %v\n", accepted, refused)
	time.Sleep(time.Minute)
	return 0
}

// procStatus returns a field of /proc/PID/status as a number, -1 if gone.
func procStatus(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// userMountDirs makes a backing directory with hello.txt and a mountpoint,
// both owned by uid, in shared.
func userMountDirs(t *testing.T, shared string, uid int, tag string) (backing, target string) {
	t.Helper()
	backing, target = filepath.Join(shared, tag+"-backing"), filepath.Join(shared, tag+"-mnt")
	for _, d := range []string{backing, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTree(t, backing, tag)
	for _, p := range []string{backing, target, filepath.Join(backing, "hello.txt")} {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	detachAtCleanup(t, target)
	return backing, target
}

func userCred(uid int) *syscall.Credential {
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
}

// 20,000 connections that never send a frame, from one user: perfused
// holds no thread for any of them, refuses those over the pending limits
// (logging that only a few times), and keeps serving another user's mount.
func TestIdleConnectionsPinNoThreads(t *testing.T) {
	kerneltest.NeedMount(t)
	// Several attacking processes, so that none needs more descriptors
	// than RLIMIT_NOFILE allows (which an unprivileged user cannot raise).
	const idle, procs = 20000, 4
	shared := sharedDir(t)
	pd, sockPath := startListening(t, shared)
	exe := userExe(t, shared)
	pid := pd.cmd.Process.Pid

	var attackers []*proc
	for range procs {
		a := startExe(t, exe, "idle", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_IDLE=" + strconv.Itoa(idle/procs)}, userCred(nobody))
		t.Cleanup(func() { a.cmd.Process.Kill() })
		attackers = append(attackers, a)
	}
	maxThreads := 0
	deadline := time.Now().Add(60 * time.Second)
	for _, a := range attackers {
		for !strings.Contains(a.out.String(), "connected") {
			maxThreads = max(maxThreads, procStatus(pid, "Threads"))
			select {
			case <-a.done:
				t.Fatalf("idle client exited: %v\n%s", a.err, a.out)
			case <-pd.done:
				t.Fatalf("perfused died under %d idle connections: %v", idle, pd.err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("idle client still connecting after 60s:\n%s", a.out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	backing, target := userMountDirs(t, shared, victim, "victim")
	d := startExe(t, exe, "daemon", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing, "PERFUSED_TEST_TARGET=" + target}, userCred(victim))
	waitMounted(t, target, d, pd)
	if out, err := runAs(victim, "cat", filepath.Join(target, "hello.txt")); err != nil || out != "hello from victim\n" {
		t.Errorf("uid %d reading its mount: %q, %v", victim, out, err)
	}
	maxThreads = max(maxThreads, procStatus(pid, "Threads"))
	fds := fdCount(pid)
	t.Logf("perfused under %d idle connections: at most %d threads, %d fds", idle, maxThreads, fds)
	if maxThreads > 100 {
		t.Errorf("perfused reached %d threads for %d idle connections", maxThreads, idle)
	}
	if fds > 2*defaultPendingTotal+50 {
		t.Errorf("perfused holds %d descriptors", fds)
	}
	if n := strings.Count(pd.out.String(), "connection refused"); n < 1 || n > 5 {
		t.Errorf("perfused logged %d refusals, want 1 to 5 (once per kind)", n)
	}

	for _, a := range attackers {
		a.cmd.Process.Kill()
		<-a.done
	}
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	d.wait(t, 10*time.Second)
	pd.cmd.Process.Signal(syscall.SIGTERM)
	if err := pd.wait(t, 20*time.Second); err != nil {
		t.Errorf("perfused after SIGTERM: %v", err)
	}
	if bytes.Contains([]byte(pd.out.String()), []byte("fatal error")) {
		t.Errorf("perfused crashed:\n%s", pd.out)
	}
}

// stuckDaemon connects to the perfused at sockPath, asks for a mount at
// target, answers INIT, and then never reads again: the daemon of the
// SIGTERM test. It returns the daemon's socket.
func stuckDaemon(t *testing.T, sockPath, target string) *os.File {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "stuck-daemon")
	t.Cleanup(func() { f.Close() })
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sockPath}); err != nil {
		t.Fatal(err)
	}
	if err := perfuse.Mount("stuck", target, "fuse.stuck", 0, fmt.Sprintf("fd=%d", fd)); err != nil {
		t.Fatal(err)
	}
	if err := answerInit(fd); err != nil {
		t.Fatal(err)
	}
	return f
}

// answerInit reads perfused's INIT on fd and answers it.
func answerInit(fd int) error {
	buf := make([]byte, 1<<20)
	n, _, err := sock.RecvRecord(fd, buf)
	if err != nil || n < 40 || wire.OpcodeOf(buf) != wire.OpInit {
		return fmt.Errorf("want INIT from perfused, got %d bytes, %v", n, err)
	}
	out := fuse.InitOut{Major: 7, Minor: 31, MaxReadAhead: 128 << 10, MaxWrite: 128 << 10, TimeGran: 1}
	return sock.SendRecord(fd, fakepeer.ReplyFrame(binary.NativeEndian.Uint64(buf[8:]), 0, fakepeer.InitOutBytes(out)))
}

// stuckClient is the "stuck" role, a wrapped daemon on fd 3 that answers
// INIT and then never reads again.
func stuckClient() int {
	if err := answerInit(3); err != nil {
		fmt.Println(err)
		return 1
	}
	time.Sleep(time.Minute)
	return 0
}

// procState is the state letter of /proc/PID/stat ("" once gone).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) {
		return string(b[i+2])
	}
	return ""
}

// Issue 7 item 3: with a process stuck in a mount whose daemon stopped
// reading, SIGTERM still ends perfused within the grace plus a bound: the
// mount's own connection is aborted, the stuck process gets an error, the
// mount is gone and the daemon's socket is closed.
func TestSigtermAbortsStuckMount(t *testing.T) {
	kerneltest.NeedMount(t)
	shared := sharedDir(t)
	pd, sockPath := startListening(t, shared, "-grace", "1s")
	target := t.TempDir()
	detachAtCleanup(t, target)
	daemon := stuckDaemon(t, sockPath, target)
	waitMounted(t, target, pd)

	stuck := exec.Command("stat", filepath.Join(target, "x"))
	var out bytes.Buffer
	stuck.Stdout, stuck.Stderr = &out, &out
	if err := stuck.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- stuck.Wait() }()
	t.Cleanup(func() { stuck.Process.Kill() })
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-exited:
		t.Fatalf("stat returned (%v) though the daemon reads nothing: %s", err, out.String())
	default:
	}
	t.Logf("stat is stuck in state %s", procState(stuck.Process.Pid))

	signalled := time.Now()
	pd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pd.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("perfused still running 15s after SIGTERM (grace 1s); stat is in state %s", procState(stuck.Process.Pid))
	}
	t.Logf("perfused exited %v after SIGTERM (%v)", time.Since(signalled), pd.err)
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("stat in the aborted mount succeeded: %s", out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("stat still blocked (state %s) 5s after perfused exited", procState(stuck.Process.Pid))
	}
	if kerneltest.Mounted(target) {
		t.Errorf("%s still mounted after perfused exited", target)
	}
	// The daemon's socket is closed: it sees the end of the stream.
	daemon.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1<<20)
	for {
		n, err := daemon.Read(buf)
		if n == 0 || err != nil {
			break
		}
	}
	if !strings.Contains(pd.out.String(), "aborting") {
		t.Errorf("perfused did not say it aborted the stuck mount:\n%s", pd.out)
	}
}

// Connections that send a mount frame and never answer INIT: only
// -max-pending-user of one user's are taken on at a time (the others are
// refused, and told so), each for the INIT window at most, and another
// user's mount is served meanwhile.
func TestInitSilentConnectionsBounded(t *testing.T) {
	kerneltest.NeedMount(t)
	const conns = 200
	shared := sharedDir(t)
	pd, sockPath := startListening(t, shared)
	exe := userExe(t, shared)
	pid := pd.cmd.Process.Pid
	_, silentTarget := userMountDirs(t, shared, nobody, "silent")
	attacker := startExe(t, exe, "initsilent", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_TARGET=" + silentTarget,
		"PERFUSED_TEST_IDLE=" + strconv.Itoa(conns)}, userCred(nobody))
	t.Cleanup(func() { attacker.cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(attacker.out.String(), "accepted") {
		select {
		case <-attacker.done:
			t.Fatalf("attacker exited: %v\n%s", attacker.err, attacker.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("attacker still connecting after 30s:\n%s", attacker.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var accepted int
	fmt.Sscanf(attacker.out.String(), "accepted %d", &accepted)
	fds := fdCount(pid)
	t.Logf("%d connections sending a frame and no INIT: %s; perfused holds %d fds, %d threads", conns, strings.TrimSpace(attacker.out.String()), fds, procStatus(pid, "Threads"))
	if accepted > defaultPendingPerUser || !strings.Contains(attacker.out.String(), "resource temporarily unavailable") {
		t.Errorf("perfused took on %d silent mounts of one user, want at most %d and the rest refused with EAGAIN", accepted, defaultPendingPerUser)
	}
	if fds > 4*defaultPendingPerUser+40 {
		t.Errorf("perfused holds %d descriptors for %d silent connections", fds, conns)
	}
	backing, target := userMountDirs(t, shared, victim, "victim")
	d := startExe(t, exe, "daemon", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing, "PERFUSED_TEST_TARGET=" + target}, userCred(victim))
	waitMounted(t, target, d, pd)
	if out, err := runAs(victim, "cat", filepath.Join(target, "hello.txt")); err != nil || out != "hello from victim\n" {
		t.Errorf("uid %d reading its mount: %q, %v", victim, out, err)
	}
	if kerneltest.Mounted(silentTarget) {
		t.Errorf("a mount without INIT was made at %s", silentTarget)
	}
	attacker.cmd.Process.Kill()
	<-attacker.done
	unix.Unmount(target, 0)
	d.wait(t, 10*time.Second)
	pd.cmd.Process.Signal(syscall.SIGTERM)
	if err := pd.wait(t, 20*time.Second); err != nil {
		t.Errorf("perfused after SIGTERM: %v", err)
	}
}

// perfused -i answers a refused mount frame too: perfuse.Mount in the
// daemon returns the reason instead of nil.
func TestInheritedModeRefusalReachesDaemon(t *testing.T) {
	kerneltest.NeedMount(t)
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := start(t, "daemon", []string{"PERFUSED_TEST_BACKING=" + t.TempDir(), "PERFUSED_TEST_TARGET=" + file,
		"PERFUSE_SOCKET=" + filepath.Join(t.TempDir(), "nobody-listens")}, nil)
	if err := d.wait(t, 15*time.Second); err == nil {
		t.Fatal("the daemon's mount on a file was not refused")
	}
	if out := d.out.String(); !strings.Contains(out, "helper daemon: perfuse: mount refused by perfused") || !strings.Contains(out, "not a directory") {
		t.Errorf("perfuse.Mount did not return perfused's reason:\n%s", out)
	}
}

// Mounts are limited per user and in total (-mount-max-user, -mount-max);
// the refused daemon is told why, and root is never refused.
func TestMountLimits(t *testing.T) {
	kerneltest.NeedMount(t)
	shared := sharedDir(t)
	pd, sockPath := startListening(t, shared, "-mount-max-user", "2", "-mount-max", "3")
	exe := userExe(t, shared)
	mountAs := func(uid int, tag string) (*proc, string) {
		backing, target := userMountDirs(t, shared, uid, tag)
		return startExe(t, exe, "daemon", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing,
			"PERFUSED_TEST_TARGET=" + target}, userCred(uid)), target
	}
	var targets []string
	for _, m := range []struct {
		uid int
		tag string
	}{{nobody, "a1"}, {nobody, "a2"}, {victim, "b1"}} {
		d, target := mountAs(m.uid, m.tag)
		waitMounted(t, target, d, pd)
		targets = append(targets, target)
	}
	for _, c := range []struct {
		uid       int
		tag, want string
	}{{nobody, "a3", "limit of 2 for uid 65534"}, {victim, "b2", "limit of 3 in total"}} {
		d, target := mountAs(c.uid, c.tag)
		if err := d.wait(t, 15*time.Second); err == nil {
			t.Errorf("uid %d's mount %s was not refused", c.uid, c.tag)
		}
		if out := d.out.String(); !strings.Contains(out, c.want) || !strings.Contains(out, "too many users") {
			t.Errorf("uid %d's refused daemon was not told %q (EUSERS):\n%s", c.uid, c.want, out)
		}
		if kerneltest.Mounted(target) {
			t.Errorf("%s mounted past the limit", target)
		}
	}
	// Root is counted but never refused.
	backing, target := t.TempDir(), t.TempDir()
	writeTree(t, backing, "root")
	detachAtCleanup(t, target)
	root := start(t, "daemon", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing, "PERFUSED_TEST_TARGET=" + target}, nil)
	waitMounted(t, target, root, pd)
	for _, dir := range append(targets, target) {
		unix.Unmount(dir, 0)
	}
	pd.cmd.Process.Signal(syscall.SIGTERM)
	if err := pd.wait(t, 20*time.Second); err != nil {
		t.Errorf("perfused after SIGTERM: %v", err)
	}
}

// Socket activation: perfused serves the socket systemd passes as fd 3,
// whose unit sets its mode and group, and leaves it in place at exit.
func TestSocketActivation(t *testing.T) {
	kerneltest.NeedMount(t)
	sockPath := filepath.Join(t.TempDir(), "activated.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sockPath, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockPath, 0o660)
	exe, _ := os.Executable()
	pd := &proc{out: &peerutil.LockedBuffer{}, done: make(chan struct{})}
	// systemd sets LISTEN_PID to the service's pid: the shell's, which exec
	// makes perfused's.
	pd.cmd = exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" -f`, exe)
	pd.cmd.Env = append(os.Environ(), "PERFUSED_TEST_ROLE=perfused", "LISTEN_FDS=1")
	pd.cmd.ExtraFiles = []*os.File{lf}
	pd.cmd.Stdout, pd.cmd.Stderr = pd.out, pd.out
	pd.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := pd.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	go func() { pd.err = pd.cmd.Wait(); close(pd.done) }()
	t.Cleanup(func() { pd.cmd.Process.Kill(); <-pd.done })

	backing, target := t.TempDir(), t.TempDir()
	writeTree(t, backing, "activated")
	detachAtCleanup(t, target)
	d := start(t, "daemon", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing, "PERFUSED_TEST_TARGET=" + target}, nil)
	waitMounted(t, target, d, pd)
	if b, err := os.ReadFile(filepath.Join(target, "hello.txt")); err != nil || string(b) != "hello from activated\n" {
		t.Errorf("read through the mount: %q, %v", b, err)
	}
	unix.Unmount(target, 0)
	d.wait(t, 10*time.Second)
	pd.cmd.Process.Signal(syscall.SIGTERM)
	if err := pd.wait(t, 20*time.Second); err != nil {
		t.Errorf("perfused after SIGTERM: %v\n%s", err, pd.out)
	}
	if st, err := os.Stat(sockPath); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("the activated socket after exit: %v, %v; want it left as the unit made it (0660)", st, err)
	}
}

// A user asks perfused for a read-only mount on their own process's
// /proc/PID and /proc/PID/fd (theirs, and readable): refused for the file
// system type, and the daemon is told.
func TestUserMountOnProcRefused(t *testing.T) {
	kerneltest.NeedMount(t)
	shared := sharedDir(t)
	pd, sockPath := startListening(t, shared)
	exe := userExe(t, shared)
	sleeper := exec.Command("sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: userCred(nobody)}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	backing := t.TempDir()
	os.Chmod(backing, 0o755)
	for _, target := range []string{fmt.Sprintf("/proc/%d", sleeper.Process.Pid), fmt.Sprintf("/proc/%d/fd", sleeper.Process.Pid)} {
		d := startExe(t, exe, "daemon", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing,
			"PERFUSED_TEST_TARGET=" + target, "PERFUSED_TEST_RO=1"}, userCred(nobody))
		if err := d.wait(t, 15*time.Second); err == nil {
			t.Errorf("a mount on %s was served", target)
		}
		if out := d.out.String(); !strings.Contains(out, "file system type 0x9fa0 is forbidden") {
			t.Errorf("the daemon asking for %s was not told why it was refused:\n%s", target, out)
		}
		if kerneltest.Mounted(target) {
			unix.Unmount(target, unix.MNT_DETACH)
			t.Errorf("%s mounted", target)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/status", sleeper.Process.Pid)); err != nil {
		t.Errorf("root cannot see the process any more: %v", err)
	}
	pd.cmd.Process.Signal(syscall.SIGTERM)
	pd.wait(t, 20*time.Second)
}

// A user's mount request whose target lies inside a hung FUSE mount holds
// no thread of perfused and does not hold up its shutdown: SIGTERM ends
// perfused before the lookup's own bound.
func TestHungTargetDoesNotBlockShutdown(t *testing.T) {
	kerneltest.NeedMount(t)
	hung := kerneltest.HungMount(t)
	shared := sharedDir(t)
	pd, sockPath := startListening(t, shared)
	exe := userExe(t, shared)
	backing := filepath.Join(shared, "backing")
	os.Mkdir(backing, 0o755)
	var daemons []*proc
	for range 3 {
		daemons = append(daemons, startExe(t, exe, "daemon", []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing,
			"PERFUSED_TEST_TARGET=" + filepath.Join(hung, "sub")}, userCred(nobody)))
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(pd.out.String(), "mount request") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("perfused got no mount requests:\n%s", pd.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	threads := procStatus(pd.cmd.Process.Pid, "Threads")
	signalled := time.Now()
	pd.cmd.Process.Signal(syscall.SIGTERM)
	if err := pd.wait(t, 10*time.Second); err != nil {
		t.Errorf("perfused after SIGTERM: %v", err)
	}
	took := time.Since(signalled)
	t.Logf("3 lookups hung in a FUSE mount: perfused at %d threads, exited %v after SIGTERM", threads, took)
	if took > 3*time.Second {
		t.Errorf("perfused took %v to stop with lookups hung (their bound is 5s)", took)
	}
	for _, d := range daemons {
		if err := d.wait(t, 10*time.Second); err == nil {
			t.Error("a mount inside a hung mount was served")
		}
	}
}

// Issue 7 item 3 in wrap mode: the stuck daemon is perfused's child, and
// SIGTERM ends it too.
func TestSigtermAbortsStuckWrappedDaemon(t *testing.T) {
	kerneltest.NeedMount(t)
	target := t.TempDir()
	detachAtCleanup(t, target)
	exe, _ := os.Executable()
	pidFile := filepath.Join(t.TempDir(), "pid")
	pd := start(t, "perfused", nil, nil, "-grace", "1s", target, "--", "sh", "-c",
		`echo $$ > "$1"; PERFUSED_TEST_ROLE=stuck exec "$0" /dev/fd/3`, exe, pidFile)
	waitMounted(t, target, pd)
	b, _ := os.ReadFile(pidFile)
	daemonPid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if daemonPid <= 0 {
		t.Fatalf("no daemon pid in %s", pidFile)
	}
	stuck := exec.Command("stat", filepath.Join(target, "x"))
	if err := stuck.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- stuck.Wait() }()
	t.Cleanup(func() { stuck.Process.Kill() })
	time.Sleep(300 * time.Millisecond)
	signalled := time.Now()
	pd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pd.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("wrap-mode perfused still running 20s after SIGTERM (grace 1s)")
	}
	t.Logf("perfused exited %v after SIGTERM (%v)", time.Since(signalled), pd.err)
	select {
	case err := <-exited:
		if err == nil {
			t.Error("stat in the aborted mount succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("stat still blocked (state %s) after perfused exited", procState(stuck.Process.Pid))
	}
	if st := procState(daemonPid); st != "" && st != "Z" {
		t.Errorf("the wrapped daemon (pid %d) is still running (state %s) after perfused exited", daemonPid, st)
	}
	if kerneltest.Mounted(target) {
		t.Errorf("%s still mounted after perfused exited", target)
	}
}
