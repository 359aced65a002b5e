package nfsexport

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
)

func TestLibnfsLoopback(t *testing.T) {
	backing := publicDir(t)
	e := startExport(t, false, filepath.Join(binaries(t), "loopback"), "/dev/fd/3", backing)
	v := dial(t, e.port, "/") // libnfs's tools make no directories

	// A tree in with nfs-cp, checked on the backing directory, listed and
	// copied out again.
	files := tree(t)
	local := t.TempDir()
	writeTree(t, local, files)
	for _, d := range dirsOf(files) {
		if _, err := v.Mkdir(d, 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
	}
	for p := range files {
		mustLibnfs(t, "nfs-cp", filepath.Join(local, p), e.url(p))
	}
	checkTree(t, backing, files)
	fi, err := os.Stat(filepath.Join(backing, "d1/one.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
		t.Errorf("a file made through the export belongs to uid %d; want the server's, %d", st.Uid, nobody)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("d1/one.txt has mode %v; want nfs-cp's 0660, CREATE's attributes", fi.Mode())
	}
	if got, want := lsNames(t, e, ""), treeNames(files); !equal(got, want) {
		t.Errorf("nfs-ls -R = %q; want %q", got, want)
	}
	copyOut(t, e, files)
	if got := mustLibnfs(t, "nfs-cat", e.url("other dir/with space")); got != "spaces\n" {
		t.Errorf("nfs-cat = %q", got)
	}

	// Truncate (go-nfs-client's SETATTR: nfs-cp creates exclusively),
	// seen by nfs-cat and nfs-ls.
	if err := v.Setattr("d1/d2/d3/three.bin", nfsc.Sattr3{Size: nfsc.SetSize{SetIt: true, Size: 6}}); err != nil {
		t.Fatal(err)
	}
	three := files["d1/d2/d3/three.bin"][:6]
	if got := mustLibnfs(t, "nfs-cat", e.url("d1/d2/d3/three.bin")); got != string(three) {
		t.Errorf("nfs-cat of the truncated file = %q; want %q", got, three)
	}
	if got := mustLibnfs(t, "nfs-ls", e.url("d1/d2/d3")); !strings.Contains(got, " 6 three.bin") {
		t.Errorf("nfs-ls after truncate: %q", got)
	}
	files["d1/d2/d3/three.bin"] = three
	if out, err := libnfs(t, "nfs-cp", filepath.Join(local, "top.txt"), e.url("d1/one.txt")); err == nil || !strings.Contains(out, "NFS3ERR_EXIST") {
		t.Errorf("nfs-cp onto an existing file: %v, %q; want NFS3ERR_EXIST", err, out)
	}

	// Rename and remove (go-nfs-client: libnfs's tools have neither),
	// seen by nfs-ls.
	if err := v.Rename("d1/d2", "d1/renamed"); err != nil {
		t.Fatal(err)
	}
	if err := v.Remove("top.txt"); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for p, b := range files {
		if p == "top.txt" {
			continue
		}
		want[strings.Replace(p, "d1/d2", "d1/renamed", 1)] = b
	}
	if got, wantNames := lsNames(t, e, ""), treeNames(want); !equal(got, wantNames) {
		t.Errorf("after rename and remove nfs-ls -R = %q; want %q", got, wantNames)
	}
	checkTree(t, backing, want)
	copyOut(t, e, map[string][]byte{"d1/renamed/two.bin": want["d1/renamed/two.bin"]})

	// 64 MiB in and out, by sha256, and four readers at once.
	big := randomBytes(t, 64<<20)
	bigPath := filepath.Join(local, "big")
	os.WriteFile(bigPath, big, 0o644)
	mustLibnfs(t, "nfs-cp", bigPath, e.url("big"))
	if got := fileSum(t, filepath.Join(backing, "big")); got != sum(big) {
		t.Fatalf("64 MiB through nfs-cp: backing sha256 %s; want %s", got, sum(big))
	}
	var wg sync.WaitGroup
	for i := range 4 {
		dst := filepath.Join(local, "big.out"+strconv.Itoa(i))
		wg.Go(func() {
			if out, err := libnfs(t, "nfs-cp", e.url("big"), dst); err != nil {
				t.Errorf("concurrent nfs-cp: %v\n%s", err, out)
				return
			}
			if got := fileSum(t, dst); got != sum(big) {
				t.Errorf("concurrent nfs-cp out: sha256 %s; want %s", got, sum(big))
			}
		})
	}
	wg.Wait()
}

func TestLibnfsSquashfuse(t *testing.T) {
	need(t, "squashfuse", "squashfuse")
	mksquashfs := need(t, "mksquashfs", "squashfs-tools")
	src := t.TempDir()
	files := tree(t)
	writeTree(t, src, files)
	img := filepath.Join(publicDir(t), "img.squashfs")
	if out, err := exec.Command(mksquashfs, src, img, "-noappend", "-quiet").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	os.Chmod(img, 0o644)
	e := startExport(t, false, "squashfuse", "-f", img, "/dev/fd/3")
	if got, want := lsNames(t, e, ""), treeNames(files); !equal(got, want) {
		t.Errorf("nfs-ls -R = %q; want %q", got, want)
	}
	copyOut(t, e, files)
	// squashfuse refuses the write itself.
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, []byte("x"), 0o644)
	if out, err := libnfs(t, "nfs-cp", local, e.url("d1/new")); err == nil {
		t.Errorf("nfs-cp into squashfuse succeeded: %s", out)
	}
}

// -ro is enforced by the server: the writable loopback is not asked.
func TestLibnfsReadOnly(t *testing.T) {
	backing := publicDir(t)
	os.WriteFile(filepath.Join(backing, "f"), []byte("kept\n"), 0o644)
	chownTree(t, backing)
	e := startExport(t, true, filepath.Join(binaries(t), "loopback"), "/dev/fd/3", backing)
	if got := mustLibnfs(t, "nfs-cat", e.url("f")); got != "kept\n" {
		t.Errorf("nfs-cat = %q", got)
	}
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, []byte("changed\n"), 0o644)
	for _, dst := range []string{"f", "new"} {
		if out, err := libnfs(t, "nfs-cp", local, e.url(dst)); err == nil {
			t.Errorf("nfs-cp to %s on a -ro export succeeded: %s", dst, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(backing, "f")); string(b) != "kept\n" {
		t.Errorf("f after refused writes: %q", b)
	}
	if _, err := os.Stat(filepath.Join(backing, "new")); !os.IsNotExist(err) {
		t.Errorf("new after a refused create: %v", err)
	}
	v := dial(t, e.port, "/")
	if _, err := v.Mkdir("dir", 0o755); nfsStatus(err) != "NFS3ERR_ROFS" {
		t.Errorf("mkdir on a -ro export = %v; want NFS3ERR_ROFS", err)
	}
}

// A daemon killed while a client copies: the client gets an error, and
// the server exits by itself, with status 1 and a reason.
func TestLibnfsDaemonKilledMidCopy(t *testing.T) {
	backing := publicDir(t)
	// Sparse: many reads, no disk.
	f, err := os.Create(filepath.Join(backing, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 30)
	f.Close()
	chownTree(t, backing)
	e := startExport(t, false, filepath.Join(binaries(t), "loopback"), "/dev/fd/3", backing)
	daemon := childOf(t, e.cmd.Process.Pid)

	dst := filepath.Join(t.TempDir(), "huge")
	cp := exec.Command(need(t, "nfs-cp", "libnfs-utils"), e.url("huge"), dst)
	var out bytes.Buffer
	cp.Stdout, cp.Stderr = &out, &out
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	cpDone := make(chan struct{})
	var cpErr error
	go func() { cpErr = cp.Wait(); close(cpDone) }()
	defer func() {
		cp.Process.Kill()
		<-cpDone
	}()
	// Kill the daemon once 8 MiB are copied.
	deadline := time.Now().Add(30 * time.Second)
	for size(dst) < 8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon served no 8 MiB in 30 s; nfs-cp: %s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cpDone:
		if cpErr == nil {
			t.Errorf("nfs-cp succeeded after the daemon died: %s", out.String())
		}
		t.Logf("nfs-cp after the daemon died: %v: %s", cpErr, strings.TrimSpace(out.String()))
	case <-time.After(60 * time.Second):
		t.Errorf("nfs-cp still running 60 s after the daemon died: %s", out.String())
	}
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("perfuse nfs still running 10 s after its daemon died")
	}
	var exit *exec.ExitError
	if !errors.As(e.err, &exit) || exit.ExitCode() != 1 || !strings.Contains(e.stderr.String(), "session ended") {
		t.Errorf("perfuse nfs ended with %v, saying %q; want status 1 and the session's end", e.err, e.stderr.String())
	}
}

// childOf returns the one child process of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var kids []int
	for _, p := range tasks {
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			kids = append(kids, n)
		}
	}
	if len(kids) != 1 {
		t.Fatalf("process %d has children %v; want one, the daemon", pid, kids)
	}
	return kids[0]
}

// size returns the size of the file at path, 0 when missing.
func size(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// On loopback only root and the serving user get in: another user of the
// machine would act as the export's user.
func TestLoopbackRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		skipOrFail(t, "running a client as another user needs root")
	}
	backing := publicDir(t)
	os.WriteFile(filepath.Join(backing, "f"), []byte("secret\n"), 0o644)
	chownTree(t, backing)
	e := startExport(t, false, filepath.Join(binaries(t), "loopback"), "/dev/fd/3", backing)
	if got := mustLibnfs(t, "nfs-cat", e.url("f")); got != "secret\n" {
		t.Errorf("root's nfs-cat = %q", got)
	}
	other := exec.Command(need(t, "setpriv", "util-linux"), "--reuid=1234", "--regid=1234", "--clear-groups",
		need(t, "nfs-cat", "libnfs-utils"), e.url("f"))
	other.WaitDelay = time.Second
	timer := time.AfterFunc(30*time.Second, func() { other.Process.Kill() })
	defer timer.Stop()
	out, err := other.CombinedOutput()
	if err == nil || strings.Contains(string(out), "secret") {
		t.Errorf("uid 1234's nfs-cat: %v, %q; want refused", err, out)
	}
	// The server logs the refusal as the client's connection closes,
	// which may be a moment after the client has given up.
	said := func() bool {
		s := e.stderr.String()
		return strings.Contains(s, "refused a loopback connection") && strings.Contains(s, "uid=1234")
	}
	for deadline := time.Now().Add(5 * time.Second); !said() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !said() {
		t.Errorf("perfuse nfs said %q; want the refusal of uid 1234", e.stderr.String())
	}
}
