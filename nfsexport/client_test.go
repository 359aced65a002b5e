package nfsexport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	nfsc "github.com/willscott/go-nfs-client/nfs"
)

// The export driven by go-nfs-client, an NFSv3 client in Go, against the
// go-fuse loopback (in process) and squashfuse.

func putFile(t *testing.T, v *nfsc.Target, p string, b []byte) {
	t.Helper()
	f, err := v.OpenFile(p, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", p, err)
	}
	for off := 0; off < len(b); off += 1 << 20 {
		if _, err := f.Write(b[off:min(len(b), off+1<<20)]); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", p, err)
	}
}

func getFile(t *testing.T, v *nfsc.Target, p string) []byte {
	t.Helper()
	f, err := v.Open(p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	b, err := readAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

// readAll reads r to its end in reads of 1 MiB, each one NFS READ: a
// READ of more than 16 MiB would end short, marked as the end of the file
// (go-nfs v0.0.4 caps the count after it decides EOF), and io.ReadAll
// asks that much of a large file.
func readAll(r io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func names(t *testing.T, v *nfsc.Target, dir string) []string {
	t.Helper()
	ents, err := v.ReadDirPlus(dir)
	if err != nil {
		t.Fatalf("READDIRPLUS %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.Name() != "." && e.Name() != ".." {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func TestGoClientLoopback(t *testing.T) {
	dir := t.TempDir()
	u := loopback(t, dir)
	s, port := serve(t, u, Options{})
	v := dial(t, port, "/")
	defer balanced(t, u, s)

	// A tree in, compared on the backing directory, and out again.
	files := tree(t)
	for _, d := range dirsOf(files) {
		if _, err := v.Mkdir(d, 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
	}
	for p, b := range files {
		putFile(t, v, p, b)
	}
	checkTree(t, dir, files)
	for p, b := range files {
		if got := getFile(t, v, p); !bytes.Equal(got, b) {
			t.Errorf("%s read back: %d bytes; want %d", p, len(got), len(b))
		}
	}
	if got, want := names(t, v, "d1"), []string{"d2", "one.txt"}; !equal(got, want) {
		t.Errorf("READDIRPLUS d1 = %q; want %q", got, want)
	}
	ents, err := v.ReadDirPlus("d1/d2")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "two.bin" && (e.Size() != 300<<10 || e.IsDir()) {
			t.Errorf("READDIRPLUS two.bin: size %d dir %v", e.Size(), e.IsDir())
		}
		if e.Name() == "d3" && !e.IsDir() {
			t.Errorf("READDIRPLUS d3 is no directory: %v", e.Mode())
		}
	}

	// An open file keeps its handle through a rename of its directory.
	f, err := v.Open("d1/d2/two.bin")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Rename("d1/d2", "moved"); err != nil {
		t.Fatalf("rename d1/d2 moved: %v", err)
	}
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 8192); err != nil {
		t.Errorf("read through the handle after its directory's rename: %v", err)
	} else if !bytes.Equal(buf, files["d1/d2/two.bin"][8192:8192+4096]) {
		t.Errorf("read after rename: wrong bytes")
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(dir, "moved/d3/three.bin")); err != nil {
		t.Errorf("after rename: %v", err)
	}
	if _, _, err := v.Lookup("d1/d2"); nfsStatus(err) != "NFS3ERR_NOENT" {
		t.Errorf("lookup of the old name = %v; want NFS3ERR_NOENT", err)
	}
	if err := v.Rename("top.txt", "d1/top-renamed.txt"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "d1/top-renamed.txt")); err != nil || string(b) != "top\n" {
		t.Errorf("renamed file: %q %v", b, err)
	}

	// Truncate (SETATTR size), shorter and longer.
	for _, size := range []uint64{1000, 5000} {
		if err := v.Setattr("moved/two.bin", nfsc.Sattr3{Size: nfsc.SetSize{SetIt: true, Size: size}}); err != nil {
			t.Fatalf("truncate to %d: %v", size, err)
		}
		fi, err := os.Stat(filepath.Join(dir, "moved/two.bin"))
		if err != nil || fi.Size() != int64(size) {
			t.Fatalf("after truncate to %d: %v %v", size, fi.Size(), err)
		}
	}
	if b := getFile(t, v, "moved/two.bin"); !bytes.Equal(b[:1000], files["d1/d2/two.bin"][:1000]) || !bytes.Equal(b[1000:], make([]byte, 4000)) {
		t.Errorf("truncated file holds the wrong bytes")
	}

	// Remove and rmdir; a directory with entries stays.
	if err := v.RmDir("moved"); err == nil {
		t.Errorf("rmdir of a directory with entries succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "moved/two.bin")); err != nil {
		t.Errorf("after refused rmdir: %v", err)
	}
	if err := v.Remove("moved/two.bin"); err != nil {
		t.Fatal(err)
	}
	if err := v.Remove("moved/d3/three.bin"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"moved/d3", "moved"} {
		if err := v.RmDir(d); err != nil {
			t.Fatalf("rmdir %s: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "moved")); !os.IsNotExist(err) {
		t.Errorf("after rmdir: %v", err)
	}
	if got, want := names(t, v, "."), []string{"d1", "empty", "other dir"}; !equal(got, want) {
		t.Errorf("READDIRPLUS / = %q; want %q", got, want)
	}

	// 64 MiB, checked by sha256 on the backing file, and read back by
	// four readers at once, each on its own connection, each a quarter
	// (the race detector makes go-nfs slow; the libnfs test reads it
	// whole four times at once).
	big := randomBytes(t, 64<<20)
	putFile(t, v, "big", big)
	if got := fileSum(t, filepath.Join(dir, "big")); got != sum(big) {
		t.Fatalf("64 MiB backing file sha256 %s; want %s", got, sum(big))
	}
	var wg sync.WaitGroup
	const quarter = 16 << 20
	for i := range 4 {
		r := dial(t, port, "/")
		wg.Go(func() {
			f, err := r.Open("big")
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if _, err := f.Seek(int64(i*quarter), io.SeekStart); err != nil {
				t.Error(err)
				return
			}
			b, err := readAll(io.LimitReader(f, quarter))
			if err != nil || sum(b) != sum(big[i*quarter:(i+1)*quarter]) {
				t.Errorf("concurrent read of quarter %d: %d bytes, %v", i, len(b), err)
			}
		})
	}
	wg.Wait()
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGoClientSquashfuse(t *testing.T) {
	src := t.TempDir()
	files := tree(t)
	writeTree(t, src, files)
	d := daemonpeer.Squashfuse(t, src)
	u := attachConn(t, d.Conn)
	_, port := serve(t, u, Options{ReadOnly: true})
	v := dial(t, port, "/")
	for p, b := range files {
		if got := getFile(t, v, p); !bytes.Equal(got, b) {
			t.Errorf("%s: %d bytes; want %d", p, len(got), len(b))
		}
	}
	if got, want := names(t, v, "d1/d2"), []string{"d3", "two.bin"}; !equal(got, want) {
		t.Errorf("READDIRPLUS d1/d2 = %q; want %q", got, want)
	}
	// A subdirectory mounts as a root of its own.
	sub := dial(t, port, "/d1/d2")
	if got := getFile(t, sub, "d3/three.bin"); !bytes.Equal(got, files["d1/d2/d3/three.bin"]) {
		t.Errorf("through the mount of /d1/d2: %d bytes", len(got))
	}
	if _, err := v.Create("new", 0o644); nfsStatus(err) != "NFS3ERR_ROFS" {
		t.Errorf("create on the read-only export = %v; want NFS3ERR_ROFS", err)
	}
}

// The daemon killed while go-nfs-client reads: the read fails, and Serve
// returns by itself, saying why.
func TestGoClientDaemonKilled(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 30)
	f.Close()
	bin := filepath.Join(binaries(t), "loopback")
	d, err := perfuse.Start(testCtx(t), exec.Command(bin, "/dev/fd/3", dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Unmount(context.Background()) })
	s := New(d.Usermount, Options{})
	l, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	defer s.Close()
	v := dial(t, l.Addr().(*net.TCPAddr).Port, "/")
	r, err := v.Open("huge")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for range 8 {
		if _, err := r.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	pid := childRunning(t, bin)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.Exited()
	var rerr error
	for range 1024 {
		if _, rerr = r.Read(buf); rerr != nil {
			break
		}
	}
	if rerr == nil {
		t.Errorf("reads went on after the daemon died")
	}
	select {
	case err := <-served:
		if !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("Serve = %v; want the session's end (ENOTCONN)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve still running 10 s after the daemon died")
	}
}

// childRunning returns the pid of this process's child running bin.
func childRunning(t *testing.T, bin string) int {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, p := range tasks {
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if exe, _ := os.Readlink("/proc/" + f + "/exe"); exe == bin {
				pid, _ := strconv.Atoi(f)
				return pid
			}
		}
	}
	t.Fatalf("no child runs %s", bin)
	return 0
}
