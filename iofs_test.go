package perfuse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
)

// build creates dir/… from spec: "name" → contents, "name/" → a directory,
// "name@" → a symbolic link to the value.
func build(t *testing.T, dir string, spec map[string]string) {
	t.Helper()
	for name, v := range spec {
		p := filepath.Join(dir, strings.TrimRight(name, "/@"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasSuffix(name, "@"):
			err = os.Symlink(v, p)
		default:
			err = os.WriteFile(p, []byte(v), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// linkTree has symbolic links that all resolve inside the view: to a file,
// to a directory, through "..", through another link and a linked
// directory.
var linkTree = map[string]string{
	"a.txt":      "alpha",
	"d/b.txt":    "beta",
	"d/e/c.txt":  strings.Repeat("gamma", 1000),
	"emptydir/":  "",
	"la@":        "a.txt",
	"ld@":        "d",
	"chain@":     "la",
	"d/up@":      "../a.txt",
	"d/e/deep@":  "../../ld/e/c.txt",
	"d/e/dot@":   ".",
	"d/e/slash@": "../e/",
}

var linkTreeNames = []string{"a.txt", "d/b.txt", "d/e/c.txt", "emptydir", "la", "ld", "chain", "d/up", "d/e/deep", "d/e/dot", "d/e/slash"}

// badTree has links an io/fs view must refuse, and their neighbours.
func badTree(t *testing.T, dir string) {
	spec := map[string]string{
		"f.txt":   "file",
		"d/g.txt": "g",
		"self@":   "self",
		"ping@":   "pong",
		"pong@":   "ping",
		"abs@":    "/etc/passwd",
		"esc@":    "../outside",
		"escd@":   "d/../../outside",
		"d/esc@":  "../../outside",
		"gone@":   "nothere",
		"lf@":     "f.txt/",
		"ldir@":   "d",
		"l40@":    "c1",
	}
	// l40 → c1 → … → c39 → f.txt: 40 links, the most followed; l41 → l40
	// is one more.
	for i := 1; i < 40; i++ {
		spec[fmt.Sprintf("c%d@", i)] = fmt.Sprintf("c%d", i+1)
	}
	spec["c39@"] = "f.txt"
	spec["l41@"] = "l40"
	build(t, dir, spec)
	// Something to find if a link did leave the view.
	if err := os.WriteFile(filepath.Join(dir, "..", "outside"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// peerKind serves a directory tree to a new session; counting, when not
// nil, keeps the daemon's books.
type peerKind struct {
	name  string
	serve func(t *testing.T, dir string) (*os.File, *gofusepeer.Counting)
}

func loopbackRaw(t *testing.T, dir string) fuse.RawFileSystem {
	root, err := gofs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return gofs.NewNodeFS(root, &gofs.Options{})
}

var peerKinds = []peerKind{
	{"loopback", func(t *testing.T, dir string) (*os.File, *gofusepeer.Counting) {
		c := gofusepeer.NewCounting(loopbackRaw(t, dir))
		return gofusepeer.ServeRaw(t, c), c
	}},
	// sshfs answers a second listing from its cache with DT_UNKNOWN.
	{"unknown-types", func(t *testing.T, dir string) (*os.File, *gofusepeer.Counting) {
		c := gofusepeer.NewCounting(&gofusepeer.UnknownTypes{RawFileSystem: loopbackRaw(t, dir)})
		return gofusepeer.ServeRaw(t, c), c
	}},
	{"squashfuse", func(t *testing.T, dir string) (*os.File, *gofusepeer.Counting) {
		return daemonpeer.Squashfuse(t, dir).Conn, nil
	}},
}

// viewOf builds a fresh tree with fill, serves it with k and returns the
// session and its io/fs view.
func viewOf(t *testing.T, k peerKind, fill func(dir string)) (*Usermount, fs.FS, *gofusepeer.Counting) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "view")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fill(dir)
	conn, c := k.serve(t, dir)
	u := attach(t, conn)
	return u, u.FS(testCtx(t), nil), c
}

// requireNoLookups checks, before Unmount (which forgets everything), that
// the view gave back every lookup it took, on our side and the daemon's.
func requireNoLookups(t *testing.T, u *Usermount, c *gofusepeer.Counting) {
	t.Helper()
	requireBalanced(t, u)
	if c == nil {
		return
	}
	// FORGET has no reply: let the daemon take them.
	if !settle(func() bool { return len(c.Report()) == 0 }) {
		for _, s := range c.Report() {
			t.Error(s)
		}
	}
	entries, forgets, opens, releases := c.Totals()
	t.Logf("daemon handed out %d entries (%d forgotten), %d opens (%d released)", entries, forgets, opens, releases)
	if entries == 0 || opens == 0 {
		t.Errorf("nothing counted: %d entries, %d opens", entries, opens)
	}
}

// fstest.TestFS, with symbolic links present, on each kind of daemon; a
// second pass reads what the daemon may now answer from its caches.
func TestIOFSTestFSWithLinks(t *testing.T) {
	for _, k := range peerKinds {
		t.Run(k.name, func(t *testing.T) {
			u, fsys, c := viewOf(t, k, func(dir string) { build(t, dir, linkTree) })
			for pass := 1; pass <= 2; pass++ {
				if err := fstest.TestFS(fsys, linkTreeNames...); err != nil {
					t.Fatalf("pass %d: %v", pass, err)
				}
			}
			requireNoLookups(t, u, c)
		})
	}
}

// A walk sees every directory as a directory, twice, whatever type the
// daemon's listing gave.
func TestIOFSWalkUnknownTypes(t *testing.T) {
	k := peerKinds[1]
	src := makeTree(t)
	conn, c := k.serve(t, src)
	u := attach(t, conn)
	// The daemon does list every entry as DT_UNKNOWN.
	h, err := u.NodeOpen(testCtx(t), nil, u.Root(), syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	err = u.NodeReaddir(testCtx(t), nil, h, 0, func(d Dirent) bool {
		if listed++; d.Type != 0 {
			t.Errorf("%s listed with type %d", d.Name, d.Type)
		}
		return true
	})
	if err != nil || listed < 5 {
		t.Fatalf("%d entries listed: %v", listed, err)
	}
	u.NodeRelease(testCtx(t), h)
	fsys := u.FS(testCtx(t), nil)
	compareTree(t, fsys, src)
	compareTree(t, fsys, src)
	requireNoLookups(t, u, c)
}

// Walks of one view in several goroutines at once keep the books straight.
func TestIOFSConcurrentWalks(t *testing.T) {
	u, fsys, c := viewOf(t, peerKinds[1], func(dir string) { build(t, dir, linkTree) })
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			errs <- fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					if err == nil {
						_, err = fs.Stat(fsys, p)
					}
					return err
				}
				_, err = fs.ReadFile(fsys, p)
				return err
			})
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	requireNoLookups(t, u, c)
}

// Open, Stat, Lstat, ReadLink and Sub follow links as a kernel would, inside
// the view.
func TestIOFSFollowsLinks(t *testing.T) {
	for _, k := range peerKinds {
		t.Run(k.name, func(t *testing.T) {
			u, fsys, c := viewOf(t, k, func(dir string) { build(t, dir, linkTree) })
			read := map[string]string{
				"la": "alpha", "chain": "alpha", "d/up": "alpha", "ld/b.txt": "beta",
				"ld/up": "alpha", "d/e/deep": linkTree["d/e/c.txt"], "ld/e/dot/slash/dot/c.txt": linkTree["d/e/c.txt"],
				"ld/e/deep": linkTree["d/e/c.txt"],
			}
			for name, want := range read {
				got, err := fs.ReadFile(fsys, name)
				if err != nil || string(got) != want {
					t.Errorf("ReadFile(%q) = %.10q, %v; want %.10q", name, got, err, want)
				}
			}
			for name, want := range map[string]fs.FileMode{"la": 0, "ld": fs.ModeDir, "chain": 0, "d/e/dot": fs.ModeDir, "ld/e/slash": fs.ModeDir} {
				fi, err := fs.Stat(fsys, name)
				if err != nil || fi.Mode().Type() != want || fi.Name() != filepath.Base(name) {
					t.Errorf("Stat(%q) = %v, %v; want type %v", name, fi, err, want)
				}
				li, err := fs.Lstat(fsys, name)
				if err != nil || li.Mode().Type() != fs.ModeSymlink || li.Name() != filepath.Base(name) {
					t.Errorf("Lstat(%q) = %v, %v; want a symbolic link", name, li, err)
				}
			}
			if fi, err := fs.Lstat(fsys, "ld/b.txt"); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("Lstat through a linked directory = %v, %v", fi, err)
			}
			for name, want := range map[string]string{"la": "a.txt", "ld/up": "../a.txt", "d/e/slash": "../e/"} {
				if got, err := fs.ReadLink(fsys, name); err != nil || got != want {
					t.Errorf("ReadLink(%q) = %q, %v; want %q", name, got, err, want)
				}
			}
			entries, err := fs.ReadDir(fsys, "ld")
			if err != nil || len(entries) != 3 {
				t.Errorf("ReadDir(ld) = %v, %v; want d's 3 entries", entries, err)
			}
			// A Sub view resolves links as the whole view does.
			sub, err := fs.Sub(fsys, "ld")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := sub.(fs.ReadLinkFS); !ok {
				t.Errorf("Sub's view %T is no fs.ReadLinkFS", sub)
			}
			if got, err := fs.ReadFile(sub, "up"); err != nil || string(got) != "alpha" {
				t.Errorf("Sub(ld).ReadFile(up) = %q, %v", got, err)
			}
			if _, err := sub.Open("../a.txt"); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("Sub(ld).Open(../a.txt) = %v, want ErrInvalid", err)
			}
			requireNoLookups(t, u, c)
		})
	}
}

// wantPathError requires a *fs.PathError with op and path wrapping target.
func wantPathError(t *testing.T, what string, err error, op, path string, target error) {
	t.Helper()
	var pe *fs.PathError
	switch {
	case !errors.As(err, &pe):
		t.Errorf("%s: %v (%T), want a *fs.PathError", what, err, err)
	case pe.Op != op || pe.Path != path:
		t.Errorf("%s: %v: op %q path %q, want %q %q", what, err, pe.Op, pe.Path, op, path)
	case !errors.Is(err, target):
		t.Errorf("%s: %v, want it to wrap %v", what, err, target)
	}
}

// Links that loop, leave the view or lead nowhere are refused with a
// *fs.PathError, and nothing stays held.
func TestIOFSBadLinks(t *testing.T) {
	for _, k := range peerKinds {
		t.Run(k.name, func(t *testing.T) {
			u, fsys, c := viewOf(t, k, func(dir string) { badTree(t, dir) })
			open := func(name string) error {
				f, err := fsys.Open(name)
				if err == nil {
					f.Close()
				}
				return err
			}
			stat := func(name string) error { _, err := fs.Stat(fsys, name); return err }
			for _, tc := range []struct {
				name   string
				target error
			}{
				{"self", syscall.ELOOP},
				{"ping", syscall.ELOOP},
				{"l41", syscall.ELOOP},
				{"abs", fs.ErrNotExist},
				{"esc", fs.ErrNotExist},
				{"escd", fs.ErrNotExist},
				{"d/esc", fs.ErrNotExist},
				{"ldir/esc", fs.ErrNotExist},
				{"gone", syscall.ENOENT},
				{"missing", syscall.ENOENT},
				{"d/missing", syscall.ENOENT},
				{"f.txt/x", syscall.ENOTDIR},
				{"lf", syscall.ENOTDIR},
				{"self/x", syscall.ELOOP},
			} {
				wantPathError(t, "Open("+tc.name+")", open(tc.name), "open", tc.name, tc.target)
				wantPathError(t, "Stat("+tc.name+")", stat(tc.name), "stat", tc.name, tc.target)
			}
			if b, err := fs.ReadFile(fsys, "l40"); err != nil || string(b) != "file" {
				t.Errorf("40 links: %q, %v", b, err)
			}
			// The last link is not followed by Lstat and ReadLink.
			for _, name := range []string{"self", "abs", "esc", "gone", "l41"} {
				if fi, err := fs.Lstat(fsys, name); err != nil || fi.Mode().Type() != fs.ModeSymlink {
					t.Errorf("Lstat(%q) = %v, %v", name, fi, err)
				}
			}
			if got, err := fs.ReadLink(fsys, "abs"); err != nil || got != "/etc/passwd" {
				t.Errorf("ReadLink(abs) = %q, %v", got, err)
			}
			_, err := fs.ReadLink(fsys, "f.txt")
			wantPathError(t, "ReadLink(f.txt)", err, "readlink", "f.txt", syscall.EINVAL)
			_, err = fs.Lstat(fsys, "self/x")
			wantPathError(t, "Lstat(self/x)", err, "lstat", "self/x", syscall.ELOOP)
			_, err = fs.ReadLink(fsys, "missing")
			wantPathError(t, "ReadLink(missing)", err, "readlink", "missing", syscall.ENOENT)
			_, err = fsys.Open("/abs")
			wantPathError(t, "Open(/abs)", err, "open", "/abs", fs.ErrInvalid)
			f, err := fsys.Open("d")
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Read(make([]byte, 1))
			wantPathError(t, "Read(d)", err, "read", "d", syscall.EISDIR)
			f.Close()
			_, err = f.Stat()
			wantPathError(t, "Stat after Close", err, "stat", "d", fs.ErrClosed)
			requireNoLookups(t, u, c)
		})
	}
}

// sshfs itself, over a local sftp-server: its second listing of a
// directory comes from its cache with every type DT_UNKNOWN. sshfs answers
// READLINK of a target with ".." EPERM (through the kernel too), so those
// links are left out.
func TestIOFSSshfs(t *testing.T) {
	const server = "/usr/lib/openssh/sftp-server"
	if _, err := os.Stat(server); err != nil {
		if os.Getenv("PERFUSE_TEST_STRICT") == "1" {
			t.Fatalf("%v: apt-get install openssh-sftp-server (PERFUSE_TEST_STRICT=1)", err)
		}
		t.Skipf("%v: apt-get install openssh-sftp-server", err)
	}
	tree := map[string]string{}
	var names []string
	for _, name := range linkTreeNames {
		if !strings.Contains(linkTree[name+"@"], "..") {
			names = append(names, name)
		}
	}
	for name, v := range linkTree {
		if !strings.Contains(v, "..") {
			tree[name] = v
		}
	}
	dir := filepath.Join(t.TempDir(), "view")
	build(t, dir, tree)
	// sshfs runs ssh_command with ssh's arguments; the server wants none.
	ssh := filepath.Join(t.TempDir(), "ssh")
	if err := os.WriteFile(ssh, []byte("#!/bin/sh\nexec "+server+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := daemonpeer.Start(t, "sshfs", "-f", "-o", "ssh_command="+ssh, "localhost:"+dir, "/dev/fd/3")
	u := attach(t, d.Conn)
	fsys := u.FS(testCtx(t), nil)
	for pass := 1; pass <= 2; pass++ {
		if err := fstest.TestFS(fsys, names...); err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
	}
	requireBalanced(t, u)
}

// A fifo opens without an OPEN to the daemon, whose open(2) of it would
// block until a writer came (and the session waits for its answer): Stat
// works, Read is refused.
func TestIOFSSpecialFile(t *testing.T) {
	var fifo string
	u, fsys, c := viewOf(t, peerKinds[0], func(dir string) {
		fifo = filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		build(t, dir, map[string]string{"f.txt": "x"})
	})
	type opened struct {
		f   fs.File
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		f, err := fsys.Open("fifo")
		ch <- opened{f, err}
	}()
	var o opened
	select {
	case o = <-ch:
	case <-time.After(5 * time.Second):
		t.Error("Open(fifo) still waiting after 5s: the daemon was sent an OPEN")
		// A writer lets the daemon's open(2) return.
		w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		o = <-ch
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	f := o.f
	if fi, err := f.Stat(); err != nil || fi.Mode().Type() != fs.ModeNamedPipe {
		t.Errorf("Stat = %v, %v; want a named pipe", fi, err)
	}
	_, err := f.Read(make([]byte, 1))
	wantPathError(t, "Read(fifo)", err, "read", "fifo", syscall.EOPNOTSUPP)
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if _, err := fs.ReadFile(fsys, "f.txt"); err != nil {
		t.Error(err)
	}
	requireNoLookups(t, u, c)
}

// Files of the view are io.ReaderAt and io.Seeker, so that
// http.FileServerFS serves ranges without reading from the start.
func TestIOFSFilesSeekAndReadAt(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 300000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	u := attach(t, gofusepeer.ServeLoopback(t, dir))
	f, err := u.FS(testCtx(t), nil).Open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ra, ok := f.(io.ReaderAt)
	sk, ok2 := f.(io.Seeker)
	if !ok || !ok2 {
		t.Fatalf("%T is not an io.ReaderAt and io.Seeker", f)
	}
	buf := make([]byte, 1000)
	if n, err := ra.ReadAt(buf, 123456); n != len(buf) || err != nil || !bytes.Equal(buf, data[123456:124456]) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if n, err := ra.ReadAt(buf, int64(len(data)-10)); n != 10 || err != io.EOF {
		t.Fatalf("ReadAt at the end: %d, %v, want 10, EOF", n, err)
	}
	if off, err := sk.Seek(-100, io.SeekEnd); off != int64(len(data)-100) || err != nil {
		t.Fatalf("Seek from the end: %d, %v", off, err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, data[len(data)-100:]) {
		t.Fatalf("read after Seek: %d bytes, %v", len(rest), err)
	}
	if _, err := sk.Seek(-1, io.SeekStart); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Seek before the start: %v, want EINVAL", err)
	}
}

// A name that is not UTF-8 (Latin-1 "été") is as reachable as it is
// listed: Linux names are bytes, and fs.ValidPath's UTF-8 rule would make
// it a listed file nobody can stat, read or copy.
func TestIOFSNamesThatAreNotUTF8(t *testing.T) {
	latin1 := "\xe9t\xe9"
	for _, k := range peerKinds {
		t.Run(k.name, func(t *testing.T) {
			u, fsys, c := viewOf(t, k, func(dir string) {
				if err := os.MkdirAll(filepath.Join(dir, "A", latin1), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "A", latin1, latin1), []byte("bytes"), 0o644); err != nil {
					t.Fatal(err)
				}
			})
			var walked []string
			err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if _, err := d.Info(); err != nil {
					return err
				}
				walked = append(walked, p)
				return nil
			})
			if want := []string{".", "A", "A/" + latin1, "A/" + latin1 + "/" + latin1}; err != nil || !slices.Equal(walked, want) {
				t.Fatalf("walk: %q, %v; want %q", walked, err, want)
			}
			name := "A/" + latin1 + "/" + latin1
			if b, err := fs.ReadFile(fsys, name); err != nil || string(b) != "bytes" {
				t.Fatalf("read %q: %q, %v", name, b, err)
			}
			if st, err := fs.Stat(fsys, name); err != nil || st.Name() != latin1 || st.Size() != 5 {
				t.Fatalf("stat %q: %v, %v", name, st, err)
			}
			for _, bad := range []string{"A/\xe9/..", "\xff/./x", "/A", "A/"} {
				if _, err := fs.Stat(fsys, bad); !errors.Is(err, fs.ErrInvalid) {
					t.Errorf("stat %q: %v, want ErrInvalid", bad, err)
				}
			}
			requireNoLookups(t, u, c)
		})
	}
}
