package perfuse

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// attach starts a session on conn and unmounts it at cleanup.
func attach(t *testing.T, conn *os.File, opts ...Option) *Usermount {
	t.Helper()
	u, err := Attach(testCtx(t), conn, nil, opts...)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { u.Unmount(context.Background()) })
	return u
}

// makeTree writes a tree with small files, an empty file, a file of several
// READ chunks and a directory of many entries (several READDIR replies).
func makeTree(t *testing.T) string {
	dir := t.TempDir()
	write := func(name string, data []byte) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hello.txt", []byte("hello, world\n"))
	write("empty", nil)
	big := make([]byte, 3<<20+4097)
	for i := range big {
		big[i] = byte(i*131 + i>>12)
	}
	write("sub/big.bin", big)
	write("sub/deeper/still/leaf.txt", []byte(strings.Repeat("leaf ", 1000)))
	for i := 0; i < 300; i++ {
		write(filepath.Join("many", strings.Repeat("n", 1+i%200)+string(rune('a'+i%26))+string(rune('0'+i/26))), []byte{byte(i)})
	}
	if err := os.Mkdir(filepath.Join(dir, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// compareTree walks fsys and src and requires the same names, types and
// bytes in both.
func compareTree(t *testing.T, fsys fs.FS, src string) {
	t.Helper()
	want := map[string]string{}
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			want[filepath.ToSlash(rel)] = "dir"
		} else {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			want[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	got := map[string]string{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			got[p] = "dir"
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		got[p] = string(b)
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: missing through perfuse", p)
		case g != w:
			t.Errorf("%s: %d bytes through perfuse differ from the %d of the source", p, len(g), len(w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: through perfuse but not in the source", p)
		}
	}
}

// requireBalanced checks that the session holds no lookups but the root's:
// everything walked was forgotten again.
func requireBalanced(t *testing.T, u *Usermount) {
	t.Helper()
	if n := u.NodeCount(); n != 1 {
		t.Errorf("%d nodes still held after the walk, want only the root", n)
	}
}

func TestWalkGoFuseLoopback(t *testing.T) {
	src := makeTree(t)
	u := attach(t, gofusepeer.ServeLoopback(t, src))
	compareTree(t, u.FS(testCtx(t), nil), src)
	requireBalanced(t, u)
}

func TestWalkGoFuseMemFSTest(t *testing.T) {
	files := map[string]string{"a.txt": "alpha", "d/b.txt": "beta", "d/e/c.txt": strings.Repeat("gamma", 1000)}
	u := attach(t, gofusepeer.ServeMem(t, files))
	if err := fstest.TestFS(u.FS(testCtx(t), nil), "a.txt", "d/b.txt", "d/e/c.txt"); err != nil {
		t.Fatal(err)
	}
	requireBalanced(t, u)
}

func TestWalkSquashfuse(t *testing.T) {
	src := makeTree(t)
	d := daemonpeer.Squashfuse(t, src)
	u := attach(t, d.Conn)
	if minor, _, _, _ := u.Negotiated(); minor < MinDaemonMinor {
		t.Fatalf("negotiated minor %d", minor)
	}
	compareTree(t, u.FS(testCtx(t), nil), src)
	requireBalanced(t, u)
}

// fuse-overlayfs splices its READ replies, so large ones arrive as several
// records that the transport must join.
func TestWalkFuseOverlayfs(t *testing.T) {
	lower := makeTree(t)
	upper, work := t.TempDir(), t.TempDir()
	d := daemonpeer.FuseOverlayfs(t, lower, upper, work)
	u := attach(t, d.Conn)
	compareTree(t, u.FS(testCtx(t), nil), lower)
	requireBalanced(t, u)
}

func TestDemoTreeBytes(t *testing.T) {
	// The io/fs view reads what the daemon serves, byte for byte, at any
	// offset and in any chunk size.
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	u := attach(t, gofusepeer.ServeMem(t, map[string]string{"f": string(data)}))
	f, err := u.FS(testCtx(t), nil).Open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []byte
	buf := make([]byte, 7777)
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, differing from the %d served", len(got), len(data))
	}
}

// Sessions leave nothing behind: after many Attach/Unmount cycles against
// real daemons the goroutine and fd counts are back where they started.
func TestSessionsLeakNothing(t *testing.T) {
	src := makeTree(t)
	run := func() {
		u, err := Attach(testCtx(t), gofusepeer.ServeLoopback(t, src), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fs.ReadFile(u.FS(testCtx(t), nil), "hello.txt"); err != nil {
			t.Fatal(err)
		}
		if err := u.Unmount(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		<-u.Done()
	}
	run() // warm up lazily started runtime goroutines
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	for i := 0; i < 20; i++ {
		run()
	}
	// The go-fuse servers stop when their socket closes; give them a moment.
	if !settle(func() bool { return runtime.NumGoroutine() <= goroutines+2 && openFDs(t) <= fds+2 }) {
		t.Errorf("after 20 sessions: %d goroutines (%d before), %d fds (%d before)", runtime.NumGoroutine(), goroutines, openFDs(t), fds)
	}
}
