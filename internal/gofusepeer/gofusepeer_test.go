package gofusepeer

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/peerutil"
)

const (
	opLookup  = 1
	opGetattr = 3
	opOpen    = 14
	opRead    = 15
	opRelease = 18
)

// kernelFlags is what a Linux kernel might offer, without the splice and
// passthrough flags a socket peer must never be offered.
const kernelFlags = fuse.CAP_ASYNC_READ | fuse.CAP_POSIX_LOCKS | fuse.CAP_ATOMIC_O_TRUNC |
	fuse.CAP_BIG_WRITES | fuse.CAP_DONT_MASK | fuse.CAP_AUTO_INVAL_DATA |
	fuse.CAP_READDIRPLUS | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_MAX_PAGES

// lookup resolves a path component by component and returns the last entry.
func lookup(t *testing.T, c *peerutil.Client, path ...string) fuse.EntryOut {
	t.Helper()
	var e fuse.EntryOut
	e.NodeId = 1
	for _, name := range path {
		h, p := c.Call(opLookup, e.NodeId, peerutil.CString(name))
		var ok bool
		if e, ok = peerutil.Decode[fuse.EntryOut](p); h.Status != 0 || !ok {
			t.Fatalf("LOOKUP(%q): status %d, %d payload bytes", name, h.Status, len(p))
		}
	}
	return e
}

// readFile opens nodeid, reads size bytes at offset 0 and releases it. It
// returns the data and the sizes of the records the READ reply came in.
func readFile(t *testing.T, c *peerutil.Client, nodeid uint64, size uint32) ([]byte, []int) {
	t.Helper()
	h, p := c.Call(opOpen, nodeid, peerutil.InPayload(fuse.OpenIn{Flags: uint32(os.O_RDONLY)}))
	open, ok := peerutil.Decode[fuse.OpenOut](p)
	if h.Status != 0 || !ok {
		t.Fatalf("OPEN: status %d, %d payload bytes", h.Status, len(p))
	}
	h, data := c.Call(opRead, nodeid, peerutil.InPayload(fuse.ReadIn{Fh: open.Fh, Size: size, Flags: uint32(os.O_RDONLY)}))
	if h.Status != 0 {
		t.Fatalf("READ: status %d", h.Status)
	}
	records := slices.Clone(c.LastRecords)
	if h, _ := c.Call(opRelease, nodeid, peerutil.InPayload(fuse.ReleaseIn{Fh: open.Fh})); h.Status != 0 {
		t.Errorf("RELEASE: status %d", h.Status)
	}
	return data, records
}

func TestMemTreeServesLookupGetattrOpenRead(t *testing.T) {
	conn := ServeMem(t, map[string]string{"a/b/c.txt": "hello, world\n", "a/d.txt": "x", "e/": ""})
	c := peerutil.NewClient(t, conn)

	out, n := c.Init(31, kernelFlags)
	// go-fuse speaks 7.28 and sends the whole 64-byte init_out.
	if out.Major != 7 || out.Minor != 28 || n != 64 || out.MaxWrite != 128<<10 || out.Flags&(fuse.CAP_SPLICE_READ|fuse.CAP_SPLICE_WRITE|fuse.CAP_SPLICE_MOVE) != 0 {
		t.Errorf("INIT reply (%d bytes): %+v", n, out)
	}
	t.Logf("go-fuse INIT reply: %d bytes, 7.%d max_write %d flags %#x max_pages %d", n, out.Minor, out.MaxWrite, out.Flags, out.MaxPages)

	e := lookup(t, c, "a", "b", "c.txt")
	if e.Mode != syscall.S_IFREG|0o644 || e.Size != 13 {
		t.Errorf("c.txt entry: mode %o size %d, want %o 13", e.Mode, e.Size, syscall.S_IFREG|0o644)
	}
	h, p := c.Call(opGetattr, e.NodeId, peerutil.InPayload(fuse.GetAttrIn{}))
	attr, ok := peerutil.Decode[fuse.AttrOut](p)
	if h.Status != 0 || !ok || attr.Ino != e.Ino || attr.Size != 13 || attr.Mode != syscall.S_IFREG|0o644 {
		t.Errorf("GETATTR: status %d, %+v", h.Status, attr)
	}
	if data, _ := readFile(t, c, e.NodeId, 4096); string(data) != "hello, world\n" {
		t.Errorf("READ = %q, want %q", data, "hello, world\n")
	}

	if dir := lookup(t, c, "e"); dir.Mode != syscall.S_IFDIR|0o755 {
		t.Errorf("e: mode %o, want a 0755 directory", dir.Mode)
	}
	if h, _ := c.Call(opLookup, 1, peerutil.CString("nope")); h.Status != -int32(syscall.ENOENT) {
		t.Errorf("LOOKUP(nope): status %d, want -ENOENT", h.Status)
	}
}

func TestLoopbackReadReplyIsOneRecord(t *testing.T) {
	dir := t.TempDir()
	want := bytes.Repeat([]byte("0123456789abcdef"), 128<<10/16)
	if err := os.WriteFile(filepath.Join(dir, "big"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	c := peerutil.NewClient(t, ServeLoopback(t, dir))
	c.Init(31, kernelFlags)

	e := lookup(t, c, "big")
	got, records := readFile(t, c, e.NodeId, 128<<10)
	if !bytes.Equal(got, want) {
		t.Errorf("READ of 128 KiB returned %d bytes, not the file's", len(got))
	}
	// Without DisableSplice go-fuse would splice this reply in pieces.
	if wantRecs := []int{16 + 128<<10}; !slices.Equal(records, wantRecs) {
		t.Errorf("READ reply came as records %v, want %v", records, wantRecs)
	}
}

func TestServerStopsWhenClientCloses(t *testing.T) {
	before := runtime.NumGoroutine()
	var conn *os.File
	t.Run("serve", func(t *testing.T) {
		conn = ServeMem(t, map[string]string{"f": "x"})
		peerutil.NewClient(t, conn).Init(31, kernelFlags)
	})
	// The subtest's cleanup closed the client end and waited for Serve.
	if _, err := conn.Write([]byte{0}); err == nil {
		t.Errorf("client end still open after cleanup")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before serving, %d after cleanup:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestServerStopsWhenClientClosesBeforeInit(t *testing.T) {
	// NewServer is blocked reading INIT; closing the client end must end it
	// (the cleanup fails the test otherwise).
	conn := ServeMem(t, nil)
	conn.Close()
}
