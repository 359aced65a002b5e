package perfuse

import (
	"context"
	"errors"
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
	EntryOut
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
	// flockOwner is the owner of the last flock(2) taken through this
	// open; RELEASE then asks the daemon to drop it (FLOCK_UNLOCK).
	flockOwner atomic.Uint64
}

// releaseFlags are RELEASE's release_flags: FLOCK_UNLOCK when a flock
// was taken through this open, as the kernel sends.
func (h *Handle) releaseFlags() uint32 {
	if h.flockOwner.Load() != 0 {
		return releaseFlockUnlock
	}
	return 0
}

// releaseFlockUnlock is the kernel's FUSE_RELEASE_FLOCK_UNLOCK, which
// go-fuse does not export.
const releaseFlockUnlock = 1 << 1

// IsDir reports whether the handle opens a directory (OPENDIR).
func (h *Handle) IsDir() bool { return h.dir }

// Flags returns the open(2) flags sent with the open.
func (h *Handle) Flags() uint32 { return h.flags }

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

// checkNewName refuses, as the kernel's VFS does, a name that cannot be
// created: "." and ".." exist already.
func checkNewName(name string) error {
	if name == "." || name == ".." {
		return fmt.Errorf("perfuse: create %q: %w", name, syscall.EEXIST)
	}
	return checkName(name)
}

// isENOSYS reports a daemon's "not implemented".
func isENOSYS(err error) bool { return errors.Is(err, syscall.ENOSYS) }

// noLonger remembers that the daemon does not implement op.
func (u *Usermount) noLonger(op Opcode) {
	if !u.unsupported[op].Swap(true) {
		u.debug(DiagMisc, "perfuse: daemon lacks "+op.String()+", not sent again")
	}
}

// NodeLookup looks name up in dir (FUSE_LOOKUP). The entry counts as one
// lookup on its node, returned by NodeReclaim. ".." of the root is the
// root, answered from a GETATTR (the root's lookups are not counted).
func (u *Usermount) NodeLookup(ctx context.Context, cred *Cred, dir *Node, name string) (*Entry, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if name == ".." && dir == u.root {
		// The root's parent is the root. The kernel resolves that itself
		// and never asks, and libfuse daemons (squashfuse, sshfs) die on
		// the request.
		a, err := u.NodeGetattr(ctx, cred, dir, nil)
		if err != nil {
			return nil, err
		}
		return &Entry{Node: dir, EntryOut: EntryOut{NodeId: RootID, AttrValid: a.AttrValid, AttrValidNsec: a.AttrValidNsec, Attr: a.Attr}}, nil
	}
	out, err := roundTrip[EntryOut](ctx, u, request{op: OpLookup, node: dir, cred: cred, names: []string{name}})
	if err != nil {
		return nil, err
	}
	return u.entry(out, name)
}

// entry counts the lookup of an entry reply. Nodeid 0 is a negative
// entry: ENOENT.
func (u *Usermount) entry(out *EntryOut, name string) (*Entry, error) {
	if out.NodeId == 0 {
		return nil, &NegativeEntry{EntryOut: *out}
	}
	return &Entry{Node: u.lookedUp(out, name), EntryOut: *out}, nil
}

// NegativeEntry is the error for a lookup the daemon answered with nodeid
// 0: the name does not exist (it unwraps to ENOENT), and EntryOut's entry
// timeout says how long a kernel may cache that answer.
type NegativeEntry struct {
	EntryOut
}

func (e *NegativeEntry) Error() string {
	return fmt.Sprintf("perfuse: negative entry (valid %v): %v", e.EntryTimeout(), syscall.ENOENT)
}

func (e *NegativeEntry) Unwrap() error { return syscall.ENOENT }

// openStrip are the flags the kernel never passes to a daemon's OPEN.
const openStrip = syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOCTTY

// NodeOpen opens n (FUSE_OPENDIR for a directory, FUSE_OPEN otherwise)
// with open(2) flags. The handle must be released with NodeRelease.
func (u *Usermount) NodeOpen(ctx context.Context, cred *Cred, n *Node, flags int) (*Handle, error) {
	op := OpOpen
	if n.IsDir() {
		op = OpOpendir
	}
	// Without ATOMIC_O_TRUNC the daemon is not asked to truncate on open:
	// a SETATTR does it after, as the kernel's VFS does.
	truncate := flags&syscall.O_TRUNC != 0 && op == OpOpen && u.limits().flags&CapAtomicOTrunc == 0
	if truncate {
		flags &^= syscall.O_TRUNC
	}
	f := uint32(flags &^ openStrip)
	out, err := roundTrip[fuse.OpenOut](ctx, u, request{op: op, node: n, cred: cred, in: fixed(op, &fuse.OpenIn{Flags: f})})
	if err != nil {
		return nil, err
	}
	h := u.opened(&Handle{node: n, fh: out.Fh, dir: op == OpOpendir, flags: f, openFlags: out.OpenFlags})
	u.debug(DiagFH, "perfuse: opened", "nodeid", n.id, "fh", h.fh, "dir", h.dir)
	if truncate {
		in := SetAttrIn{Valid: FattrSize}
		if _, err := u.NodeSetattr(ctx, cred, n, h, &in); err != nil {
			u.NodeRelease(context.WithoutCancel(ctx), h)
			return nil, err
		}
	}
	return h, nil
}

// NodeRelease releases an open (FUSE_RELEASE or FUSE_RELEASEDIR). A second
// release of the same handle is EBADF and sends nothing.
func (u *Usermount) NodeRelease(ctx context.Context, h *Handle) error {
	if h == nil || !h.released.CompareAndSwap(false, true) {
		return fmt.Errorf("perfuse: release: %w", syscall.EBADF)
	}
	u.closed(h)
	err := u.sendRelease(ctx, h)
	if count := u.takeDeferred(h.node); count > 0 {
		u.debug(DiagReclaim, "perfuse: forget after the last release", "nodeid", h.node.id, "nlookup", count)
		err = errors.Join(err, u.sendForgets(ctx, []forgetOne{{node: h.node, nodeid: h.node.id, nlookup: count}}))
	}
	return err
}

func (u *Usermount) sendRelease(ctx context.Context, h *Handle) error {
	op := OpRelease
	if h.dir {
		op = OpReleasedir
	}
	in := fuse.ReleaseIn{Fh: h.fh, Flags: h.flags, ReleaseFlags: h.releaseFlags(), LockOwner: h.flockOwner.Load()}
	u.debug(DiagFH, "perfuse: release", "nodeid", h.node.id, "fh", h.fh)
	return u.do(ctx, request{op: op, node: h.node, in: fixed(op, &in)}, nil)
}

// NodeReclaim returns count lookups of n to the daemon (FUSE_FORGET, which
// has no reply). Counts beyond those held are ignored; the root is never
// forgotten. While n is open the FORGET waits for its last release, as
// the kernel never forgets an open node.
func (u *Usermount) NodeReclaim(ctx context.Context, n *Node, count uint64) error {
	count = u.forgotten(n, count)
	if count == 0 {
		return nil
	}
	if u.deferForget(n, count) {
		u.debug(DiagReclaim, "perfuse: forget deferred: node open", "nodeid", n.id, "nlookup", count)
		return nil
	}
	u.debug(DiagReclaim, "perfuse: forget", "nodeid", n.id, "nlookup", count)
	// The count is already taken off: the FORGET must go whatever ctx says.
	return u.do(context.WithoutCancel(ctx), request{op: OpForget, node: n, in: fixed(OpForget, &fuse.ForgetIn{Nlookup: count})}, nil)
}

// batchForgetMax bounds one BATCH_FORGET so that its frame fits any
// daemon's read buffer (libfuse's is at least 8 KiB).
const batchForgetMax = 256

// sendForgets returns lookups to the daemon: one FORGET for a single
// node or a daemon older than 7.16, BATCH_FORGET otherwise, as the kernel
// does. Neither has a reply, and neither is interrupted: a lost FORGET
// leaks the daemon's node.
func (u *Usermount) sendForgets(ctx context.Context, fs []forgetOne) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	if len(fs) == 1 || u.limits().minor < 16 {
		for _, f := range fs {
			n := f.node
			if n == nil {
				n = &Node{id: f.nodeid} // a node the session no longer holds
			}
			u.debug(DiagReclaim, "perfuse: forget", "nodeid", f.nodeid, "nlookup", f.nlookup)
			errs = append(errs, u.do(ctx, request{op: OpForget, node: n, in: fixed(OpForget, &fuse.ForgetIn{Nlookup: f.nlookup})}, nil))
		}
		return errors.Join(errs...)
	}
	for len(fs) > 0 {
		chunk := fs[:min(len(fs), batchForgetMax)]
		fs = fs[len(chunk):]
		b := make([]byte, 8+16*len(chunk))
		nativeEndian.PutUint32(b, uint32(len(chunk)))
		for i, f := range chunk {
			nativeEndian.PutUint64(b[8+16*i:], f.nodeid)
			nativeEndian.PutUint64(b[16+16*i:], f.nlookup)
		}
		u.debug(DiagReclaim, "perfuse: batch forget", "nodes", len(chunk))
		errs = append(errs, u.do(ctx, request{op: OpBatchForget, in: b}, nil))
	}
	return errors.Join(errs...)
}

// Lookups returns how many lookups of n the session holds.
func (u *Usermount) Lookups(n *Node) uint64 {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	return n.nlookup
}
