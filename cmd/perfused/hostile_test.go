package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/kerneltest"
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
