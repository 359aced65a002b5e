package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"github.com/perfuse-go/perfuse/internal/peerutil"
	"github.com/perfuse-go/perfuse/internal/policy"
	"golang.org/x/sys/unix"
)

// The test binary plays two more parts, chosen by PERFUSED_TEST_ROLE:
// "perfused" runs main (so that perfuse.Open can start it as "perfused -i
// 3", and listening mode can run), and "daemon" runs a go-fuse loopback
// daemon that mounts itself with perfuse.Open and perfuse.Mount, as a
// libperfuse client does.
func TestMain(m *testing.M) {
	// perfused's mountpoint helper is this binary run with no environment.
	if status, ok := policy.RunHelper(os.Args); ok {
		os.Exit(status)
	}
	switch os.Getenv("PERFUSED_TEST_ROLE") {
	case "perfused":
		main()
		os.Exit(0)
	case "idle":
		os.Exit(idleClient())
	case "initsilent":
		os.Exit(initSilentClient())
	case "stuck":
		os.Exit(stuckClient())
	case "daemon":
		if err := helperDaemon(os.Getenv("PERFUSED_TEST_BACKING"), os.Getenv("PERFUSED_TEST_TARGET")); err != nil {
			fmt.Fprintln(os.Stderr, "helper daemon:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperDaemon serves backing with go-fuse's loopback filesystem on the
// socket perfuse.Open gives, after asking for a mount at target.
func helperDaemon(backing, target string) error {
	os.Setenv("PERFUSED_TEST_ROLE", "perfused") // for a perfused Open starts
	fd, err := perfuse.Open(perfuse.FusePath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	var flags uintptr
	if os.Getenv("PERFUSED_TEST_RO") == "1" {
		flags = unix.MS_RDONLY
	}
	if err := perfuse.Mount("loopback:"+filepath.Base(backing), target, "fuse.loopback", flags, fmt.Sprintf("fd=%d", fd)); err != nil {
		return err
	}
	root, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		return err
	}
	srv, err := fuse.NewServer(gofs.NewNodeFS(root, &gofs.Options{}), fmt.Sprintf("/dev/fd/%d", fd),
		&fuse.MountOptions{DisableSplice: true, Logger: log.New(os.Stderr, "helper go-fuse: ", 0)})
	if err != nil {
		return err
	}
	srv.Serve()
	return nil
}

// proc is a child process of a test, killed at cleanup if still running.
type proc struct {
	cmd  *exec.Cmd
	out  *peerutil.LockedBuffer
	done chan struct{}
	err  error
}

func start(t *testing.T, role string, env []string, cred *syscall.Credential, args ...string) *proc {
	t.Helper()
	return startExe(t, "", role, env, cred, args...)
}

// startExe is start with another copy of the test binary (one another
// user can run), "" for this one.
func startExe(t *testing.T, exe, role string, env []string, cred *syscall.Credential, args ...string) *proc {
	t.Helper()
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	p := &proc{out: &peerutil.LockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = append(append(os.Environ(), "PERFUSED_TEST_ROLE="+role, "PERFUSED="+exe), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s %q still running at cleanup; killing it", role, args)
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s %q (%v) said:\n%s", role, args, p.err, p.out)
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("process %q still running after %v:\n%s", p.cmd.Args, d, p.out)
		return nil
	}
}

// waitMounted waits until dir is a mountpoint (or the process ends).
func waitMounted(t *testing.T, dir string, ps ...*proc) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !kerneltest.Mounted(dir) {
		for _, p := range ps {
			select {
			case <-p.done:
				t.Fatalf("%q exited (%v) before %s was mounted:\n%s", p.cmd.Args, p.err, dir, p.out)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 15s", dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// detachAtCleanup makes sure dir is not left mounted.
func detachAtCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		if kerneltest.Mounted(dir) {
			t.Errorf("%s still mounted at cleanup; detaching", dir)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

func writeTree(t *testing.T, dir, tag string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from "+tag+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A daemon that calls perfuse.Open and perfuse.Mount gets a perfused
// started as "perfused -i 3", which mounts it; umount(8) ends perfused
// (status 0) and the daemon.
func TestInheritedSocketMode(t *testing.T) {
	kerneltest.NeedMount(t)
	backing, target := t.TempDir(), t.TempDir()
	writeTree(t, backing, "-i")
	detachAtCleanup(t, target)
	d := start(t, "daemon", []string{"PERFUSED_TEST_BACKING=" + backing, "PERFUSED_TEST_TARGET=" + target,
		"PERFUSE_SOCKET=" + filepath.Join(t.TempDir(), "nobody-listens")}, nil)
	waitMounted(t, target, d)
	b, err := os.ReadFile(filepath.Join(target, "hello.txt"))
	if err != nil || string(b) != "hello from -i\n" {
		t.Fatalf("read through the mount: %q, %v", b, err)
	}
	// The type the daemon asked perfuse.Mount for stays visible.
	if line := kerneltest.MountLine(target); !strings.Contains(line, " fuse.loopback ") || !strings.HasPrefix(line, "loopback:") {
		t.Errorf("/proc/mounts: %q, want fsname loopback:… and the requested type fuse.loopback", line)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(backing, "new")); err != nil || string(b) != "new\n" {
		t.Errorf("written through the mount, the backing file has %q, %v", b, err)
	}
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(t, 10*time.Second); err != nil {
		t.Errorf("daemon after unmount: %v", err)
	}
	waitGone(t, "-i")
}

// waitGone checks that no perfused started by this test binary is left.
func waitGone(t *testing.T, what string) {
	t.Helper()
	exe, _ := os.Executable()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := perfusedChildren(exe)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: perfused processes left: %v", what, left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// perfusedChildren lists the processes running exe as perfused.
func perfusedChildren(exe string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !bytes.Contains(env, []byte("PERFUSED_TEST_ROLE=perfused")) {
			continue
		}
		if p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); p == exe {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Listening mode: two clients mount at once through one perfused; a
// client that is not root gets nosuid,nodev and its own user_id, and is
// refused a mountpoint it does not own; SIGUSR1 twice dumps the trace;
// SIGTERM unmounts everything and perfused exits 0.
func TestListeningModeTwoClientsAndPolicy(t *testing.T) {
	kerneltest.NeedMount(t)
	shared := sharedDir(t)
	traceDir := t.TempDir()
	pd, sockPath := startListening(t, shared, "-t", traceDir)
	env := func(backing, target string) []string {
		return []string{"PERFUSE_SOCKET=" + sockPath, "PERFUSED_TEST_BACKING=" + backing, "PERFUSED_TEST_TARGET=" + target}
	}
	var targets []string
	var daemons []*proc
	for i := range 2 {
		backing, target := t.TempDir(), t.TempDir()
		writeTree(t, backing, fmt.Sprintf("client %d", i))
		detachAtCleanup(t, target)
		daemons = append(daemons, start(t, "daemon", env(backing, target), nil))
		targets = append(targets, target)
	}
	for i, target := range targets {
		waitMounted(t, target, daemons[i], pd)
	}
	for i, target := range targets {
		b, err := os.ReadFile(filepath.Join(target, "hello.txt"))
		if want := fmt.Sprintf("hello from client %d\n", i); err != nil || string(b) != want {
			t.Errorf("client %d: read %q, %v; want %q", i, b, err, want)
		}
	}

	// A user's mount.
	const nobody = 65534
	ubacking, utarget, notMine := filepath.Join(shared, "backing"), filepath.Join(shared, "mnt"), filepath.Join(shared, "root-owned")
	for _, d := range []string{ubacking, utarget, notMine} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTree(t, ubacking, "nobody")
	for _, d := range []string{ubacking, utarget} {
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	os.Chown(filepath.Join(ubacking, "hello.txt"), nobody, nobody)
	detachAtCleanup(t, utarget)
	detachAtCleanup(t, notMine)
	cred := &syscall.Credential{Uid: nobody, Gid: nobody}
	exe := userExe(t, shared)

	refused := startExe(t, exe, "daemon", env(ubacking, notMine), cred)
	if err := refused.wait(t, 10*time.Second); err == nil {
		t.Errorf("a mount on a directory uid %d does not own was served", nobody)
	}
	if kerneltest.Mounted(notMine) {
		t.Errorf("%s mounted for uid %d, who does not own it", notMine, nobody)
	}
	if !strings.Contains(pd.out.String(), "insufficient privileges") {
		t.Errorf("perfused did not say why it refused:\n%s", pd.out)
	}
	// perfuse.Mount returned the relay's reason to the daemon.
	if out := refused.out.String(); !strings.Contains(out, "refused by perfused") || !strings.Contains(out, "insufficient privileges") {
		t.Errorf("the refused daemon was not told why:\n%s", out)
	}

	user := startExe(t, exe, "daemon", env(ubacking, utarget), cred)
	waitMounted(t, utarget, user, pd)
	line := kerneltest.MountLine(utarget)
	for _, want := range []string{"nosuid", "nodev", fmt.Sprintf("user_id=%d", nobody)} {
		if !strings.Contains(line, want) {
			t.Errorf("user mount %q lacks %s", line, want)
		}
	}
	// Root gets in only with allow_other; the kernel says EACCES.
	if _, err := os.ReadFile(filepath.Join(utarget, "hello.txt")); err == nil {
		t.Errorf("root read a private user mount without allow_other")
	}
	if out, err := runAs(nobody, "cat", filepath.Join(utarget, "hello.txt")); err != nil || out != "hello from nobody\n" {
		t.Errorf("uid %d reading its mount: %q, %v", nobody, out, err)
	}

	// Trace: SIGUSR1 on, some work, SIGUSR1 off and dump.
	pd.cmd.Process.Signal(syscall.SIGUSR1)
	time.Sleep(100 * time.Millisecond)
	os.ReadFile(filepath.Join(targets[0], "hello.txt"))
	pd.cmd.Process.Signal(syscall.SIGUSR1)
	dump := tracePath(traceDir, targets[0])
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(dump)
		if bytes.Contains(b, []byte("Statistics by operation")) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("no trace dump in %s:\n%s", dump, b)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	pd.cmd.Process.Signal(syscall.SIGTERM)
	if err := pd.wait(t, 20*time.Second); err != nil {
		t.Errorf("perfused after SIGTERM: %v", err)
	}
	for _, dir := range append(targets, utarget) {
		if kerneltest.Mounted(dir) {
			t.Errorf("%s still mounted after SIGTERM", dir)
		}
	}
	for _, d := range append(daemons, user) {
		d.wait(t, 10*time.Second)
	}
	if _, err := os.Stat(sockPath); err == nil {
		t.Errorf("socket %s left behind", sockPath)
	}
}

// sharedDir is a directory other users can reach, for the socket and
// their directories (t.TempDir is private to root).
func sharedDir(t *testing.T) string {
	t.Helper()
	shared, err := os.MkdirTemp("", "perfused-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	os.Chmod(shared, 0o755)
	return shared
}

// startListening starts a listening perfused (as root) on a socket in
// shared and waits until it listens.
func startListening(t *testing.T, shared string, args ...string) (*proc, string) {
	t.Helper()
	sockPath := filepath.Join(shared, "perfused.sock")
	pd := start(t, "perfused", nil, nil, append([]string{"-f", "-l", sockPath}, args...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sockPath); err == nil {
			return pd, sockPath
		}
		if time.Now().After(deadline) {
			t.Fatalf("perfused did not listen:\n%s", pd.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// userExe copies the test binary into shared, for other users to run: the
// build directory is private to root.
func userExe(t *testing.T, shared string) string {
	t.Helper()
	self, _ := os.Executable()
	exe := filepath.Join(shared, "perfused.test")
	if _, err := os.Stat(exe); err == nil {
		return exe
	}
	if b, err := os.ReadFile(self); err != nil || os.WriteFile(exe, b, 0o755) != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	return exe
}

func runAs(uid uint32, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Wrap mode runs an unmodified libfuse 3 daemon on /dev/fd/3, mounts it
// and ends when the mount is unmounted: perfused exits 0, the daemon too.
func TestWrapModeSquashfuse(t *testing.T) {
	kerneltest.NeedMount(t)
	for _, tool := range []string{"squashfuse", "mksquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if kerneltest.Strict() {
				t.Fatalf("%s missing and PERFUSE_TEST_STRICT=1", tool)
			}
			t.Skipf("%s missing", tool)
		}
	}
	src := t.TempDir()
	kerneltest.MakeTree(t, src)
	img := filepath.Join(t.TempDir(), "img.sqfs")
	if out, err := exec.Command("mksquashfs", src, img, "-quiet", "-noappend").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	target := t.TempDir()
	detachAtCleanup(t, target)
	pd := start(t, "perfused", nil, nil, "-o", "fsname=sq-test", target, "--", "squashfuse", "-f", img, "/dev/fd/3")
	waitMounted(t, target, pd)
	kerneltest.CompareTrees(t, src, target)
	if line := kerneltest.MountLine(target); !strings.HasPrefix(line, "sq-test ") || !strings.Contains(line, "fuse.perfuse") {
		t.Errorf("/proc/mounts: %q", line)
	}
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	if err := pd.wait(t, 10*time.Second); err != nil {
		t.Errorf("perfused after unmount: %v", err)
	}
}

// Wrap mode, daemon killed: the mount goes, perfused exits 1 and says why.
func TestWrapModeDaemonKilled(t *testing.T) {
	kerneltest.NeedMount(t)
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		if kerneltest.Strict() {
			t.Fatal("fuse-overlayfs missing and PERFUSE_TEST_STRICT=1")
		}
		t.Skip("fuse-overlayfs missing")
	}
	base := t.TempDir()
	var dirs []string
	for _, n := range []string{"lower", "upper", "work"} {
		d := filepath.Join(base, n)
		os.Mkdir(d, 0o755)
		dirs = append(dirs, d)
	}
	target := t.TempDir()
	detachAtCleanup(t, target)
	pidFile := filepath.Join(base, "pid")
	// The shell records the daemon's pid and execs it.
	pd := start(t, "perfused", nil, nil, target, "--", "sh", "-c", `echo $$ > "$1"; exec fuse-overlayfs -f -o "lowerdir=$2,upperdir=$3,workdir=$4" /dev/fd/3`,
		"sh", pidFile, dirs[0], dirs[1], dirs[2])
	waitMounted(t, target, pd)
	if err := os.WriteFile(filepath.Join(target, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pidFile)
	var pid int
	fmt.Sscan(string(b), &pid)
	if pid <= 0 {
		t.Fatalf("no daemon pid in %s", pidFile)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	err := pd.wait(t, 15*time.Second)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("perfused exit: %v, want status 1", err)
	}
	if !strings.Contains(pd.out.String(), "exited") || !strings.Contains(pd.out.String(), "unmounted") {
		t.Errorf("perfused did not say the daemon exited and the mount went:\n%s", pd.out)
	}
	if kerneltest.Mounted(target) {
		t.Error("still mounted after the daemon was killed")
	}
}

// --help documents every mode and exits 0.
func TestHelpDocumentsEveryMode(t *testing.T) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "--help")
	cmd.Env = append(os.Environ(), "PERFUSED_TEST_ROLE=perfused")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"-i fd", "-l path", "MOUNTPOINT -- COMMAND", "-demo", "-o options", "-d classes", "-t dir", "SIGUSR1", "SIGTERM", "PERFUSE_SOCKET", "allow_other", "nosuid,nodev"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// An unknown -d class is a warning, not an error.
func TestParseFlagsUnknownDiagClassWarns(t *testing.T) {
	f, err := parseFlags([]string{"-d", "fuse,bogus,trace", "-o", "ro,allow_other,fsname=x,max_read=4096"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if f.diag&perfuse.DiagFuse == 0 || f.diag&perfuse.DiagTrace == 0 {
		t.Errorf("diag %v", f.diag)
	}
	if !f.opts.ReadOnly || !f.opts.AllowOther || f.opts.FsName != "x" || f.opts.MaxRead != 4096 {
		t.Errorf("options %+v", f.opts)
	}
	if _, err := parseFlags([]string{"/mnt", "squashfuse"}, &bytes.Buffer{}); err == nil {
		t.Error("wrap mode without -- accepted")
	}
	f, err = parseFlags([]string{"-f", "/mnt", "--", "squashfuse", "-f", "img", "/dev/fd/3"}, &bytes.Buffer{})
	if err != nil || len(f.wrap) != 5 || f.wrap[0] != "/mnt" || f.wrap[1] != "squashfuse" {
		t.Errorf("wrap %q, %v", f.wrap, err)
	}
}
