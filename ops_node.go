package perfuse

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// nameMax is the longest name a request may carry (NAME_MAX).
const nameMax = 255

// Entry is a daemon's answer to a request that names a node: the node,
// counted as one lookup, and the entry as the daemon sent it (nodeid,
// generation, timeouts, attributes).
type Entry struct {
	Node *Node
	fuse.EntryOut
}

// Handle is one open of a node: the daemon's file handle and the flags it
// was opened with. Each is released exactly once (NodeRelease).
type Handle struct {
	node      *Node
	fh        uint64
	dir       bool
	flags     uint32
	openFlags uint32 // FOPEN_* from the daemon
	released  atomic.Bool
}

// Node returns the node this handle opens.
func (h *Handle) Node() *Node { return h.node }

// Fh returns the daemon's file handle (0 is a valid handle).
func (h *Handle) Fh() uint64 { return h.fh }

// OpenFlags returns the FOPEN_* flags the daemon answered with.
func (h *Handle) OpenFlags() uint32 { return h.openFlags }

// checkName refuses, before the wire, a name no daemon should see.
func checkName(name string) error {
	switch {
	case name == "" || strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("perfuse: bad name %q: %w", name, syscall.EINVAL)
	case len(name) > nameMax:
		return fmt.Errorf("perfuse: name of %d bytes: %w", len(name), syscall.ENAMETOOLONG)
	}
	return nil
}

// putName writes name and its NUL into the payload at off.
func putName(m *Message, off int, name string) {
	copy(m.InPayload()[off:], name)
}

// NodeLookup looks name up in dir (FUSE_LOOKUP). The entry counts as one
// lookup on its node, returned by NodeReclaim.
func (u *Usermount) NodeLookup(ctx context.Context, cred *Cred, dir *Node, name string) (*Entry, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m := u.newMsg(OpLookup, dir, len(name)+1, cred)
	defer u.destroy(m)
	putName(m, 0, name)
	if err := u.xchg(ctx, dir, m, WaitReply); err != nil {
		return nil, err
	}
	return u.entry(OpLookup, m, name)
}

// entry decodes an entry reply and counts the lookup. Nodeid 0 is a
// negative entry: ENOENT.
func (u *Usermount) entry(op Opcode, m *Message, name string) (*Entry, error) {
	out, err := decodeExact[fuse.EntryOut](op, m.OutPayload())
	if err != nil {
		return nil, err
	}
	if out.NodeId == 0 {
		return nil, syscall.ENOENT
	}
	return &Entry{Node: u.lookedUp(out, name), EntryOut: *out}, nil
}

// NodeGetattr fetches n's attributes (FUSE_GETATTR), with h's file handle
// when the node is open as a file.
func (u *Usermount) NodeGetattr(ctx context.Context, cred *Cred, n *Node, h *Handle) (*fuse.AttrOut, error) {
	m := u.newMsg(OpGetattr, n, opTable[OpGetattr].inSize, cred)
	defer u.destroy(m)
	in := fuse.GetAttrIn{}
	if h != nil && !h.dir {
		in.Flags_, in.Fh_ = fuse.FUSE_GETATTR_FH, h.fh
	}
	putIn(m, &in)
	if err := u.xchg(ctx, n, m, WaitReply); err != nil {
		return nil, err
	}
	out, err := decodeExact[fuse.AttrOut](OpGetattr, m.OutPayload())
	if err != nil {
		return nil, err
	}
	n.setAttr(&out.Attr)
	return out, nil
}

// openStrip are the flags the kernel never passes to a daemon's OPEN.
const openStrip = syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOCTTY

// NodeOpen opens n (FUSE_OPENDIR for a directory, FUSE_OPEN otherwise)
// with open(2) flags. The handle must be released with NodeRelease.
func (u *Usermount) NodeOpen(ctx context.Context, cred *Cred, n *Node, flags int) (*Handle, error) {
	op := OpOpen
	if n.IsDir() {
		op = OpOpendir
	}
	m := u.newMsg(op, n, opTable[op].inSize, cred)
	defer u.destroy(m)
	f := uint32(flags &^ openStrip)
	putIn(m, &fuse.OpenIn{Flags: f})
	if err := u.xchg(ctx, n, m, WaitReply); err != nil {
		return nil, err
	}
	out, err := decodeExact[fuse.OpenOut](op, m.OutPayload())
	if err != nil {
		return nil, err
	}
	h := &Handle{node: n, fh: out.Fh, dir: op == OpOpendir, flags: f, openFlags: out.OpenFlags}
	u.debug(DiagFH, "perfuse: opened", "nodeid", n.id, "fh", h.fh, "dir", h.dir)
	return h, nil
}

// NodeRelease releases an open (FUSE_RELEASE or FUSE_RELEASEDIR). A second
// release of the same handle is EBADF and sends nothing.
func (u *Usermount) NodeRelease(ctx context.Context, h *Handle) error {
	if h == nil || !h.released.CompareAndSwap(false, true) {
		return fmt.Errorf("perfuse: release: %w", syscall.EBADF)
	}
	op := OpRelease
	if h.dir {
		op = OpReleasedir
	}
	m := u.newMsg(op, h.node, opTable[op].inSize, nil)
	defer u.destroy(m)
	putIn(m, &fuse.ReleaseIn{Fh: h.fh, Flags: h.flags})
	u.debug(DiagFH, "perfuse: release", "nodeid", h.node.id, "fh", h.fh)
	return u.xchg(ctx, h.node, m, WaitReply)
}

// NodeRead reads into p from offset off of the open file h (FUSE_READ),
// in requests of at most the negotiated read size. It stops at the first
// short reply (end of file) and returns the bytes read.
func (u *Usermount) NodeRead(ctx context.Context, cred *Cred, h *Handle, p []byte, off int64) (int, error) {
	if h.dir {
		return 0, syscall.EISDIR
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	done := 0
	for done < len(p) {
		size := min(len(p)-done, u.limits().maxRead)
		n, err := u.readChunk(ctx, cred, h, p[done:done+size], off+int64(done))
		done += n
		if err != nil {
			return done, err
		}
		if n < size {
			break
		}
	}
	return done, nil
}

func (u *Usermount) readChunk(ctx context.Context, cred *Cred, h *Handle, p []byte, off int64) (int, error) {
	m := u.newMsg(OpRead, h.node, opTable[OpRead].inSize, cred)
	defer u.destroy(m)
	putIn(m, &fuse.ReadIn{Fh: h.fh, Offset: uint64(off), Size: uint32(len(p)), Flags: h.flags})
	if err := u.xchg(ctx, h.node, m, WaitReply); err != nil {
		return 0, err
	}
	data := m.OutPayload()
	if len(data) > len(p) {
		return 0, errProto(OpRead, "%d bytes for a read of %d", len(data), len(p))
	}
	return copy(p, data), nil
}

// readdirSize is the most a READDIR asks for at once.
const readdirSize = 32 * pageSize

// NodeReaddir reads the open directory h from cookie off (0: the start),
// calling fn for each entry until fn returns false or the directory ends.
// To resume later, pass the Off of the last entry fn accepted: entries are
// streamed, never gathered in memory.
func (u *Usermount) NodeReaddir(ctx context.Context, cred *Cred, h *Handle, off uint64, fn func(Dirent) bool) error {
	if !h.dir {
		return syscall.ENOTDIR
	}
	for {
		size := min(u.limits().maxRead, readdirSize)
		m := u.newMsg(OpReaddir, h.node, opTable[OpReaddir].inSize, cred)
		putIn(m, &fuse.ReadIn{Fh: h.fh, Offset: off, Size: uint32(size), Flags: h.flags})
		err := u.xchg(ctx, h.node, m, WaitReply)
		if err != nil {
			u.destroy(m)
			return err
		}
		data := m.OutPayload()
		if len(data) > size {
			u.destroy(m)
			return errProto(OpReaddir, "%d bytes for a read of %d", len(data), size)
		}
		if len(data) == 0 {
			u.destroy(m)
			return nil
		}
		stopped, n, last := false, 0, off
		perr := ParseDirents(data, func(d Dirent) bool {
			n++
			last = d.Off
			if !fn(d) {
				stopped = true
				return false
			}
			return true
		})
		u.destroy(m)
		switch {
		case perr != nil:
			return perr
		case stopped:
			return nil
		case n == 0 || last == off:
			// No whole record, or a cookie that does not move: reading
			// on would loop forever.
			return errProto(OpReaddir, "no progress from offset %d", off)
		}
		off = last
	}
}

// NodeReclaim returns count lookups of n to the daemon (FUSE_FORGET, which
// has no reply). Counts beyond those held are ignored; the root is never
// forgotten.
func (u *Usermount) NodeReclaim(ctx context.Context, n *Node, count uint64) error {
	count = u.forgotten(n, count)
	if count == 0 {
		return nil
	}
	m := u.newMsg(OpForget, n, opTable[OpForget].inSize, nil)
	defer u.destroy(m)
	putIn(m, &fuse.ForgetIn{Nlookup: count})
	u.debug(DiagReclaim, "perfuse: forget", "nodeid", n.id, "nlookup", count)
	return u.xchg(ctx, n, m, NoReply)
}

// Lookups returns how many lookups of n the session holds.
func (u *Usermount) Lookups(n *Node) uint64 {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	return n.nlookup
}
