package nfsexport

import (
	"os"
	"path/filepath"
	"testing"
)

// LINK (go-nfs passes the target's handle), MKNOD of a fifo, SYMLINK and
// READLINK, at the filesystem go-nfs calls, checked on the backing
// directory.
func TestLinkFifoSymlink(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"a/f": []byte("data")})
	u := loopback(t, dir)
	s := New(u, Options{})
	defer balanced(t, u, s)
	h := hd(s).ToHandle(s.root, []string{"a", "f"})
	if err := s.root.Link(string(h), "a/g"); err != nil {
		t.Fatalf("Link: %v", err)
	}
	f1, _ := os.Stat(filepath.Join(dir, "a/f"))
	f2, err := os.Stat(filepath.Join(dir, "a/g"))
	if err != nil || !os.SameFile(f1, f2) {
		t.Errorf("a/g is no hard link of a/f: %v", err)
	}
	if err := s.root.Link("not a handle", "a/h"); err == nil {
		t.Errorf("Link with a bad handle succeeded")
	}
	if err := s.root.Mkfifo("a/fifo", 0o600); err != nil {
		t.Fatalf("Mkfifo: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "a/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("a/fifo: %v %v", fi.Mode(), err)
	}
	if err := s.root.Symlink("f", "a/sym"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(dir, "a/sym")); err != nil || got != "f" {
		t.Errorf("a/sym -> %q %v", got, err)
	}
	if got, err := s.root.Readlink("a/sym"); err != nil || got != "f" {
		t.Errorf("Readlink = %q %v", got, err)
	}
	if fi, err := s.root.Lstat("a/sym"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("Lstat of a symlink: %v %v", fi.Mode(), err)
	}
	if err := s.root.Mknod("a/dev", 0o600, 1, 3); err == nil {
		t.Errorf("Mknod of a device succeeded, its type unknown")
	}
}
