package perfuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/fakepeer"
)

// The exact frames of every operation of the table, and its error paths,
// against the scripted daemon.

const opCaps = uint32(CapMaxPages | CapAsyncRead | CapReaddirplus |
	CapPosixLocks | CapFlockLocks | CapDontMask)

// opSession is fakeSession with a chosen max_write and INIT flags.
func opSession(t *testing.T, maxWrite, flags uint32, opts ...Option) (*fakepeer.Peer, *Usermount) {
	t.Helper()
	p, conn := fakepeer.New(t)
	p.ServeInit(31, maxWrite, flags)
	p.Expect(OpDestroy).AnyTimes()
	u, err := Attach(testCtx(t), conn, nil, opts...)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { u.Unmount(context.Background()) })
	return p, u
}

// lastReq returns the last request received with opcode op.
func lastReq(t *testing.T, p *fakepeer.Peer, op Opcode) fakepeer.Request {
	t.Helper()
	rs := p.Received()
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Header.Opcode == uint32(op) {
			return rs[i]
		}
	}
	t.Fatalf("no %s received", op)
	return fakepeer.Request{}
}

// count returns how many requests with opcode op were received.
func count(p *fakepeer.Peer, op Opcode) int {
	n := 0
	for _, r := range p.Received() {
		if r.Header.Opcode == uint32(op) {
			n++
		}
	}
	return n
}

// atUnmount accepts the FORGETs and RELEASEs that Unmount sends for what
// a test leaves held.
func atUnmount(p *fakepeer.Peer) {
	for _, op := range []Opcode{OpForget, OpBatchForget, OpRelease, OpReleasedir} {
		p.Expect(op).AnyTimes()
	}
}

var caller = &Cred{Uid: 1000, Gid: 100, Pid: 42}

func checkHeader(t *testing.T, r fakepeer.Request, nodeid uint64, cred *Cred) {
	t.Helper()
	var want Cred
	if cred != nil {
		want = *cred
	}
	if r.Header.NodeId != nodeid || r.Header.Uid != want.Uid || r.Header.Gid != want.Gid || r.Header.Pid != want.Pid {
		t.Errorf("%v: header nodeid %d caller %+v, want %d %+v", r, r.Header.NodeId, r.Header.Caller, nodeid, want)
	}
}

func lookupNode(t *testing.T, p *fakepeer.Peer, u *Usermount, name string, nodeid uint64, mode uint32) *Node {
	t.Helper()
	p.Expect(OpLookup).Name(name).Reply(entryOut(nodeid, mode))
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	return e.Node
}

func openNode(t *testing.T, p *fakepeer.Peer, u *Usermount, n *Node, flags int, fh uint64) *Handle {
	t.Helper()
	op := OpOpen
	if n.IsDir() {
		op = OpOpendir
	}
	p.Expect(op).Nodeid(n.ID()).Reply(fuse.OpenOut{Fh: fh})
	h, err := u.NodeOpen(testCtx(t), nil, n, flags)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCreateFrame(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	p.Expect(OpCreate).Nodeid(1).Name("f").Reply(entryOut(7, syscall.S_IFREG|0o640), fuse.OpenOut{Fh: 0, OpenFlags: fuse.FOPEN_DIRECT_IO})
	e, h, err := u.NodeCreate(testCtx(t), caller, u.Root(), "f", syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOCTTY, 0o640, 0o022)
	if err != nil {
		t.Fatal(err)
	}
	r := lastReq(t, p, OpCreate)
	checkHeader(t, r, 1, caller)
	in, _ := fakepeer.In[fuse.CreateIn](r)
	// DONT_MASK taken: the daemon applies the umask, so the mode goes unmasked.
	if in.Flags != syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL || in.Mode != syscall.S_IFREG|0o640 || in.Umask != 0o022 {
		t.Errorf("CREATE in %+v", in)
	}
	if !bytes.Equal(r.Payload[16:], []byte("f\x00")) {
		t.Errorf("CREATE name %q", r.Payload[16:])
	}
	if e.Node.ID() != 7 || u.Lookups(e.Node) != 1 || h.Fh() != 0 || h.OpenFlags() != fuse.FOPEN_DIRECT_IO || u.OpenHandles() != 1 {
		t.Errorf("entry %d lookups %d fh %d flags %#x opens %d", e.Node.ID(), u.Lookups(e.Node), h.Fh(), h.OpenFlags(), u.OpenHandles())
	}
	if u.HandleFor(e.Node, 0, false, 0) != h {
		t.Error("HandleFor does not find the open")
	}
	// Close: FLUSH with the lock owner, then RELEASE with the open flags.
	p.Expect(OpFlush).Nodeid(7)
	p.Expect(OpRelease).Nodeid(7)
	if err := u.NodeClose(testCtx(t), caller, h, 99); err != nil {
		t.Fatal(err)
	}
	fl, _ := fakepeer.In[fuse.FlushIn](lastReq(t, p, OpFlush))
	rel, _ := fakepeer.In[fuse.ReleaseIn](lastReq(t, p, OpRelease))
	if fl.Fh != 0 || fl.LockOwner != 99 || rel.Fh != 0 || rel.Flags != syscall.O_RDWR || rel.ReleaseFlags != 0 {
		t.Errorf("FLUSH %+v RELEASE %+v", fl, rel)
	}
	if err := u.NodeClose(testCtx(t), caller, h, 99); !errors.Is(err, syscall.EBADF) {
		t.Errorf("second close: %v, want EBADF", err)
	}
	// Without DONT_MASK perfuse applies the umask itself.
	p2, u2 := opSession(t, 128<<10, 0)
	p2.Expect(OpCreate).Reply(entryOut(8, syscall.S_IFREG|0o644), fuse.OpenOut{Fh: 3})
	if _, _, err := u2.NodeCreate(testCtx(t), nil, u2.Root(), "g", syscall.O_WRONLY, 0o666, 0o022); err != nil {
		t.Fatal(err)
	}
	if in, _ := fakepeer.In[fuse.CreateIn](lastReq(t, p2, OpCreate)); in.Mode != syscall.S_IFREG|0o644 {
		t.Errorf("masked mode %#o", in.Mode)
	}
	atUnmount(p)
	atUnmount(p2)
}

// A CREATE entry without a nodeid, or of the wrong type, is EIO; the open
// the daemon made is released, then its lookup forgotten (in that order, as
// the kernel does: a daemon may drop a forgotten node).
func TestCreateBadEntry(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	p.Expect(OpCreate).Reply(entryOut(9, syscall.S_IFDIR|0o755), fuse.OpenOut{Fh: 5})
	p.Expect(OpRelease).Nodeid(9)
	forget := p.Expect(OpForget).Nodeid(9)
	if _, _, err := u.NodeCreate(testCtx(t), nil, u.Root(), "f", syscall.O_RDWR, 0o644, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("create of a directory entry: %v, want EIO", err)
	}
	<-forget.Done()
	if rel, _ := fakepeer.In[fuse.ReleaseIn](lastReq(t, p, OpRelease)); rel.Fh != 5 {
		t.Errorf("released fh %d", rel.Fh)
	}
	var order []Opcode
	for _, r := range p.Received() {
		if op := Opcode(r.Header.Opcode); op == OpRelease || op == OpForget {
			order = append(order, op)
		}
	}
	if fmt.Sprint(order) != "[RELEASE FORGET]" {
		t.Errorf("order %v, want RELEASE before FORGET", order)
	}
	// Nodeid 0 names nothing to release or forget.
	p.Expect(OpCreate).Reply(fuse.EntryOut{}, fuse.OpenOut{Fh: 6})
	if _, _, err := u.NodeCreate(testCtx(t), nil, u.Root(), "f", syscall.O_RDWR, 0o644, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("create with nodeid 0: %v, want EIO", err)
	}
	if u.NodeCount() != 1 || u.OpenHandles() != 0 {
		t.Errorf("%d nodes, %d opens after failed creates", u.NodeCount(), u.OpenHandles())
	}
}

func TestCreateFallsBackToMknodOpen(t *testing.T) {
	for _, viaOption := range []bool{false, true} {
		t.Run(fmt.Sprintf("disable_creat=%v", viaOption), func(t *testing.T) {
			var opts []Option
			if viaOption {
				opts = append(opts, WithCreat(false))
			}
			p, u := opSession(t, 128<<10, opCaps, opts...)
			if !viaOption {
				p.Expect(OpCreate).ReplyErrno(syscall.ENOSYS)
			}
			p.Expect(OpMknod).Name("f").Reply(entryOut(7, syscall.S_IFREG|0o600))
			p.Expect(OpOpen).Nodeid(7).Reply(fuse.OpenOut{Fh: 4})
			e, h, err := u.NodeCreate(testCtx(t), caller, u.Root(), "f", syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL, 0o600, 0)
			if err != nil {
				t.Fatal(err)
			}
			mk, _ := fakepeer.In[fuse.MknodIn](lastReq(t, p, OpMknod))
			op, _ := fakepeer.In[fuse.OpenIn](lastReq(t, p, OpOpen))
			if mk.Mode != syscall.S_IFREG|0o600 || mk.Rdev != 0 || op.Flags != syscall.O_RDWR || h.Fh() != 4 || u.Lookups(e.Node) != 1 {
				t.Errorf("MKNOD %+v OPEN %+v fh %d lookups %d", mk, op, h.Fh(), u.Lookups(e.Node))
			}
			checkHeader(t, lastReq(t, p, OpMknod), 1, caller)
			// Remembered: no CREATE again. An existing name without O_EXCL
			// is looked up and opened; a failed OPEN gives the lookup back.
			p.Expect(OpMknod).Name("f").ReplyErrno(syscall.EEXIST)
			p.Expect(OpLookup).Name("f").Reply(entryOut(7, syscall.S_IFREG|0o600))
			p.Expect(OpOpen).Nodeid(7).ReplyErrno(syscall.EACCES)
			p.Expect(OpForget).Nodeid(7)
			if _, _, err := u.NodeCreate(testCtx(t), caller, u.Root(), "f", syscall.O_RDWR|syscall.O_CREAT, 0o600, 0); !errors.Is(err, syscall.EACCES) {
				t.Fatalf("create over an existing file: %v, want EACCES", err)
			}
			if u.Lookups(e.Node) != 1 {
				t.Errorf("lookups %d after a failed open, want 1", u.Lookups(e.Node))
			}
			p.Expect(OpMknod).Name("f").ReplyErrno(syscall.EEXIST)
			if _, _, err := u.NodeCreate(testCtx(t), caller, u.Root(), "f", syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL, 0o600, 0); !errors.Is(err, syscall.EEXIST) {
				t.Fatalf("O_EXCL create over an existing file: %v, want EEXIST", err)
			}
			if count(p, OpCreate) > 1 || viaOption && count(p, OpCreate) != 0 {
				t.Errorf("%d CREATEs sent", count(p, OpCreate))
			}
			atUnmount(p)
		})
	}
}

func TestMknodMkdirSymlinkLinkFrames(t *testing.T) {
	p, u := opSession(t, 128<<10, 0)
	ctx := testCtx(t)
	p.Expect(OpMknod).Nodeid(1).Name("fifo").Reply(entryOut(10, syscall.S_IFIFO|0o644))
	if _, err := u.NodeMknod(ctx, caller, u.Root(), "fifo", syscall.S_IFIFO|0o666, 0, 0o022); err != nil {
		t.Fatal(err)
	}
	mk, _ := fakepeer.In[fuse.MknodIn](lastReq(t, p, OpMknod))
	if mk.Mode != syscall.S_IFIFO|0o644 || mk.Umask != 0o022 {
		t.Errorf("MKNOD %+v", mk)
	}
	// Devices need root, and nothing is sent.
	if _, err := u.NodeMknod(ctx, caller, u.Root(), "dev", syscall.S_IFCHR|0o600, 0x0103, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mknod chr by a user: %v, want EPERM", err)
	}
	p.Expect(OpMknod).Name("dev").Reply(entryOut(11, syscall.S_IFCHR|0o600))
	if _, err := u.NodeMknod(ctx, nil, u.Root(), "dev", syscall.S_IFCHR|0o600, 0x0103, 0); err != nil {
		t.Fatal(err)
	}
	if mk, _ := fakepeer.In[fuse.MknodIn](lastReq(t, p, OpMknod)); mk.Rdev != 0x0103 {
		t.Errorf("rdev %#x", mk.Rdev)
	}
	if _, err := u.NodeMknod(ctx, nil, u.Root(), "x", syscall.S_IFDIR|0o700, 0, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("mknod of a directory: %v, want EINVAL", err)
	}

	p.Expect(OpMkdir).Nodeid(1).Name("d").Reply(entryOut(12, syscall.S_IFDIR|0o750))
	d, err := u.NodeMkdir(ctx, caller, u.Root(), "d", 0o1777, 0o027)
	if err != nil {
		t.Fatal(err)
	}
	r := lastReq(t, p, OpMkdir)
	if in, _ := fakepeer.In[fuse.MkdirIn](r); in.Mode != 0o1750 || in.Umask != 0o027 || !bytes.Equal(r.Payload[8:], []byte("d\x00")) {
		t.Errorf("MKDIR %+v %q", in, r.Payload)
	}
	// A created name whose entry has the wrong type is EIO, and forgotten.
	p.Expect(OpMkdir).Name("e").Reply(entryOut(13, syscall.S_IFREG|0o644))
	forget := p.Expect(OpForget).Nodeid(13)
	if _, err := u.NodeMkdir(ctx, caller, d.Node, "e", 0o755, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("mkdir answered with a file: %v, want EIO", err)
	}
	<-forget.Done()

	p.Expect(OpSymlink).Nodeid(12).Name("sl", "../target").Reply(entryOut(14, syscall.S_IFLNK|0o777))
	if _, err := u.NodeSymlink(ctx, caller, d.Node, "sl", "../target"); err != nil {
		t.Fatal(err)
	}
	if r := lastReq(t, p, OpSymlink); string(r.Payload) != "sl\x00../target\x00" {
		t.Errorf("SYMLINK payload %q", r.Payload)
	}
	for target, want := range map[string]error{"": syscall.ENOENT, strings.Repeat("x", 4096): syscall.ENAMETOOLONG, "a\x00b": syscall.EINVAL} {
		if _, err := u.NodeSymlink(ctx, caller, d.Node, "s2", target); !errors.Is(err, want) {
			t.Errorf("symlink to %.10q: %v, want %v", target, err, want)
		}
	}

	// LINK counts a lookup on the target (upstream did not).
	f := lookupNode(t, p, u, "f", 20, syscall.S_IFREG|0o644)
	p.Expect(OpLink).Nodeid(12).Name("hard").Reply(entryOut(20, syscall.S_IFREG|0o644))
	e, err := u.NodeLink(ctx, caller, f, d.Node, "hard")
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := fakepeer.In[fuse.LinkIn](lastReq(t, p, OpLink)); in.Oldnodeid != 20 || e.Node != f || u.Lookups(f) != 2 {
		t.Errorf("LINK %+v, same node %v, lookups %d", in, e.Node == f, u.Lookups(f))
	}
	if _, err := u.NodeLink(ctx, caller, d.Node, u.Root(), "dirlink"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("link to a directory: %v, want EPERM", err)
	}

	// Names are checked before the wire.
	for name, want := range map[string]error{".": syscall.EEXIST, "..": syscall.EEXIST, "a/b": syscall.EINVAL, "": syscall.EINVAL, strings.Repeat("n", 256): syscall.ENAMETOOLONG} {
		if _, err := u.NodeMkdir(ctx, nil, u.Root(), name, 0o755, 0); !errors.Is(err, want) {
			t.Errorf("mkdir %.10q: %v, want %v", name, err, want)
		}
		if _, err := u.NodeSymlink(ctx, nil, u.Root(), name, "t"); !errors.Is(err, want) {
			t.Errorf("symlink %.10q: %v, want %v", name, err, want)
		}
	}
	// Unmount gives every lookup back in one BATCH_FORGET.
	batch := p.Expect(OpBatchForget).Match(func(h *fuse.InHeader, b []byte) error {
		got := map[uint64]uint64{}
		for i := 0; i < int(nativeEndian.Uint32(b)); i++ {
			got[nativeEndian.Uint64(b[8+16*i:])] = nativeEndian.Uint64(b[16+16*i:])
		}
		if fmt.Sprint(got) != "map[10:1 11:1 12:1 14:1 20:2]" || h.NodeId != 0 {
			return fmt.Errorf("batch %v nodeid %d", got, h.NodeId)
		}
		return nil
	})
	u.Unmount(ctx)
	<-batch.Done()
}

func TestRemoveRmdirRenameFrames(t *testing.T) {
	p, u := opSession(t, 128<<10, 0)
	ctx := testCtx(t)
	d := lookupNode(t, p, u, "d", 5, syscall.S_IFDIR|0o755)
	p.Expect(OpUnlink).Nodeid(5).Name("f")
	if err := u.NodeRemove(ctx, caller, d, "f"); err != nil {
		t.Fatal(err)
	}
	if r := lastReq(t, p, OpUnlink); string(r.Payload) != "f\x00" {
		t.Errorf("UNLINK payload %q", r.Payload)
	}
	checkHeader(t, lastReq(t, p, OpUnlink), 5, caller)
	p.Expect(OpUnlink).Name("g").ReplyErrno(syscall.ENOENT)
	if err := u.NodeRemove(ctx, caller, d, "g"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("unlink of a missing name: %v", err)
	}
	p.Expect(OpRmdir).Nodeid(1).Name("d").ReplyErrno(syscall.ENOTEMPTY)
	if err := u.NodeRmdir(ctx, caller, u.Root(), "d"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir: %v", err)
	}
	for name, want := range map[string]error{".": syscall.EINVAL, "..": syscall.ENOTEMPTY, "a/b": syscall.EINVAL} {
		if err := u.NodeRmdir(ctx, nil, d, name); !errors.Is(err, want) {
			t.Errorf("rmdir %q: %v, want %v", name, err, want)
		}
	}
	if err := u.NodeRemove(ctx, nil, d, ".."); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("unlink \"..\": %v", err)
	}

	p.Expect(OpRename).Nodeid(1).Name("a", "b")
	if err := u.NodeRename(ctx, caller, u.Root(), "a", d, "b", 0); err != nil {
		t.Fatal(err)
	}
	r := lastReq(t, p, OpRename)
	if nativeEndian.Uint64(r.Payload) != 5 || string(r.Payload[8:]) != "a\x00b\x00" {
		t.Errorf("RENAME payload %q", r.Payload)
	}
	checkHeader(t, r, 1, caller)
	p.Expect(OpRename2).Name("a", "b")
	if err := u.NodeRename(ctx, caller, u.Root(), "a", d, "b", RenameNoreplace); err != nil {
		t.Fatal(err)
	}
	if in, _ := fakepeer.In[fuse.RenameIn](lastReq(t, p, OpRename2)); in.Newdir != 5 || in.Flags != RenameNoreplace {
		t.Errorf("RENAME2 %+v", in)
	}
	// ENOSYS from RENAME2: EINVAL, now and later, without asking again.
	p.Expect(OpRename2).ReplyErrno(syscall.ENOSYS)
	for i := 0; i < 2; i++ {
		if err := u.NodeRename(ctx, caller, u.Root(), "a", d, "b", RenameExchange); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("rename2 without daemon support: %v, want EINVAL", err)
		}
	}
	if err := u.NodeRename(ctx, nil, u.Root(), "a", d, "b", RenameExchange|RenameNoreplace); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("rename flags exchange|noreplace: %v", err)
	}
	if err := u.NodeRename(ctx, nil, u.Root(), "..", d, "b", 0); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rename \"..\": %v", err)
	}
	atUnmount(p)
}

func TestReadlinkReplies(t *testing.T) {
	p, u := opSession(t, 128<<10, 0)
	sl := lookupNode(t, p, u, "sl", 5, syscall.S_IFLNK|0o777)
	for _, c := range []struct {
		payload []byte
		want    string
		err     error
	}{
		{[]byte("target\x00\x00"), "target", nil},
		{[]byte("/abs/path"), "/abs/path", nil},
		{nil, "", syscall.EIO},
		{[]byte("\x00"), "", syscall.EIO},
		{bytes.Repeat([]byte("x"), 4097), "", syscall.EIO},
		{[]byte("a\x00b"), "", syscall.EIO},
	} {
		p.Expect(OpReadlink).Nodeid(5).Reply(c.payload)
		got, err := u.NodeReadlink(testCtx(t), caller, sl)
		if got != c.want || !errors.Is(err, c.err) && (err != nil || c.err != nil) {
			t.Errorf("READLINK %.12q: %q %v, want %q %v", c.payload, got, err, c.want, c.err)
		}
	}
	atUnmount(p)
}

func TestSetattrFrame(t *testing.T) {
	p, u := opSession(t, 128<<10, 0)
	ctx := testCtx(t)
	p.Expect(OpLookup).Name("f").Reply(fuse.EntryOut{NodeId: 5, Attr: fuse.Attr{Ino: 5, Mode: syscall.S_IFREG | 0o644, Atime: 111, Mtime: 222, Mtimensec: 3}})
	e, err := u.NodeLookup(ctx, nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	h := openNode(t, p, u, e.Node, syscall.O_RDWR, 9)
	p.Expect(OpSetattr).Nodeid(5).Reply(fuse.AttrOut{Attr: fuse.Attr{Ino: 5, Mode: syscall.S_IFREG | 0o600, Size: 10, Owner: fuse.Owner{Uid: 7}}})
	out, err := u.NodeSetattr(ctx, caller, e.Node, h, &SetAttrIn{
		Valid: FattrSize | FattrMode | FattrLockowner, Size: 10, Mode: 0o600, LockOwner: 77})
	if err != nil || out.Size != 10 {
		t.Fatalf("%+v %v", out, err)
	}
	in, _ := fakepeer.In[fuse.SetAttrIn](lastReq(t, p, OpSetattr))
	if in.Valid != FattrSize|FattrMode|FattrLockowner|FattrFh || in.Fh != 9 || in.Size != 10 ||
		in.Mode != 0o600 || in.LockOwner != 77 || in.Atime != 111 || in.Mtime != 222 || in.Mtimensec != 3 {
		t.Errorf("SETATTR %+v", in)
	}
	checkHeader(t, lastReq(t, p, OpSetattr), 5, caller)
	// The reply is the cached attributes: access emulation sees 0600 owned by 7.
	if a, _ := e.Node.Attr(); a.Mode != syscall.S_IFREG|0o600 || a.Uid != 7 {
		t.Errorf("cached attributes %+v", a)
	}
	if err := u.NodeAccess(ctx, &Cred{Uid: 8}, e.Node, AccessRead); !errors.Is(err, syscall.EACCES) {
		t.Errorf("access by another user: %v", err)
	}
	// Nothing to change: GETATTR instead.
	p.Expect(OpGetattr).Nodeid(5).Reply(attrOut(5, syscall.S_IFREG|0o600, 10))
	if _, err := u.NodeSetattr(ctx, nil, e.Node, nil, &SetAttrIn{Valid: FattrLockowner}); err != nil {
		t.Fatal(err)
	}
	if count(p, OpSetattr) != 1 {
		t.Errorf("%d SETATTRs for nothing to change", count(p, OpSetattr))
	}
	p.Expect(OpSetattr).ReplyErrno(syscall.EPERM)
	if _, err := u.NodeSetattr(ctx, caller, e.Node, nil, &SetAttrIn{Valid: FattrUid, Owner: Owner{Uid: 0}}); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chown refused: %v", err)
	}
	if in, _ := fakepeer.In[fuse.SetAttrIn](lastReq(t, p, OpSetattr)); in.Valid != FattrUid {
		t.Errorf("SETATTR without handle has valid %#x", in.Valid)
	}
	p.Expect(OpSetattr).Reply(make([]byte, 50))
	if _, err := u.NodeSetattr(ctx, caller, e.Node, nil, &SetAttrIn{Valid: FattrMode}); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("short SETATTR reply: %v", err)
	}
	if _, err := u.NodeSetattr(ctx, caller, u.Root(), nil, &SetAttrIn{Valid: FattrSize}); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("truncate of a directory: %v", err)
	}
	atUnmount(p)
}

func TestAccess(t *testing.T) {
	// Emulated by default: no FUSE_ACCESS, the cached mode decides (a
	// GETATTR fetches it when none is cached).
	p, u := opSession(t, 128<<10, 0)
	p.Expect(OpGetattr).Nodeid(1).Reply(fuse.AttrOut{Attr: fuse.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o750, Owner: fuse.Owner{Uid: 10, Gid: 20}}})
	for _, c := range []struct {
		cred *Cred
		mask uint32
		want error
	}{
		{&Cred{Uid: 10, Gid: 1}, AccessRead | AccessWrite | AccessExec, nil},
		{&Cred{Uid: 11, Gid: 20}, AccessRead | AccessExec, nil},
		{&Cred{Uid: 11, Gid: 20}, AccessWrite, syscall.EACCES},
		{&Cred{Uid: 11, Gid: 21}, AccessRead, syscall.EACCES},
		{&Cred{Uid: 11, Gid: 21}, 0, nil},
		{nil, AccessWrite | AccessExec, nil},
	} {
		if err := u.NodeAccess(testCtx(t), c.cred, u.Root(), c.mask); !errors.Is(err, c.want) && (err != nil || c.want != nil) {
			t.Errorf("access %+v mask %d: %v, want %v", c.cred, c.mask, err, c.want)
		}
	}
	// Root may not execute a file nobody may execute.
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	if err := u.NodeAccess(testCtx(t), nil, f, AccessExec); !errors.Is(err, syscall.EACCES) {
		t.Errorf("root exec of 0644: %v", err)
	}
	if count(p, OpAccess) != 0 || count(p, OpGetattr) != 1 {
		t.Errorf("%d ACCESS, %d GETATTR sent", count(p, OpAccess), count(p, OpGetattr))
	}
	// enable_access: FUSE_ACCESS with the mask and the caller; ENOSYS
	// switches to emulation for good.
	p2, u2 := opSession(t, 128<<10, 0, WithAccess(true))
	p2.Expect(OpAccess).Nodeid(1).ReplyErrno(syscall.EACCES)
	if err := u2.NodeAccess(testCtx(t), caller, u2.Root(), AccessRead|AccessExec); !errors.Is(err, syscall.EACCES) {
		t.Errorf("ACCESS refused: %v", err)
	}
	r := lastReq(t, p2, OpAccess)
	checkHeader(t, r, 1, caller)
	if in, _ := fakepeer.In[fuse.AccessIn](r); in.Mask != 5 {
		t.Errorf("ACCESS mask %d", in.Mask)
	}
	p2.Expect(OpAccess).ReplyErrno(syscall.ENOSYS)
	p2.Expect(OpGetattr).Reply(attrOut(1, syscall.S_IFDIR|0o755, 0))
	if err := u2.NodeAccess(testCtx(t), caller, u2.Root(), AccessRead); err != nil {
		t.Errorf("after ENOSYS: %v", err)
	}
	if err := u2.NodeAccess(testCtx(t), caller, u2.Root(), AccessWrite); !errors.Is(err, syscall.EACCES) {
		t.Errorf("emulated write to 0755 of root: %v", err)
	}
	if count(p2, OpAccess) != 2 {
		t.Errorf("%d ACCESS sent, want 2", count(p2, OpAccess))
	}
	atUnmount(p)
}

func TestWriteChunksAndReplies(t *testing.T) {
	p, u := opSession(t, 8192, opCaps)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	h := openNode(t, p, u, f, syscall.O_WRONLY, 3)
	data := make([]byte, 20000)
	for i := range data {
		data[i] = byte(i)
	}
	var mu sync.Mutex // the peer's goroutine writes got, the test reads it
	var got bytes.Buffer
	p.Expect(OpWrite).Nodeid(5).Times(3).ReplyFunc(func(r fakepeer.Request) [][]byte {
		in, _ := fakepeer.In[fuse.WriteIn](r)
		mu.Lock()
		defer mu.Unlock()
		got.Write(r.Payload[40:])
		if in.Fh != 3 || in.Offset != 100+uint64(got.Len())-uint64(len(r.Payload)-40) || int(in.Size) != len(r.Payload)-40 ||
			in.LockOwner != 66 || in.WriteFlags != fuse.WRITE_LOCKOWNER || in.Flags != syscall.O_WRONLY {
			return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, syscall.EBADMSG)}
		}
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, fuse.WriteOut{Size: in.Size})}
	})
	n, err := u.NodeWrite(testCtx(t), caller, h, data, 100, 0, 66)
	mu.Lock()
	defer mu.Unlock()
	if err != nil || n != len(data) || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("write %d, %v", n, err)
	}
	if sizes := []int{}; true {
		for _, r := range p.Received() {
			if r.Op() == OpWrite {
				sizes = append(sizes, len(r.Payload)-40)
			}
		}
		if fmt.Sprint(sizes) != "[8192 8192 3616]" {
			t.Errorf("chunks %v, want max_write each", sizes)
		}
	}
	// A short reply ends the write there; 0 bytes or more than sent is EIO.
	p.Expect(OpWrite).Reply(fuse.WriteOut{Size: 10})
	if n, err := u.NodeWrite(testCtx(t), nil, h, data, 0, 0, 0); n != 10 || err != nil {
		t.Errorf("short write: %d %v", n, err)
	}
	for _, size := range []uint32{0, 20001} {
		p.Expect(OpWrite).Reply(fuse.WriteOut{Size: size})
		if _, err := u.NodeWrite(testCtx(t), nil, h, data[:8000], 0, 0, 0); !errors.Is(err, syscall.EIO) {
			t.Errorf("write answered %d: %v, want EIO", size, err)
		}
	}
	p.Expect(OpWrite).ReplyErrno(syscall.ENOSPC)
	if _, err := u.NodeWrite(testCtx(t), nil, h, data[:10], 0, 0, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("ENOSPC: %v", err)
	}
	if n, err := u.NodeWrite(testCtx(t), nil, h, nil, 0, 0, 0); n != 0 || err != nil {
		t.Errorf("empty write: %d %v", n, err)
	}
	// O_APPEND: GETATTR for the size, then the write there.
	ha := openNode(t, p, u, f, syscall.O_WRONLY|syscall.O_APPEND, 4)
	p.Expect(OpGetattr).Nodeid(5).Reply(attrOut(5, syscall.S_IFREG|0o644, 12345))
	p.Expect(OpWrite).Reply(fuse.WriteOut{Size: 3})
	if _, err := u.NodeWrite(testCtx(t), nil, ha, []byte("abc"), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	ga, _ := fakepeer.In[fuse.GetAttrIn](lastReq(t, p, OpGetattr))
	wa, _ := fakepeer.In[fuse.WriteIn](lastReq(t, p, OpWrite))
	if wa.Offset != 12345 || wa.Fh != 4 || ga.Fh_ != 4 || ga.Flags_ != fuse.FUSE_GETATTR_FH {
		t.Errorf("append: GETATTR %+v WRITE %+v", ga, wa)
	}
	if a, _ := f.Attr(); a.Size != 12348 {
		t.Errorf("cached size %d after append", a.Size)
	}
	dh := openNode(t, p, u, u.Root(), syscall.O_RDONLY, 8)
	if _, err := u.NodeWrite(testCtx(t), nil, dh, data, 0, 0, 0); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("write to a directory: %v", err)
	}
	if _, err := u.NodeWrite(testCtx(t), nil, h, data, -1, 0, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("negative offset: %v", err)
	}
	atUnmount(p)
}

func TestFlushFsyncFallocateENOSYS(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	ctx := testCtx(t)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	h := openNode(t, p, u, f, syscall.O_RDWR, 3)
	dh := openNode(t, p, u, u.Root(), syscall.O_RDONLY, 4)

	p.Expect(OpFsync).Nodeid(5)
	p.Expect(OpFsyncdir).Nodeid(1)
	if err := u.NodeFsync(ctx, caller, h, true); err != nil {
		t.Fatal(err)
	}
	if err := u.NodeFsync(ctx, caller, dh, false); err != nil {
		t.Fatal(err)
	}
	fs, _ := fakepeer.In[fuse.FsyncIn](lastReq(t, p, OpFsync))
	fd, _ := fakepeer.In[fuse.FsyncIn](lastReq(t, p, OpFsyncdir))
	if fs.Fh != 3 || fs.FsyncFlags != 1 || fd.Fh != 4 || fd.FsyncFlags != 0 {
		t.Errorf("FSYNC %+v FSYNCDIR %+v", fs, fd)
	}
	// ENOSYS is success and not asked again: FLUSH, FSYNC.
	p.Expect(OpFsync).ReplyErrno(syscall.ENOSYS)
	p.Expect(OpFlush).ReplyErrno(syscall.ENOSYS)
	for i := 0; i < 2; i++ {
		if err := u.NodeFsync(ctx, nil, h, false); err != nil {
			t.Errorf("fsync after ENOSYS: %v", err)
		}
		if err := u.NodeFlush(ctx, nil, h, 1); err != nil {
			t.Errorf("flush after ENOSYS: %v", err)
		}
	}
	if err := u.NodeFlush(ctx, nil, dh, 1); err != nil || count(p, OpFlush) != 1 {
		t.Errorf("flush of a directory: %v, %d FLUSH", err, count(p, OpFlush))
	}

	p.Expect(OpFallocate).Nodeid(5)
	if err := u.NodeFallocate(ctx, caller, h, 0, 4096, 1<<20); err != nil {
		t.Fatal(err)
	}
	if in, _ := fakepeer.In[fuse.FallocateIn](lastReq(t, p, OpFallocate)); in.Fh != 3 || in.Offset != 4096 || in.Length != 1<<20 || in.Mode != 0 {
		t.Errorf("FALLOCATE %+v", in)
	}
	p.Expect(OpFallocate).ReplyErrno(syscall.EOPNOTSUPP)
	if err := u.NodeFallocate(ctx, nil, h, 3, 0, 10); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("fallocate EOPNOTSUPP: %v", err)
	}
	p.Expect(OpFallocate).ReplyErrno(syscall.ENOSYS)
	for i := 0; i < 2; i++ {
		if err := u.NodeFallocate(ctx, nil, h, 0, 0, 10); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("fallocate after ENOSYS: %v", err)
		}
	}
	if count(p, OpFallocate) != 3 {
		t.Errorf("%d FALLOCATE sent, want 3", count(p, OpFallocate))
	}
	if err := u.NodeFallocate(ctx, nil, h, 0, 0, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("fallocate of 0 bytes: %v", err)
	}
	atUnmount(p)
}

func TestLseekCopyPoll(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	ctx := testCtx(t)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	g := lookupNode(t, p, u, "g", 6, syscall.S_IFREG|0o644)
	h := openNode(t, p, u, f, syscall.O_RDWR, 3)
	hg := openNode(t, p, u, g, syscall.O_RDWR, 4)

	p.Expect(OpLseek).Nodeid(5).Reply(fuse.LseekOut{Offset: 8192})
	if off, err := u.NodeLseek(ctx, caller, h, 100, SeekHole); err != nil || off != 8192 {
		t.Fatalf("SEEK_HOLE: %d %v", off, err)
	}
	if in, _ := fakepeer.In[fuse.LseekIn](lastReq(t, p, OpLseek)); in.Fh != 3 || in.Offset != 100 || in.Whence != SeekHole {
		t.Errorf("LSEEK %+v", in)
	}
	p.Expect(OpLseek).ReplyErrno(syscall.ENXIO)
	if _, err := u.NodeLseek(ctx, caller, h, 1<<30, SeekData); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA past the end: %v", err)
	}
	// ENOSYS: as the kernel, all data up to the size (GETATTR).
	p.Expect(OpLseek).ReplyErrno(syscall.ENOSYS)
	p.Expect(OpGetattr).Times(4).Reply(attrOut(5, syscall.S_IFREG|0o644, 1000))
	for _, c := range []struct {
		off    int64
		whence uint32
		want   int64
		err    error
	}{{10, SeekData, 10, nil}, {10, SeekHole, 1000, nil}, {1000, SeekData, 0, syscall.ENXIO}, {-5, SeekEnd, 995, nil}} {
		off, err := u.NodeLseek(ctx, nil, h, c.off, c.whence)
		if off != c.want || !errors.Is(err, c.err) && (err != nil || c.err != nil) {
			t.Errorf("lseek %d/%d: %d %v, want %d %v", c.off, c.whence, off, err, c.want, c.err)
		}
	}
	if off, err := u.NodeLseek(ctx, nil, h, 7, SeekSet); off != 7 || err != nil {
		t.Errorf("SEEK_SET: %d %v", off, err)
	}
	if _, err := u.NodeLseek(ctx, nil, h, 7, SeekCur); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("SEEK_CUR: %v", err)
	}
	if count(p, OpLseek) != 3 {
		t.Errorf("%d LSEEK sent, want 3", count(p, OpLseek))
	}

	p.Expect(OpCopyFileRange).Nodeid(5).Reply(fuse.WriteOut{Size: 500})
	if n, err := u.NodeCopyFileRange(ctx, caller, h, 10, hg, 20, 500, 0); n != 500 || err != nil {
		t.Fatalf("copy_file_range: %d %v", n, err)
	}
	if in, _ := fakepeer.In[fuse.CopyFileRangeIn](lastReq(t, p, OpCopyFileRange)); in.FhIn != 3 || in.OffIn != 10 || in.NodeIdOut != 6 || in.FhOut != 4 || in.OffOut != 20 || in.Len != 500 {
		t.Errorf("COPY_FILE_RANGE %+v", in)
	}
	p.Expect(OpCopyFileRange).Reply(fuse.WriteOut{Size: 501})
	if _, err := u.NodeCopyFileRange(ctx, caller, h, 0, hg, 0, 500, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("copy answered more than asked: %v", err)
	}
	p.Expect(OpCopyFileRange).ReplyErrno(syscall.ENOSYS)
	for i := 0; i < 2; i++ {
		if _, err := u.NodeCopyFileRange(ctx, caller, h, 0, hg, 0, 500, 0); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("copy after ENOSYS: %v", err)
		}
	}

	p.Expect(OpPoll).Nodeid(5).Reply(uint32(PollIn), uint32(0))
	if ev, err := u.NodePoll(ctx, caller, h, 77, PollScheduleNotify, PollIn|PollOut); ev != PollIn || err != nil {
		t.Fatalf("poll: %#x %v", ev, err)
	}
	r := lastReq(t, p, OpPoll)
	if fh, kh, fl, ev := nativeEndian.Uint64(r.Payload), nativeEndian.Uint64(r.Payload[8:]), nativeEndian.Uint32(r.Payload[16:]), nativeEndian.Uint32(r.Payload[20:]); fh != 3 || kh != 77 || fl != 1 || ev != PollIn|PollOut {
		t.Errorf("POLL fh %d kh %d flags %d events %#x", fh, kh, fl, ev)
	}
	p.Expect(OpPoll).ReplyErrno(syscall.ENOSYS)
	for i := 0; i < 2; i++ {
		if ev, err := u.NodePoll(ctx, caller, h, 0, 0, PollIn|PollOut|0x8); ev != PollIn|PollOut || err != nil {
			t.Errorf("poll after ENOSYS: %#x %v", ev, err)
		}
	}
	atUnmount(p)
}

func TestAdvlockFrames(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	ctx := testCtx(t)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	h := openNode(t, p, u, f, syscall.O_RDWR, 3)

	start, end, err := LockRange(100, 0)
	if err != nil || start != 100 || end != OffsetMax {
		t.Fatalf("LockRange(100, 0) = %d %d %v", start, end, err)
	}
	if s, e, _ := LockRange(100, 10); s != 100 || e != 109 {
		t.Errorf("LockRange(100, 10) = %d %d, want inclusive 100-109", s, e)
	}
	if s, e, _ := LockRange(100, -10); s != 90 || e != 99 {
		t.Errorf("LockRange(100, -10) = %d %d", s, e)
	}
	if _, _, err := LockRange(5, -10); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("LockRange(5, -10): %v", err)
	}
	lk := FileLock{Start: 0, End: 99, Typ: syscall.F_WRLCK, Pid: 42}
	for _, op := range []Opcode{OpSetlk, OpSetlkw} {
		p.Expect(op).Nodeid(5)
		if _, err := u.NodeAdvlock(ctx, caller, h, op, 0xabc, lk, 0); err != nil {
			t.Fatal(err)
		}
		in, _ := fakepeer.In[fuse.LkIn](lastReq(t, p, op))
		if in.Fh != 3 || in.Owner != 0xabc || FileLock(in.Lk) != lk || in.LkFlags != 0 {
			t.Errorf("%s %+v", op, in)
		}
	}
	conflict := FileLock{Start: 50, End: 60, Typ: syscall.F_RDLCK, Pid: 7}
	p.Expect(OpGetlk).Reply(fuse.LkOut{Lk: fuse.FileLock(conflict)})
	if got, err := u.NodeAdvlock(ctx, caller, h, OpGetlk, 1, lk, 0); err != nil || got != conflict {
		t.Errorf("GETLK: %+v %v", got, err)
	}
	p.Expect(OpGetlk).Reply(fuse.LkOut{Lk: fuse.FileLock{Start: 9, End: 1, Typ: syscall.F_WRLCK}})
	if _, err := u.NodeAdvlock(ctx, caller, h, OpGetlk, 1, lk, 0); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("GETLK with an inverted range: %v", err)
	}
	p.Expect(OpSetlk).ReplyErrno(syscall.EAGAIN)
	if _, err := u.NodeAdvlock(ctx, caller, h, OpSetlk, 2, lk, 0); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("conflicting SETLK: %v", err)
	}
	for _, bad := range []FileLock{{Start: 5, End: 4}, {Typ: 9, End: 1}} {
		if _, err := u.NodeAdvlock(ctx, caller, h, OpSetlk, 2, bad, 0); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("lock %+v: %v", bad, err)
		}
	}
	if _, err := u.NodeAdvlock(ctx, caller, h, OpRead, 2, lk, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("advlock op READ: %v", err)
	}
	// flock: LK_FLOCK on the whole file; RELEASE then unlocks it.
	p.Expect(OpSetlk).Match(func(_ *fuse.InHeader, b []byte) error {
		if nativeEndian.Uint32(b[40:]) != LkFlock {
			return fmt.Errorf("lk_flags %d", nativeEndian.Uint32(b[40:]))
		}
		return nil
	})
	if _, err := u.NodeAdvlock(ctx, caller, h, OpSetlk, 0xf11e, FileLock{End: OffsetMax, Typ: syscall.F_WRLCK}, LkFlock); err != nil {
		t.Fatal(err)
	}
	p.Expect(OpRelease).Nodeid(5)
	if err := u.NodeRelease(ctx, h); err != nil {
		t.Fatal(err)
	}
	if rel, _ := fakepeer.In[fuse.ReleaseIn](lastReq(t, p, OpRelease)); rel.ReleaseFlags != releaseFlockUnlock || rel.LockOwner != 0xf11e {
		t.Errorf("RELEASE after flock %+v", rel)
	}
	if _, err := u.NodeAdvlock(ctx, caller, h, OpSetlk, 1, lk, 0); !errors.Is(err, syscall.EBADF) {
		t.Errorf("lock on a released handle: %v", err)
	}
	// A daemon that did not take POSIX_LOCKS is not asked.
	p2, u2 := opSession(t, 128<<10, 0)
	f2 := lookupNode(t, p2, u2, "f", 5, syscall.S_IFREG|0o644)
	h2 := openNode(t, p2, u2, f2, syscall.O_RDWR, 3)
	if _, err := u2.NodeAdvlock(ctx, caller, h2, OpSetlk, 1, lk, 0); !errors.Is(err, syscall.ENOSYS) {
		t.Errorf("lock without POSIX_LOCKS: %v", err)
	}
	atUnmount(p)
	atUnmount(p2)
}

func TestXattrFrames(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	ctx := testCtx(t)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	// Size probe: getxattr_out; then the value.
	p.Expect(OpGetxattr).Nodeid(5).Name("user.k").Reply(fuse.GetXAttrOut{Size: 5})
	if v, n, err := u.NodeGetextattr(ctx, caller, f, "user.k", 0); v != nil || n != 5 || err != nil {
		t.Fatalf("probe: %q %d %v", v, n, err)
	}
	p.Expect(OpGetxattr).Name("user.k").Reply([]byte("value"))
	if v, n, err := u.NodeGetextattr(ctx, caller, f, "user.k", 100); string(v) != "value" || n != 5 || err != nil {
		t.Fatalf("get: %q %d %v", v, n, err)
	}
	r := lastReq(t, p, OpGetxattr)
	checkHeader(t, r, 5, caller)
	if nativeEndian.Uint32(r.Payload) != 100 || string(r.Payload[8:]) != "user.k\x00" {
		t.Errorf("GETXATTR payload %q", r.Payload)
	}
	p.Expect(OpGetxattr).ReplyErrno(syscall.ERANGE)
	if _, _, err := u.NodeGetextattr(ctx, caller, f, "user.k", 2); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("small buffer: %v", err)
	}
	p.Expect(OpGetxattr).Reply([]byte("too long"))
	if _, _, err := u.NodeGetextattr(ctx, caller, f, "user.k", 2); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("reply beyond the buffer: %v", err)
	}
	p.Expect(OpSetxattr).Nodeid(5)
	if err := u.NodeSetextattr(ctx, caller, f, "user.k", []byte("v\x00w"), xattrCreate); err != nil {
		t.Fatal(err)
	}
	r = lastReq(t, p, OpSetxattr)
	if nativeEndian.Uint32(r.Payload) != 3 || nativeEndian.Uint32(r.Payload[4:]) != xattrCreate || string(r.Payload[8:]) != "user.k\x00v\x00w" {
		t.Errorf("SETXATTR payload %q", r.Payload)
	}
	p.Expect(OpListxattr).Nodeid(5).Reply(fuse.GetXAttrOut{Size: 14})
	p.Expect(OpListxattr).Reply([]byte("user.a\x00user.b\x00"))
	if _, n, err := u.NodeListextattr(ctx, caller, f, 0); n != 14 || err != nil {
		t.Errorf("list probe: %d %v", n, err)
	}
	if l, _, err := u.NodeListextattr(ctx, caller, f, 14); string(l) != "user.a\x00user.b\x00" || err != nil {
		t.Errorf("list: %q %v", l, err)
	}
	for _, bad := range []string{"user.a", "user.a\x00\x00", "\x00"} {
		p.Expect(OpListxattr).Reply([]byte(bad))
		if _, _, err := u.NodeListextattr(ctx, caller, f, 100); !errors.Is(err, syscall.EPROTO) {
			t.Errorf("list %q: %v", bad, err)
		}
	}
	p.Expect(OpRemovexattr).Nodeid(5).Name("user.k")
	if err := u.NodeDeleteextattr(ctx, caller, f, "user.k"); err != nil {
		t.Fatal(err)
	}
	// Namespaces: trusted.* is root's; user.* only on files and directories.
	if err := u.NodeSetextattr(ctx, caller, f, "trusted.x", nil, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("trusted by a user: %v", err)
	}
	if _, _, err := u.NodeGetextattr(ctx, caller, f, "trusted.x", 0); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("get trusted by a user: %v", err)
	}
	sl := lookupNode(t, p, u, "sl", 6, syscall.S_IFLNK|0o777)
	if err := u.NodeSetextattr(ctx, nil, sl, "user.x", nil, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("user xattr on a symlink: %v", err)
	}
	for name, want := range map[string]error{"": syscall.ERANGE, strings.Repeat("u", 256): syscall.ERANGE, "a\x00": syscall.EINVAL} {
		if err := u.NodeSetextattr(ctx, nil, f, name, nil, 0); !errors.Is(err, want) {
			t.Errorf("xattr name %.10q: %v, want %v", name, err, want)
		}
	}
	if err := u.NodeSetextattr(ctx, nil, f, "user.k", make([]byte, 65537), 0); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("value of 64 KiB + 1: %v", err)
	}
	if err := u.NodeSetextattr(ctx, nil, f, "user.k", nil, 4); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("setxattr flags 4: %v", err)
	}
	// ENOSYS: EOPNOTSUPP, remembered.
	p.Expect(OpSetxattr).ReplyErrno(syscall.ENOSYS)
	for i := 0; i < 2; i++ {
		if err := u.NodeSetextattr(ctx, nil, f, "user.k", nil, 0); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("setxattr after ENOSYS: %v", err)
		}
	}
	atUnmount(p)
}

// A request larger than the daemon's max_write is E2BIG before the wire.
func TestPayloadOverMaximum(t *testing.T) {
	p, u := opSession(t, 4096, opCaps)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	if err := u.NodeSetextattr(testCtx(t), nil, f, "user.k", make([]byte, 8000), 0); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("setxattr over max_write: %v", err)
	}
	if err := u.NotifyReply(testCtx(t), 10, f, 0, make([]byte, 4097)); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("notify reply over max_write: %v", err)
	}
	if len(p.Received()) != 2 {
		t.Errorf("%d requests sent", len(p.Received()))
	}
	atUnmount(p)
}

func TestNotifyReplyFrame(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	got := p.Expect(OpNotifyReply).Nodeid(5).NoReply()
	if err := u.NotifyReply(testCtx(t), 12345, f, 4096, []byte("cached")); err != nil {
		t.Fatal(err)
	}
	<-got.Done()
	r := lastReq(t, p, OpNotifyReply)
	in, _ := fakepeer.In[fuse.NotifyRetrieveIn](r)
	if r.Header.Unique != 12345 || in.Offset != 4096 || in.Size != 6 || string(r.Payload[40:]) != "cached" {
		t.Errorf("NOTIFY_REPLY unique %d %+v %q", r.Header.Unique, in, r.Payload[40:])
	}
	atUnmount(p)
}

// READDIRPLUS: "." and ".." count nothing; the entries fn takes keep
// their lookup; the one it refuses and the rest of the reply are
// forgotten again in one BATCH_FORGET.
func TestReaddirplusCounts(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	dh := openNode(t, p, u, u.Root(), syscall.O_RDONLY, 3)
	reply := concat(direntPlus(1, 1, 1, 4, "."), direntPlus(1, 1, 2, 4, ".."), direntPlus(10, 100, 3, 8, "a"),
		direntPlus(0, 101, 4, 8, "nolookup"), direntPlus(11, 102, 5, 8, "b"), direntPlus(12, 103, 6, 4, "c"))
	p.Expect(OpReaddirplus).Nodeid(1).Reply(reply)
	batch := p.Expect(OpBatchForget).Match(func(h *fuse.InHeader, b []byte) error {
		if n := nativeEndian.Uint32(b); n != 2 || nativeEndian.Uint64(b[8:]) != 11 || nativeEndian.Uint64(b[16:]) != 1 ||
			nativeEndian.Uint64(b[24:]) != 12 || nativeEndian.Uint64(b[32:]) != 1 {
			return fmt.Errorf("batch %x", b)
		}
		return nil
	})
	var names []string
	var a *Node
	err := u.NodeReaddirplus(testCtx(t), caller, dh, 0, func(d DirentPlus) bool {
		if d.Name == "b" {
			return false
		}
		names = append(names, d.Name)
		if d.Name == "a" {
			a = d.Node
		}
		if (d.Name == "." || d.Name == ".." || d.Name == "nolookup") && d.Node != nil {
			t.Errorf("%s carries a node", d.Name)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	<-batch.Done()
	if fmt.Sprint(names) != "[. .. a nolookup]" || a == nil || u.Lookups(a) != 1 || u.NodeByID(11) != nil || u.NodeCount() != 2 {
		t.Errorf("names %v, a %v, nodes %d", names, a, u.NodeCount())
	}
	if in, _ := fakepeer.In[fuse.ReadIn](lastReq(t, p, OpReaddirplus)); in.Fh != 3 || in.Offset != 0 {
		t.Errorf("READDIRPLUS %+v", in)
	}
	// Resuming from the last entry taken reads on from its cookie.
	p.Expect(OpReaddirplus).Match(func(_ *fuse.InHeader, b []byte) error {
		if off := nativeEndian.Uint64(b[8:]); off != 4 {
			return fmt.Errorf("offset %d", off)
		}
		return nil
	}).Reply(direntPlus(11, 102, 5, 8, "b"))
	p.Expect(OpReaddirplus).Reply()
	if err := u.NodeReaddirplus(testCtx(t), caller, dh, 4, func(d DirentPlus) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if n := u.NodeByID(11); n == nil || u.Lookups(n) != 1 {
		t.Errorf("b not held after being taken")
	}
	// Without READDIRPLUS in INIT it is not asked.
	p2, u2 := opSession(t, 128<<10, 0)
	dh2 := openNode(t, p2, u2, u2.Root(), syscall.O_RDONLY, 3)
	if err := u2.NodeReaddirplus(testCtx(t), nil, dh2, 0, func(DirentPlus) bool { return true }); !errors.Is(err, syscall.ENOSYS) {
		t.Errorf("readdirplus not negotiated: %v", err)
	}
	atUnmount(p)
	atUnmount(p2)
}

// pyfuse3 answers READDIR with ENOSYS once it has READDIRPLUS: NodeReaddir
// reads with READDIRPLUS from then on and gives every lookup back.
func TestReaddirFallsBackToReaddirplus(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	dh := openNode(t, p, u, u.Root(), syscall.O_RDONLY, 3)
	p.Expect(OpReaddir).ReplyErrno(syscall.ENOSYS)
	plus := concat(direntPlus(0, 1, 1, 4, "."), direntPlus(10, 100, 2, 8, "a"), direntPlus(11, 101, 3, 8, "b"))
	p.Expect(OpReaddirplus).Times(2).ReplyFunc(func(r fakepeer.Request) [][]byte {
		if in, _ := fakepeer.In[fuse.ReadIn](r); in.Offset != 0 {
			return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0)}
		}
		return [][]byte{fakepeer.ReplyFrame(r.Header.Unique, 0, plus)}
	})
	batch := p.Expect(OpBatchForget).Match(func(h *fuse.InHeader, b []byte) error {
		if nativeEndian.Uint32(b) != 2 {
			return fmt.Errorf("count %d", nativeEndian.Uint32(b))
		}
		return nil
	})
	var names []string
	if err := u.NodeReaddir(testCtx(t), nil, dh, 0, func(d Dirent) bool { names = append(names, d.Name); return true }); err != nil {
		t.Fatal(err)
	}
	<-batch.Done()
	// Remembered: straight to READDIRPLUS; the refusal gives back all.
	p.Expect(OpReaddirplus).Reply(plus)
	batch2 := p.Expect(OpBatchForget)
	if err := u.NodeReaddir(testCtx(t), nil, dh, 0, func(d Dirent) bool { return d.Name == "." }); err != nil {
		t.Fatal(err)
	}
	<-batch2.Done()
	if fmt.Sprint(names) != "[. a b]" || count(p, OpReaddir) != 1 || u.NodeCount() != 1 {
		t.Errorf("names %v, %d READDIR, %d nodes", names, count(p, OpReaddir), u.NodeCount())
	}
	atUnmount(p)
}

// Unmount releases the opens left and gives back every lookup held, then
// DESTROY; without force, open handles are EBUSY.
func TestUnmountBalances(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	h := openNode(t, p, u, f, syscall.O_RDONLY, 0)
	if err := u.FsUnmountForce(testCtx(t), false); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("unmount with an open: %v, want EBUSY", err)
	}
	p.Expect(OpRelease).Nodeid(5)
	forget := p.Expect(OpForget).Nodeid(5).Match(func(_ *fuse.InHeader, b []byte) error {
		if n := nativeEndian.Uint64(b); n != 2 {
			return fmt.Errorf("nlookup %d", n)
		}
		return nil
	})
	if err := u.Unmount(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	<-forget.Done()
	if u.NodeRelease(testCtx(t), h) == nil || u.NodeCount() != 1 {
		t.Errorf("handle still open, or %d nodes", u.NodeCount())
	}
	rs := p.Received()
	var ops []string
	for _, r := range rs[len(rs)-3:] {
		ops = append(ops, Opcode(r.Header.Opcode).String())
	}
	if !slices.Equal(ops, []string{"RELEASE", "FORGET", "DESTROY"}) {
		t.Errorf("unmount sent %v", ops)
	}
}

func TestPathconfPrintInactive(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	ctx := testCtx(t)
	p.Expect(OpStatfs).Nodeid(1).Reply(fuse.StatfsOut{NameLen: 143})
	if v, err := u.NodePathconf(ctx, nil, u.Root(), PcNameMax); v != 143 || err != nil {
		t.Errorf("NAME_MAX: %d %v", v, err)
	}
	if v, err := u.NodePathconf(ctx, nil, u.Root(), PcPathMax); v != 4096 || err != nil {
		t.Errorf("PATH_MAX: %d %v", v, err)
	}
	if _, err := u.NodePathconf(ctx, nil, u.Root(), 999); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("unknown name: %v", err)
	}
	f := lookupNode(t, p, u, "f", 5, syscall.S_IFREG|0o644)
	if err := u.NodePrint(f); err != nil {
		t.Error(err)
	}
	openNode(t, p, u, f, syscall.O_RDONLY, 1)
	openNode(t, p, u, f, syscall.O_RDONLY, 2)
	p.Expect(OpRelease).Nodeid(5).Times(2)
	if err := u.NodeInactive(ctx, f); err != nil || u.OpenHandles() != 0 {
		t.Errorf("inactive: %v, %d opens left", err, u.OpenHandles())
	}
	if err := u.FsSync(ctx, nil); err != nil {
		t.Error(err)
	}
	atUnmount(p)
}

// A released handle is refused before the wire: its fh may already name
// another open in the daemon.
func TestReleasedHandleRefused(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	p.Expect(OpLookup).Name("f").Reply(entryOut(5, syscall.S_IFREG|0o644))
	p.Expect(OpOpen).Reply(fuse.OpenOut{Fh: 1})
	p.Expect(OpRelease)
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	h, err := u.NodeOpen(testCtx(t), nil, e.Node, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.NodeRelease(testCtx(t), h); err != nil {
		t.Fatal(err)
	}
	if _, err := u.NodeRead(testCtx(t), nil, h, make([]byte, 10), 0); !errors.Is(err, syscall.EBADF) {
		t.Errorf("read through a released handle: %v, want EBADF", err)
	}
	if _, err := u.NodeGetattr(testCtx(t), nil, e.Node, h); !errors.Is(err, syscall.EBADF) {
		t.Errorf("getattr through a released handle: %v, want EBADF", err)
	}
	if _, err := u.NodeRead(testCtx(t), nil, nil, make([]byte, 10), 0); !errors.Is(err, syscall.EBADF) {
		t.Errorf("read through nil: %v, want EBADF", err)
	}
	atUnmount(p)
}

// Without ATOMIC_O_TRUNC, O_TRUNC is not sent with OPEN; a SETATTR of size
// 0 on the new handle truncates, as the kernel's VFS does.
func TestOpenTruncWithoutAtomicOTrunc(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps&^CapAtomicOTrunc)
	p.Expect(OpLookup).Name("f").Reply(entryOut(5, syscall.S_IFREG|0o644))
	p.Expect(OpOpen).Match(func(h *fuse.InHeader, payload []byte) error {
		if f := nativeEndian.Uint32(payload); f&syscall.O_TRUNC != 0 {
			return fmt.Errorf("O_TRUNC sent: %#o", f)
		}
		return nil
	}).Reply(fuse.OpenOut{Fh: 4})
	p.Expect(OpSetattr).Match(func(h *fuse.InHeader, payload []byte) error {
		var in fuse.SetAttrIn
		copy(structBytes(&in)[inHeaderSize:], payload)
		if in.Valid != FattrSize|FattrFh || in.Size != 0 || in.Fh != 4 {
			return fmt.Errorf("SETATTR %+v", in.SetAttrInCommon)
		}
		return nil
	}).Reply(attrOut(5, syscall.S_IFREG|0o644, 0))
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.NodeOpen(testCtx(t), nil, e.Node, syscall.O_WRONLY|syscall.O_TRUNC); err != nil {
		t.Fatal(err)
	}
	atUnmount(p)
}

// A nodeid seen again is the same node, renamed after its last name except
// through ".."; the entry's TTLs reach the caller as the daemon sent them.
func TestLookupReusesNodesAndKeepsTTLs(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	e := entryOut(6, syscall.S_IFDIR|0o755)
	e.EntryValid, e.EntryValidNsec, e.AttrValid, e.AttrValidNsec = 3, 500, 7, 9
	p.Expect(OpLookup).Name("a").Reply(e)
	p.Expect(OpLookup).Name("b").Reply(e)
	p.Expect(OpLookup).Name("..").Reply(e)
	ea, err := u.NodeLookup(testCtx(t), nil, u.Root(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if ea.EntryTimeout() != 3*time.Second+500 || ea.AttrTimeout() != 7*time.Second+9 {
		t.Errorf("TTLs %v %v", ea.EntryTimeout(), ea.AttrTimeout())
	}
	eb, _ := u.NodeLookup(testCtx(t), nil, u.Root(), "b")
	if eb.Node != ea.Node || ea.Node.Name() != "b" {
		t.Errorf("same nodeid gave another node (%v) or kept the old name %q", eb.Node != ea.Node, ea.Node.Name())
	}
	u.NodeLookup(testCtx(t), nil, ea.Node, "..")
	if ea.Node.Name() != "b" || u.Lookups(ea.Node) != 3 {
		t.Errorf("after '..': name %q, %d lookups", ea.Node.Name(), u.Lookups(ea.Node))
	}
	atUnmount(p)
}

// A negative entry is ENOENT that keeps the daemon's timeout.
func TestNegativeEntryKeepsTimeout(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	neg := fuse.EntryOut{EntryValid: 4}
	p.Expect(OpLookup).Name("nope").Reply(neg)
	_, err := u.NodeLookup(testCtx(t), nil, u.Root(), "nope")
	var ne *NegativeEntry
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &ne) || ne.EntryTimeout() != 4*time.Second {
		t.Fatalf("negative entry: %v", err)
	}
	atUnmount(p)
}

// With SetKernelWrites an O_APPEND handle writes where it is told: the
// kernel has already put the offset at the end of file.
func TestKernelWritesSkipAppendGetattr(t *testing.T) {
	p, u := opSession(t, 128<<10, opCaps)
	u.SetKernelWrites(true)
	p.Expect(OpLookup).Name("f").Reply(entryOut(5, syscall.S_IFREG|0o644))
	p.Expect(OpOpen).Reply(fuse.OpenOut{Fh: 2})
	p.Expect(OpWrite).Match(func(h *fuse.InHeader, payload []byte) error {
		if off := nativeEndian.Uint64(payload[8:]); off != 77 {
			return fmt.Errorf("offset %d, want 77", off)
		}
		return nil
	}).Reply(fuse.WriteOut{Size: 3})
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "f")
	if err != nil {
		t.Fatal(err)
	}
	h, err := u.NodeOpen(testCtx(t), nil, e.Node, syscall.O_WRONLY|syscall.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := u.NodeWrite(testCtx(t), nil, h, []byte("abc"), 77, 0, 0); n != 3 || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	atUnmount(p)
}
