package nfsexport

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	nfs "github.com/willscott/go-nfs"
)

// handleTree makes dirs a and a/b with files in each, and b.
func handleTree(t *testing.T) string {
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"a/x": nil, "a/y": nil, "a/b/z": nil, "b/w": nil})
	return dir
}

func stale(err error) bool {
	var st *nfs.NFSStatusError
	return errors.As(err, &st) && st.NFSStatus == nfs.NFSStatusStale
}

// Each handle holds one lookup; over the cap the least recently used go,
// their lookups given back, and a directory never before what is in it.
func TestHandlesCapped(t *testing.T) {
	u := loopback(t, handleTree(t))
	s := New(u, Options{MaxHandles: 3})
	defer s.Close()
	var hs [][]byte
	for _, p := range [][]string{{"a"}, {"a", "b"}, {"a", "b", "z"}} {
		hs = append(hs, hd(s).ToHandle(s.root, p))
	}
	n := u.NodeByID(s.table.byID(idOf(t, hs[2])).id())
	if got := u.Lookups(n); got != 1 {
		t.Errorf("a held handle's node has %d lookups; want 1", got)
	}
	// One more: a/b/z, the least recently used, goes; not a or a/b.
	hd(s).ToHandle(s.root, []string{"b"})
	if got := s.Handles(); got != 3 {
		t.Errorf("%d handles held; want the cap, 3", got)
	}
	if _, _, err := hd(s).FromHandle(hs[2]); !stale(err) {
		t.Errorf("the evicted handle: %v; want NFS3ERR_STALE", err)
	}
	if u.NodeByID(n.ID()) != nil {
		t.Errorf("the evicted node still has lookups")
	}
	for _, h := range hs[:2] {
		if _, p, err := hd(s).FromHandle(h); err != nil {
			t.Errorf("handle of a directory with a held child: %v", err)
		} else if _, err := s.root.Lstat(s.root.Join(p...)); err != nil {
			t.Errorf("stat through the handle: %v", err)
		}
	}
	s.Close()
	if got := u.NodeCount(); got != 1 {
		t.Errorf("after Close %d nodes have lookups; want the root only", got)
	}
}

// Handles unused for the TTL are dropped, and their lookups given back.
func TestHandlesExpire(t *testing.T) {
	u := loopback(t, handleTree(t))
	s := New(u, Options{HandleTTL: time.Minute})
	defer s.Close()
	now := time.Now()
	s.table.now = func() time.Time { return now }
	old := hd(s).ToHandle(s.root, []string{"a", "x"})
	now = now.Add(50 * time.Second)
	kept := hd(s).ToHandle(s.root, []string{"b", "w"})
	now = now.Add(20 * time.Second)
	s.table.sweep()
	if _, _, err := hd(s).FromHandle(old); !stale(err) {
		t.Errorf("a handle unused for 70 s: %v; want NFS3ERR_STALE", err)
	}
	if _, _, err := hd(s).FromHandle(kept); err != nil {
		t.Errorf("a handle used 20 s ago: %v", err)
	}
	if got := s.Handles(); got != 2 {
		t.Errorf("%d handles held; want b and b/w", got)
	}
}

// A handle names the node, not the path: it survives renames, and goes
// stale when the daemon says its node is gone, or for another server
// instance (a perfuse restart).
func TestHandleStale(t *testing.T) {
	dir := handleTree(t)
	u := loopback(t, dir)
	s := New(u, Options{})
	h := hd(s).ToHandle(s.root, []string{"a", "x"})
	if err := s.root.Rename("a", "c"); err != nil {
		t.Fatal(err)
	}
	if _, p, err := hd(s).FromHandle(h); err != nil {
		t.Errorf("handle after its directory's rename: %v", err)
	} else if fi, err := s.root.Lstat(s.root.Join(p...)); err != nil || fi.Name() == "" {
		t.Errorf("stat through it: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "c/x")); err != nil {
		t.Fatal(err)
	}
	s.table.stale(s.table.byID(idOf(t, h)))
	if _, _, err := hd(s).FromHandle(h); !stale(err) {
		t.Errorf("handle of a removed file: %v; want NFS3ERR_STALE", err)
	}
	h = hd(s).ToHandle(s.root, []string{"b"})
	s.Close()
	s2 := New(u, Options{})
	defer s2.Close()
	if _, _, err := hd(s2).FromHandle(h); !stale(err) {
		t.Errorf("another instance's handle: %v; want NFS3ERR_STALE", err)
	}
	if _, _, err := hd(s2).FromHandle([]byte("short")); !stale(err) {
		t.Errorf("a malformed handle: %v; want NFS3ERR_STALE", err)
	}
}

// A name sent by a client never passes for a token, and one with "/"
// resolves to nothing.
func TestPathsFromClients(t *testing.T) {
	u := loopback(t, handleTree(t))
	s := New(u, Options{})
	defer s.Close()
	h := hd(s).ToHandle(s.root, []string{"a"})
	id := idOf(t, h)
	for _, name := range []string{"\x00" + "0:" + "1", "b/w", "..", "."} {
		p := s.root.Join("a", name)
		if _, err := s.root.Lstat(p); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Lstat(a/%q) = %v; want EINVAL", name, err)
		}
	}
	if _, err := s.root.Lstat(s.root.Join(s.root.token(id), "b", "z")); err != nil {
		t.Errorf("a token then names: %v", err)
	}
}

func idOf(t *testing.T, h []byte) uint64 {
	t.Helper()
	var boot [8]byte
	copy(boot[:], h)
	id, _, ok := parseHandle(boot, h)
	if !ok {
		t.Fatalf("bad handle %x", h)
	}
	return id
}

// A node open in the daemon keeps its lookup past the cap and past its
// removal until the open ends, as the kernel never forgets an open inode
// (go-fuse panics on a RELEASE of a forgotten node).
func TestOpenNodeKeepsLookup(t *testing.T) {
	dir := handleTree(t)
	u := loopback(t, dir)
	s := New(u, Options{MaxHandles: 1})
	defer balanced(t, u, s)
	f, err := s.root.Open("a/x")
	if err != nil {
		t.Fatal(err)
	}
	x := f.(*openFile).r.node
	hd(s).ToHandle(s.root, []string{"b", "w"}) // over the cap
	if err := s.root.Remove("a/x"); err != nil {
		t.Fatal(err)
	}
	if got := u.Lookups(x); got != 1 {
		t.Errorf("the open node has %d lookups; want 1 until it is closed", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if u.NodeByID(x.ID()) != nil {
		t.Errorf("the removed node keeps lookups after its close")
	}
}

// A directory keeps its lookup while a node found in it is held: the
// daemon never sees a directory forgotten before its entries.
func TestParentOutlivesChild(t *testing.T) {
	u := loopback(t, handleTree(t))
	s := New(u, Options{MaxHandles: 1})
	defer balanced(t, u, s)
	f, err := s.root.Open("a/b/z")
	if err != nil {
		t.Fatal(err)
	}
	z := f.(*openFile).r
	hd(s).ToHandle(s.root, []string{"b", "w"}) // over the cap
	for r := z; r != nil && r != s.table.root; r = r.up {
		if got := u.Lookups(r.node); got != 1 {
			t.Errorf("node %d on the open file's path has %d lookups; want 1", r.id(), got)
		}
	}
	if z.up == nil || z.up.up == nil {
		t.Fatalf("a/b/z's parents are not held")
	}
	f.Close()
	s.table.sweep()
	if got := s.Handles(); got != 1 {
		t.Errorf("%d handles held after the close; want the cap, 1, again", got)
	}
}
