// Package kerneltest holds helpers for tests that make real kernel FUSE
// mounts through perfuse's kernel binding: the skip rules, a relay mount
// that is always removed at cleanup, and tree comparison.
package kerneltest

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"golang.org/x/sys/unix"
)

// Strict reports whether PERFUSE_TEST_STRICT=1: skips become failures.
func Strict() bool { return os.Getenv("PERFUSE_TEST_STRICT") == "1" }

// CanMount is kernel.CanMount.
func CanMount() (bool, string) { return kernel.CanMount() }

// NeedMount skips the test when kernel mounts are impossible, or fails it
// under PERFUSE_TEST_STRICT=1.
func NeedMount(t testing.TB) {
	t.Helper()
	if ok, why := CanMount(); !ok {
		if Strict() {
			t.Fatalf("kernel FUSE mount impossible (%s) and PERFUSE_TEST_STRICT=1", why)
		}
		t.Skipf("kernel FUSE mount impossible: %s", why)
	}
}

// Relay is a kernel mount of a FUSE daemon through perfuse.
type Relay struct {
	Dir     string
	U       *perfuse.Usermount
	M       *kernel.Mountpoint
	MainErr chan error // Mainloop's result
}

// Mount mounts the daemon at the other end of client through perfuse at a
// new temporary directory. At cleanup the mount is detached (even if the
// test failed half-way) and the session waited for.
func Mount(t testing.TB, client *os.File, cfg kernel.Config, opts ...perfuse.Option) *Relay {
	t.Helper()
	NeedMount(t)
	dir := t.TempDir()
	return MountAt(t, client, dir, cfg, opts...)
}

// MountAt is Mount at dir: the session's INIT (perfuse.Attach), then the
// kernel mount (kernel.Mount).
func MountAt(t testing.TB, client *os.File, dir string, cfg kernel.Config, opts ...perfuse.Option) *Relay {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := perfuse.Attach(ctx, client, &perfuse.MountInfo{Source: "perfuse-test", Target: dir, FSType: "fuse.test"},
		append([]perfuse.Option{perfuse.WithDiag(perfuse.DiagTrace)}, opts...)...)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	r := &Relay{Dir: dir, U: u, MainErr: make(chan error, 1)}
	t.Cleanup(func() {
		unix.Unmount(dir, unix.MNT_DETACH)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if r.M != nil {
			if err := r.M.Unmount(ctx); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		}
		// A session that never mounted has no Mountpoint: end it here.
		u.Unmount(ctx)
	})
	go func() { r.MainErr <- u.Mainloop() }()
	if r.M, err = kernel.Mount(ctx, u, cfg); err != nil {
		t.Fatalf("kernel.Mount: %v", err)
	}
	return r
}

// Mounted reports whether dir is a mountpoint now.
func Mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) > 4 && string(f[4]) == dir {
			return true
		}
	}
	return false
}

// MountLine returns dir's line of /proc/mounts, "" if not mounted.
func MountLine(dir string) string { return kernel.MountLine(dir) }

// CompareTrees checks that got has exactly want's entries, with the same
// types, permission bits, symlink targets and file contents.
func CompareTrees(t testing.TB, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		gp := filepath.Join(got, rel)
		wi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gi, err := os.Lstat(gp)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if rel != "." && wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode()&fs.ModeSymlink != 0:
			wl, _ := os.Readlink(p)
			gl, err := os.Readlink(gp)
			if err != nil || gl != wl {
				t.Errorf("%s: link %q (%v), want %q", rel, gl, err, wl)
			}
		case wi.Mode().IsRegular():
			wb, _ := os.ReadFile(p)
			gb, err := os.ReadFile(gp)
			if err != nil || !bytes.Equal(wb, gb) {
				t.Errorf("%s: %d bytes (%v) differ from the %d of the source", rel, len(gb), err, len(wb))
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", want, err)
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, p)
		if !seen[rel] {
			t.Errorf("%s: extra entry in the mount", rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("walk %s: %v", got, err)
	}
}

// MakeTree fills dir with a small tree: nested directories, files of
// several sizes (one over 1 MiB), a symlink, an empty file.
func MakeTree(t testing.TB, dir string) {
	t.Helper()
	big := make([]byte, 3<<20+4321)
	for i := range big {
		big[i] = byte(i*7 + i>>11)
	}
	files := map[string][]byte{
		"README":             []byte("hello from the source tree\n"),
		"empty":              nil,
		"a/b/c/deep.txt":     []byte("deep\n"),
		"a/medium.bin":       big[:70000],
		"data/big.bin":       big,
		"data/notes/one.txt": []byte("one\n"),
		"data/notes/two.txt": []byte("two\n"),
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "a/b/c/deep.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("data/notes/one.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}
