package perfuse

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"golang.org/x/sys/unix"
)

// The op table against real daemons over the socket, each result checked
// against the directory the daemon serves, with os calls.

func serveLoopbackLocks(t *testing.T, dir string) *os.File {
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return gofusepeer.ServeRawOptions(t, fs.NewNodeFS(root, &fs.Options{}), fuse.MountOptions{EnableLocks: true})
}

func TestOpsGoFuseLoopback(t *testing.T) {
	dir := t.TempDir()
	u := attach(t, serveLoopbackLocks(t, dir))
	exerciseWritable(t, u, dir)
	requireBalanced(t, u)
}

func TestOpsFuseOverlayfs(t *testing.T) {
	lower, upper, work := t.TempDir(), t.TempDir(), t.TempDir()
	d := daemonpeer.FuseOverlayfs(t, lower, upper, work)
	u := attach(t, d.Conn)
	exerciseWritable(t, u, upper)
	requireBalanced(t, u)
}

// exerciseWritable runs every writing operation through u on an empty
// tree whose new files land in the host directory under.
func exerciseWritable(t *testing.T, u *Usermount, under string) {
	ctx := testCtx(t)
	root := u.Root()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	host := func(name string) string { return filepath.Join(under, name) }
	minor, flags, maxWrite, _ := u.Negotiated()
	t.Logf("negotiated minor %d flags %#x max_write %d", minor, flags, maxWrite)

	// create, write (several chunks), read back, on the host too.
	e, h, err := u.NodeCreate(ctx, nil, root, "f", syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL, 0o644, 0o022)
	must("create", err)
	data := make([]byte, 3*maxWrite+1234)
	for i := range data {
		data[i] = byte(i*7 + i>>10)
	}
	n, err := u.NodeWrite(ctx, nil, h, data, 0, 0, 0)
	must("write", err)
	if n != len(data) {
		t.Fatalf("wrote %d of %d", n, len(data))
	}
	back := make([]byte, len(data)+100)
	n, err = u.NodeRead(ctx, nil, h, back, 0)
	must("read", err)
	if !bytes.Equal(back[:n], data) {
		t.Errorf("read back %d bytes, differing from the %d written", n, len(data))
	}
	must("fsync", u.NodeFsync(ctx, nil, h, false))
	must("flush", u.NodeFlush(ctx, nil, h, 1))
	if b, err := os.ReadFile(host("f")); err != nil || !bytes.Equal(b, data) {
		t.Errorf("host sees %d bytes (%v), want the %d written", len(b), err, len(data))
	}
	if _, _, err := u.NodeCreate(ctx, nil, root, "f", syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL, 0o644, 0); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("O_EXCL create of an existing file: %v", err)
	}

	// truncate through the handle, chmod, chown, utimes.
	_, err = u.NodeSetattr(ctx, nil, e.Node, h, &SetAttrIn{Valid: FattrSize, Size: 1000})
	must("truncate", err)
	if st, err := os.Stat(host("f")); err != nil || st.Size() != 1000 {
		t.Errorf("host size after truncate: %v %v", st.Size(), err)
	}
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	out, err := u.NodeSetattr(ctx, nil, e.Node, nil, &SetAttrIn{
		Valid: FattrMode | FattrUid | FattrGid | FattrMtime | FattrAtime,
		Mode:  0o640, Owner: Owner{Uid: 1234, Gid: 5678},
		Mtime: uint64(mtime.Unix()), Mtimensec: uint32(mtime.Nanosecond()), Atime: uint64(mtime.Unix()),
	})
	must("chmod/chown/utimes", err)
	var st syscall.Stat_t
	must("host stat", syscall.Stat(host("f"), &st))
	if st.Mode&0o7777 != 0o640 || st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Sec != mtime.Unix() || st.Mtim.Nsec != int64(mtime.Nanosecond()) || st.Atim.Sec != mtime.Unix() {
		t.Errorf("host attributes mode %#o uid %d gid %d mtime %v atime %v", st.Mode, st.Uid, st.Gid, st.Mtim, st.Atim)
	}
	if out.Mode&0o7777 != 0o640 || out.Uid != 1234 {
		t.Errorf("SETATTR reply %+v", out.Attr)
	}
	// Access emulation from the attributes SETATTR refreshed.
	if err := u.NodeAccess(ctx, &Cred{Uid: 1234, Gid: 1}, e.Node, AccessRead|AccessWrite); err != nil {
		t.Errorf("owner access: %v", err)
	}
	if err := u.NodeAccess(ctx, &Cred{Uid: 999, Gid: 5678}, e.Node, AccessWrite); !errors.Is(err, syscall.EACCES) {
		t.Errorf("group write to 0640: %v", err)
	}

	// append through an O_APPEND open.
	ha, err := u.NodeOpen(ctx, nil, e.Node, syscall.O_WRONLY|syscall.O_APPEND)
	must("open append", err)
	_, err = u.NodeWrite(ctx, nil, ha, []byte("TAIL"), 0, 0, 0)
	must("append", err)
	must("close append", u.NodeClose(ctx, nil, ha, 1))
	if b, _ := os.ReadFile(host("f")); len(b) != 1004 || string(b[1000:]) != "TAIL" {
		t.Errorf("after append the host has %d bytes ending %q", len(b), b[max(0, len(b)-4):])
	}

	// fallocate, lseek SEEK_DATA/SEEK_HOLE compared with the host's.
	e2, h2, err := u.NodeCreate(ctx, nil, root, "sparse", syscall.O_RDWR|syscall.O_CREAT, 0o644, 0)
	must("create sparse", err)
	_, err = u.NodeWrite(ctx, nil, h2, bytes.Repeat([]byte("d"), 4096), 1<<20, 0, 0)
	must("write sparse", err)
	if err := u.NodeFallocate(ctx, nil, h2, 0, 4<<20, 4096); err != nil {
		t.Errorf("fallocate: %v", err)
	} else if st, err := os.Stat(host("sparse")); err != nil || st.Size() != 4<<20+4096 {
		t.Errorf("host size after fallocate: %d %v", st.Size(), err)
	}
	hf, err := os.Open(host("sparse"))
	must("host open", err)
	for _, c := range []struct {
		off    int64
		whence uint32
	}{{0, SeekData}, {0, SeekHole}, {(1 << 20) + 10, SeekData}, {(1 << 20) + 10, SeekHole}, {100 << 20, SeekData}} {
		want, werr := unix.Seek(int(hf.Fd()), c.off, int(c.whence))
		got, gerr := u.NodeLseek(ctx, nil, h2, c.off, c.whence)
		if u.unsupported[OpLseek].Load() && werr == nil {
			// A daemon without LSEEK: all data up to the size, as the
			// kernel answers for it.
			if want = c.off; c.whence == SeekHole {
				want = 4<<20 + 4096
			}
		}
		if (werr == nil) != (gerr == nil) || werr == nil && got != want {
			t.Errorf("lseek %d whence %d: %d %v, want %d %v", c.off, c.whence, got, gerr, want, werr)
		}
	}
	t.Logf("daemon has LSEEK: %v", !u.unsupported[OpLseek].Load())
	hf.Close()

	// copy_file_range inside the daemon.
	if n, err := u.NodeCopyFileRange(ctx, nil, h, 0, h2, 10, 500, 0); err != nil {
		t.Logf("copy_file_range: %v", err)
	} else if b, _ := os.ReadFile(host("sparse")); n != 500 || !bytes.Equal(b[10:510], data[:500]) {
		t.Errorf("copy_file_range copied %d, host bytes differ", n)
	}
	if ev, err := u.NodePoll(ctx, nil, h, 0, 0, PollIn); err != nil || ev&PollIn == 0 {
		t.Errorf("poll: %#x %v", ev, err)
	}

	// locks, when the daemon takes them: two opens conflict (go-fuse's
	// loopback uses open file description locks).
	if flags&CapPosixLocks != 0 {
		hb, err := u.NodeOpen(ctx, nil, e.Node, syscall.O_RDWR)
		must("second open", err)
		wr := FileLock{Start: 0, End: 99, Typ: syscall.F_WRLCK}
		_, err = u.NodeAdvlock(ctx, nil, h, OpSetlk, 1, wr, 0)
		must("setlk", err)
		if !slices.ContainsFunc(procLocks(t, st.Ino), func(s string) bool { return strings.Contains(s, "WRITE") }) {
			t.Errorf("no write lock in /proc/locks for inode %d: %q", st.Ino, procLocks(t, st.Ino))
		}
		probe := FileLock{Start: 50, End: 60, Typ: syscall.F_WRLCK}
		if got, err := u.NodeAdvlock(ctx, nil, hb, OpGetlk, 2, probe, 0); err != nil || got.Typ != syscall.F_WRLCK || got.Start != 0 || got.End != 99 {
			t.Errorf("getlk: %+v %v", got, err)
		}
		if _, err := u.NodeAdvlock(ctx, nil, hb, OpSetlk, 2, probe, 0); !errors.Is(err, syscall.EAGAIN) {
			t.Errorf("conflicting setlk: %v, want EAGAIN", err)
		}
		_, err = u.NodeAdvlock(ctx, nil, h, OpSetlk, 1, FileLock{Start: 0, End: OffsetMax, Typ: syscall.F_UNLCK}, 0)
		must("unlock", err)
		_, err = u.NodeAdvlock(ctx, nil, hb, OpSetlkw, 2, probe, 0)
		must("setlkw after unlock", err)
		if flags&CapFlockLocks != 0 {
			whole := FileLock{End: OffsetMax, Typ: syscall.F_WRLCK}
			_, err = u.NodeAdvlock(ctx, nil, h2, OpSetlk, 3, whole, LkFlock)
			must("flock", err)
			hc, err := u.NodeOpen(ctx, nil, e2.Node, syscall.O_RDONLY)
			must("open for flock", err)
			if _, err := u.NodeAdvlock(ctx, nil, hc, OpSetlk, 4, whole, LkFlock); !errors.Is(err, syscall.EAGAIN) {
				t.Errorf("second flock: %v, want EAGAIN", err)
			}
			must("close flock holder", u.NodeClose(ctx, nil, h2, 3))
			_, err = u.NodeAdvlock(ctx, nil, hc, OpSetlk, 4, whole, LkFlock)
			must("flock after the holder closed", err)
			must("close", u.NodeClose(ctx, nil, hc, 4))
		}
		must("close second open", u.NodeClose(ctx, nil, hb, 2))
	} else {
		t.Logf("daemon took no POSIX locks: lock tests skipped")
	}
	if h2.released.Load() == false {
		must("close sparse", u.NodeClose(ctx, nil, h2, 0))
	}

	// xattrs in the user namespace.
	must("setxattr", u.NodeSetextattr(ctx, nil, e.Node, "user.perfuse", []byte("value-1"), 0))
	if err := u.NodeSetextattr(ctx, nil, e.Node, "user.perfuse", []byte("x"), xattrCreate); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("XATTR_CREATE over an existing one: %v", err)
	}
	if v, sz, err := u.NodeGetextattr(ctx, nil, e.Node, "user.perfuse", 0); err != nil || v != nil || sz != 7 {
		t.Errorf("getxattr probe: %q %d %v", v, sz, err)
	}
	if _, _, err := u.NodeGetextattr(ctx, nil, e.Node, "user.perfuse", 3); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("getxattr into 3 bytes: %v, want ERANGE", err)
	}
	if v, _, err := u.NodeGetextattr(ctx, nil, e.Node, "user.perfuse", 100); err != nil || string(v) != "value-1" {
		t.Errorf("getxattr: %q %v", v, err)
	}
	hv := make([]byte, 100)
	if n, err := unix.Getxattr(host("f"), "user.perfuse", hv); err != nil || string(hv[:n]) != "value-1" {
		t.Errorf("host getxattr: %q %v", hv[:max(n, 0)], err)
	}
	if l, _, err := u.NodeListextattr(ctx, nil, e.Node, 1000); err != nil || !slices.Contains(strings.Split(string(l), "\x00"), "user.perfuse") {
		t.Errorf("listxattr: %q %v", l, err)
	}
	must("removexattr", u.NodeDeleteextattr(ctx, nil, e.Node, "user.perfuse"))
	if _, _, err := u.NodeGetextattr(ctx, nil, e.Node, "user.perfuse", 100); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr after remove: %v, want ENODATA", err)
	}
	must("close f", u.NodeClose(ctx, nil, h, 0))

	// rename over, hard link, symlink, fifo, mkdir/rmdir, unlink.
	eg, hg, err := u.NodeCreate(ctx, nil, root, "g", syscall.O_WRONLY|syscall.O_CREAT, 0o600, 0)
	must("create g", err)
	_, err = u.NodeWrite(ctx, nil, hg, []byte("GGG"), 0, 0, 0)
	must("write g", err)
	must("close g", u.NodeClose(ctx, nil, hg, 0))
	must("rename over", u.NodeRename(ctx, nil, root, "g", root, "f", 0))
	if b, err := os.ReadFile(host("f")); err != nil || string(b) != "GGG" {
		t.Errorf("host f after rename over: %q %v", b, err)
	}
	if !gone(host("g")) {
		t.Errorf("host g still there after rename")
	}
	el, err := u.NodeLink(ctx, nil, eg.Node, root, "hl")
	must("link", err)
	if el.Node != eg.Node || el.Attr.Nlink != 2 {
		t.Errorf("link entry: same node %v nlink %d", el.Node == eg.Node, el.Attr.Nlink)
	}
	var hs1, hs2 syscall.Stat_t
	must("host stat f", syscall.Stat(host("f"), &hs1))
	must("host stat hl", syscall.Stat(host("hl"), &hs2))
	if hs1.Ino != hs2.Ino || hs1.Nlink != 2 {
		t.Errorf("host: f inode %d, hl inode %d, nlink %d", hs1.Ino, hs2.Ino, hs1.Nlink)
	}
	es, err := u.NodeSymlink(ctx, nil, root, "sl", "f")
	must("symlink", err)
	if tgt, err := u.NodeReadlink(ctx, nil, es.Node); err != nil || tgt != "f" {
		t.Errorf("readlink: %q %v", tgt, err)
	}
	if tgt, err := os.Readlink(host("sl")); err != nil || tgt != "f" {
		t.Errorf("host readlink: %q %v", tgt, err)
	}
	_, err = u.NodeMknod(ctx, nil, root, "fifo", syscall.S_IFIFO|0o644, 0, 0)
	must("mknod fifo", err)
	if fi, err := os.Lstat(host("fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("host fifo: %v %v", fi, err)
	}
	ed, err := u.NodeMkdir(ctx, nil, root, "d", 0o750, 0)
	must("mkdir", err)
	if fi, err := os.Stat(host("d")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Errorf("host dir: %v %v", fi, err)
	}
	_, err = u.NodeMkdir(ctx, nil, ed.Node, "inner", 0o755, 0)
	must("mkdir inner", err)
	if err := u.NodeRmdir(ctx, nil, root, "d"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of a non-empty dir: %v", err)
	}
	must("rename into d", u.NodeRename(ctx, nil, root, "sl", ed.Node, "sl2", 0))
	if err := u.NodeRename(ctx, nil, ed.Node, "sl2", root, "fifo", RenameNoreplace); !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.EINVAL) {
		t.Errorf("RENAME_NOREPLACE over an existing name: %v", err)
	}
	must("unlink sl2", u.NodeRemove(ctx, nil, ed.Node, "sl2"))
	must("rmdir inner", u.NodeRmdir(ctx, nil, ed.Node, "inner"))
	must("rmdir d", u.NodeRmdir(ctx, nil, root, "d"))
	must("unlink hl", u.NodeRemove(ctx, nil, root, "hl"))
	if !gone(host("d")) {
		t.Errorf("host d still there after rmdir")
	}
	if err := u.NodeRemove(ctx, nil, root, "nonexistent"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("unlink of a missing name: %v", err)
	}

	// Every lookup taken above goes back.
	for _, n := range []*Node{e.Node, e2.Node, eg.Node, es.Node, ed.Node} {
		u.NodeReclaim(ctx, n, u.Lookups(n))
	}
	for _, id := range allNodeIDs(u) {
		if n := u.NodeByID(id); n != nil {
			u.NodeReclaim(ctx, n, u.Lookups(n))
		}
	}
}

func allNodeIDs(u *Usermount) []uint64 {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	var ids []uint64
	for id := range u.nodes {
		ids = append(ids, id)
	}
	return ids
}

// gone reports that path no longer exists on the host, or is an overlay
// whiteout (a 0/0 character device, which fuse-overlayfs leaves).
func gone(path string) bool {
	var st syscall.Stat_t
	err := syscall.Lstat(path, &st)
	return errors.Is(err, syscall.ENOENT) || err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFCHR && st.Rdev == 0
}

// procLocks returns the /proc/locks lines of inode ino.
func procLocks(t *testing.T, ino uint64) []string {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 5 && strings.HasSuffix(f[5], fmt.Sprintf(":%d", ino)) {
			out = append(out, l)
		}
	}
	return out
}

// A directory of 10,000 entries read completely, with READDIR and with
// READDIRPLUS, in one go and resumed every 997 entries: no entry lost or
// repeated, and every lookup READDIRPLUS carried given back.
func TestReaddirTenThousand(t *testing.T) {
	for _, daemon := range []string{"go-fuse loopback", "fuse-overlayfs"} {
		t.Run(daemon, func(t *testing.T) {
			dir := t.TempDir()
			want := map[string]bool{}
			for i := 0; i < 10000; i++ {
				name := fmt.Sprintf("entry-%05d-%s", i, strings.Repeat("x", i%40))
				want[name] = true
				if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var u *Usermount
			if daemon == "fuse-overlayfs" {
				u = attach(t, daemonpeer.FuseOverlayfs(t, dir, t.TempDir(), t.TempDir()).Conn)
			} else {
				u = attach(t, gofusepeer.ServeLoopback(t, dir))
			}
			ctx := testCtx(t)
			for _, plus := range []bool{false, true} {
				if _, flags, _, _ := u.Negotiated(); plus && flags&CapReaddirplus == 0 {
					t.Logf("daemon took no READDIRPLUS")
					continue
				}
				for _, batch := range []int{0, 997} {
					h, err := u.NodeOpen(ctx, nil, u.Root(), syscall.O_RDONLY)
					if err != nil {
						t.Fatal(err)
					}
					seen := map[string]int{}
					var off uint64
					for calls := 0; ; calls++ {
						taken := 0
						fn := func(d Dirent) bool {
							if batch > 0 && taken == batch {
								return false
							}
							taken++
							seen[d.Name]++
							off = d.Off
							return true
						}
						if plus {
							err = u.NodeReaddirplus(ctx, nil, h, off, func(d DirentPlus) bool {
								if !fn(d.Dirent) {
									return false
								}
								if d.Node != nil {
									u.NodeReclaim(ctx, d.Node, 1)
								}
								return true
							})
						} else {
							err = u.NodeReaddir(ctx, nil, h, off, fn)
						}
						if err != nil {
							t.Fatalf("readdir (plus %v) after %d calls: %v", plus, calls, err)
						}
						if batch == 0 || taken < batch {
							break
						}
					}
					if err := u.NodeRelease(ctx, h); err != nil {
						t.Fatal(err)
					}
					// "." and ".." are the daemon's to send or not
					// (fuse-overlayfs sends no ".." at the root).
					var lost, repeated []string
					for name := range want {
						if seen[name] == 0 {
							lost = append(lost, name)
						}
					}
					for name, n := range seen {
						if n > 1 || !want[name] && name != "." && name != ".." {
							repeated = append(repeated, name)
						}
					}
					if len(lost) > 0 || len(repeated) > 0 {
						t.Errorf("plus %v batch %d: %d seen, lost %.5q, repeated or unknown %.5q", plus, batch, len(seen), lost, repeated)
					}
				}
			}
			requireBalanced(t, u)
		})
	}
}

// The counting daemon: after a mixed workload and Unmount, every lookup
// the daemon handed out was forgotten exactly, and every open released
// once.
func TestCountingDaemonBalances(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 50; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("pre%02d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	counting := gofusepeer.NewCounting(fs.NewNodeFS(root, &fs.Options{}))
	conn := gofusepeer.ServeRawOptions(t, counting, fuse.MountOptions{EnableLocks: true})
	u, err := Attach(testCtx(t), conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	r := u.Root()
	e1, h1, err := u.NodeCreate(ctx, nil, r, "a", syscall.O_RDWR|syscall.O_CREAT, 0o644, 0)
	if err != nil {
		t.Fatal(err)
	}
	u.NodeWrite(ctx, nil, h1, []byte("hello"), 0, 0, 0)
	d, _ := u.NodeMkdir(ctx, nil, r, "d", 0o755, 0)
	u.NodeSymlink(ctx, nil, d.Node, "s", "../a")
	u.NodeMknod(ctx, nil, d.Node, "p", syscall.S_IFIFO|0o644, 0, 0)
	u.NodeLink(ctx, nil, e1.Node, d.Node, "hard")
	u.NodeLookup(ctx, nil, r, "a")
	u.NodeLookup(ctx, nil, d.Node, "hard")
	u.NodeLookup(ctx, nil, r, "missing")
	u.NodeRename(ctx, nil, d.Node, "hard", r, "hard2", 0)
	u.NodeRemove(ctx, nil, r, "hard2")
	// Readdirplus taking part of the directory, then stopping.
	dh, _ := u.NodeOpen(ctx, nil, r, syscall.O_RDONLY)
	taken := 0
	u.NodeReaddirplus(ctx, nil, dh, 0, func(DirentPlus) bool { taken++; return taken < 20 })
	// Plain readdir, and opens left open for Unmount to release.
	u.NodeReaddir(ctx, nil, dh, 0, func(Dirent) bool { return true })
	e2, _ := u.NodeLookup(ctx, nil, r, "pre07")
	u.NodeOpen(ctx, nil, e2.Node, syscall.O_RDONLY)
	h3, _ := u.NodeOpen(ctx, nil, e2.Node, syscall.O_RDONLY)
	u.NodeClose(ctx, nil, h3, 0)
	u.NodeAdvlock(ctx, nil, h1, OpSetlk, 1, FileLock{End: OffsetMax, Typ: syscall.F_WRLCK}, LkFlock)
	// Some lookups given back before unmount, the rest at it.
	u.NodeReclaim(ctx, d.Node, 1)
	entries, _, opens, _ := counting.Totals()
	if entries < 50 || opens < 4 {
		t.Errorf("workload too small: %d entries, %d opens", entries, opens)
	}
	if err := u.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	// FORGETs have no reply: let the daemon take them.
	ok := settle(func() bool { return len(counting.Report()) == 0 })
	entries, forgets, opens, releases := counting.Totals()
	t.Logf("daemon handed out %d entries (%d forgotten), %d opens (%d released)", entries, forgets, opens, releases)
	if !ok {
		for _, s := range counting.Report() {
			t.Error(s)
		}
	}
}
