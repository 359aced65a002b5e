package main

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Targets that differ get dump files that differ.
func TestTraceNamesDoNotCollide(t *testing.T) {
	seen := map[string]string{}
	for _, target := range []string{"/a-b", "/a/b", "/a%2Db", "/a%2db", "/a--b", "/a/-b", "/a-/b", "/mnt/x"} {
		n := traceName(target)
		if other, ok := seen[n]; ok {
			t.Errorf("%s and %s both dump to %s", other, target, n)
		}
		seen[n] = target
	}
	if n := traceName("/mnt/x"); n != "perfused-mnt-x.trace" {
		t.Errorf("traceName(/mnt/x) = %s, want upstream's perfused-mnt-x.trace", n)
	}
}

// A dump never follows a symlink planted at its name, nor goes into a
// directory others may write to, or reached through a symlink.
func TestTraceDumpRefusesUnsafePlaces(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, tracePath(dir, "/mnt/x")); err != nil {
		t.Fatal(err)
	}
	f, err := createDump(dir, "/mnt/x")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("dump")
	f.Close()
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the dump wrote through a planted symlink: victim now %q", b)
	}
	if st, err := os.Lstat(tracePath(dir, "/mnt/x")); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Errorf("dump file: %v, %v; want a new regular file, mode 0600", st, err)
	}

	shared := t.TempDir()
	os.Chmod(shared, 0o1777)
	if _, err := createDump(shared, "/mnt/x"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("dump into a world-writable directory: %v, want EPERM", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if _, err := createDump(link, "/mnt/x"); err == nil {
		t.Error("dump into a directory reached through a symlink")
	}
}
