package perfuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Namespace operations: each creates, links or removes a name in a
// directory. The entries they return count one lookup each, as LOOKUP's
// do (NodeReclaim returns them).

// pathMax bounds a symlink target, as the kernel does (PATH_MAX with its
// NUL).
const pathMax = 4096

// masked applies umask unless the daemon took DONT_MASK, in which case it
// applies it (or a default ACL) itself, as the kernel leaves it to do.
func (u *Usermount) masked(mode, umask uint32) uint32 {
	if u.limits().flags&CapDontMask != 0 {
		return mode
	}
	return mode &^ (umask & 0o777)
}

// NodeCreate creates and opens the regular file name in dir
// (FUSE_CREATE) with open(2) flags, permission bits mode and the caller's
// umask. When the daemon answers ENOSYS, or with disable_creat, it is
// done as MKNOD and OPEN instead, as the kernel does; the ENOSYS is
// remembered for the session. The entry counts one lookup and the handle
// must be released.
func (u *Usermount) NodeCreate(ctx context.Context, cred *Cred, dir *Node, name string, flags int, mode, umask uint32) (*Entry, *Handle, error) {
	if err := checkNewName(name); err != nil {
		return nil, nil, err
	}
	if t := mode & syscall.S_IFMT; t != 0 && t != syscall.S_IFREG {
		return nil, nil, fmt.Errorf("perfuse: create of type %#o: %w", t, syscall.EINVAL)
	}
	mode = syscall.S_IFREG | mode&0o7777
	if !u.noCreat.Load() {
		e, h, err := u.create(ctx, cred, dir, name, flags, mode, umask)
		if !isENOSYS(err) {
			return e, h, err
		}
		u.noCreat.Store(true)
		u.debug(DiagMisc, "perfuse: daemon lacks CREATE: MKNOD and OPEN from now on")
	}
	return u.createByMknod(ctx, cred, dir, name, flags, mode, umask)
}

// createOut is CREATE's reply, fuse.CreateOut with perfuse's EntryOut
// (TestLayout holds the two to the same layout).
type createOut struct {
	EntryOut
	fuse.OpenOut
}

func (u *Usermount) create(ctx context.Context, cred *Cred, dir *Node, name string, flags int, mode, umask uint32) (*Entry, *Handle, error) {
	f := uint32(flags &^ syscall.O_NOCTTY)
	in := fuse.CreateIn{Flags: f, Mode: u.masked(mode, umask), Umask: umask}
	out, err := roundTrip[createOut](ctx, u, request{op: OpCreate, node: dir, cred: cred, in: fixed(OpCreate, &in), names: []string{name}})
	if err != nil {
		return nil, nil, err
	}
	// The open file's flags, as the kernel keeps them after open(2).
	h := &Handle{fh: out.Fh, flags: f &^ (syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC), openFlags: out.OpenFlags}
	if err := u.checkNewEntry(ctx, OpCreate, &out.EntryOut, syscall.S_IFREG, func() {
		// The daemon opened something: release it before forgetting the
		// node, as the kernel does (a daemon may drop a forgotten node).
		if out.NodeId != 0 {
			h.node = &Node{id: out.NodeId}
			h.released.Store(true)
			u.sendRelease(ctx, h)
		}
	}); err != nil {
		return nil, nil, err
	}
	e := &Entry{Node: u.lookedUp(&out.EntryOut, name), EntryOut: out.EntryOut}
	h.node = e.Node
	u.opened(h)
	u.debug(DiagFH, "perfuse: created", "nodeid", e.Node.id, "fh", h.fh)
	return e, h, nil
}

// createByMknod is CREATE without FUSE_CREATE: MKNOD, or LOOKUP when the
// name exists and O_EXCL is not asked, then OPEN. Each entry is counted
// once; a failed OPEN gives its lookup back (upstream leaked one).
func (u *Usermount) createByMknod(ctx context.Context, cred *Cred, dir *Node, name string, flags int, mode, umask uint32) (*Entry, *Handle, error) {
	e, err := u.NodeMknod(ctx, cred, dir, name, mode, 0, umask)
	if errors.Is(err, syscall.EEXIST) && flags&syscall.O_EXCL == 0 {
		e, err = u.NodeLookup(ctx, cred, dir, name)
	}
	if err != nil {
		return nil, nil, err
	}
	if e.Node.IsDir() {
		u.NodeReclaim(ctx, e.Node, 1)
		return nil, nil, fmt.Errorf("perfuse: create %q: %w", name, syscall.EISDIR)
	}
	h, err := u.NodeOpen(ctx, cred, e.Node, flags)
	if err != nil {
		u.NodeReclaim(ctx, e.Node, 1)
		return nil, nil, err
	}
	return e, h, nil
}

// NodeMknod creates a regular file, FIFO, socket or device node
// (FUSE_MKNOD). mode carries the type (none: a regular file); devices
// need root, as the kernel's CAP_MKNOD check.
func (u *Usermount) NodeMknod(ctx context.Context, cred *Cred, dir *Node, name string, mode, rdev, umask uint32) (*Entry, error) {
	if err := checkNewName(name); err != nil {
		return nil, err
	}
	typ := mode & syscall.S_IFMT
	switch typ {
	case 0:
		typ = syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFIFO, syscall.S_IFSOCK:
	case syscall.S_IFCHR, syscall.S_IFBLK:
		if cred != nil && cred.Uid != 0 {
			return nil, fmt.Errorf("perfuse: mknod of a device: %w", syscall.EPERM)
		}
	default:
		return nil, fmt.Errorf("perfuse: mknod of type %#o: %w", typ, syscall.EINVAL)
	}
	in := fuse.MknodIn{Mode: typ | u.masked(mode&0o7777, umask), Rdev: rdev, Umask: umask}
	return u.mkEntry(ctx, request{op: OpMknod, node: dir, cred: cred, in: fixed(OpMknod, &in), names: []string{name}}, name, typ)
}

// NodeMkdir creates the directory name in dir (FUSE_MKDIR).
func (u *Usermount) NodeMkdir(ctx context.Context, cred *Cred, dir *Node, name string, mode, umask uint32) (*Entry, error) {
	if err := checkNewName(name); err != nil {
		return nil, err
	}
	in := fuse.MkdirIn{Mode: u.masked(mode&0o7777, umask), Umask: umask}
	return u.mkEntry(ctx, request{op: OpMkdir, node: dir, cred: cred, in: fixed(OpMkdir, &in), names: []string{name}}, name, syscall.S_IFDIR)
}

// NodeSymlink creates the symbolic link name in dir pointing to target
// (FUSE_SYMLINK: the name, then the target, as FUSE orders them).
func (u *Usermount) NodeSymlink(ctx context.Context, cred *Cred, dir *Node, name, target string) (*Entry, error) {
	if err := checkNewName(name); err != nil {
		return nil, err
	}
	switch {
	case target == "":
		return nil, fmt.Errorf("perfuse: empty symlink target: %w", syscall.ENOENT)
	case len(target) >= pathMax:
		return nil, fmt.Errorf("perfuse: symlink target of %d bytes: %w", len(target), syscall.ENAMETOOLONG)
	case bytes.IndexByte([]byte(target), 0) >= 0:
		return nil, fmt.Errorf("perfuse: symlink target with NUL: %w", syscall.EINVAL)
	}
	return u.mkEntry(ctx, request{op: OpSymlink, node: dir, cred: cred, names: []string{name, target}}, name, syscall.S_IFLNK)
}

// NodeLink makes name in dir a new hard link to n (FUSE_LINK). The entry
// the daemon returns counts one lookup on n (upstream ignored it, and
// its FORGETs fell short).
func (u *Usermount) NodeLink(ctx context.Context, cred *Cred, n *Node, dir *Node, name string) (*Entry, error) {
	if err := checkNewName(name); err != nil {
		return nil, err
	}
	if n.IsDir() {
		return nil, fmt.Errorf("perfuse: link to a directory: %w", syscall.EPERM)
	}
	in := fuse.LinkIn{Oldnodeid: n.id}
	return u.mkEntry(ctx, request{op: OpLink, node: dir, cred: cred, in: fixed(OpLink, &in), names: []string{name}}, name, n.mode.Load())
}

// mkEntry sends r, which creates name, and counts the entry it answers
// (of type typ, 0: any).
func (u *Usermount) mkEntry(ctx context.Context, r request, name string, typ uint32) (*Entry, error) {
	out, err := roundTrip[EntryOut](ctx, u, r)
	if err != nil {
		return nil, err
	}
	if err := u.checkNewEntry(ctx, r.op, out, typ, nil); err != nil {
		return nil, err
	}
	return &Entry{Node: u.lookedUp(out, name), EntryOut: *out}, nil
}

// checkNewEntry refuses, with EIO as the kernel does, the entry of a
// created name that has no nodeid, the root's, or the wrong type (typ 0:
// any). A refused entry the daemon counted is forgotten again.
func (u *Usermount) checkNewEntry(ctx context.Context, op Opcode, out *EntryOut, typ uint32, beforeForget func()) error {
	valid := out.NodeId != 0 && out.NodeId != RootID
	if valid && (typ == 0 || out.Attr.Mode&syscall.S_IFMT == typ) {
		return nil
	}
	if beforeForget != nil {
		beforeForget()
	}
	if valid {
		u.sendForgets(ctx, []forgetOne{{nodeid: out.NodeId, nlookup: 1}})
	}
	return fmt.Errorf("perfuse: %s: bad entry: nodeid %d mode %#o: %w", op, out.NodeId, out.Attr.Mode, syscall.EIO)
}

// NodeRemove unlinks name from dir (FUSE_UNLINK). The node, if known,
// stays known until its lookups are returned: the daemon, not perfuse,
// says whether it still exists.
func (u *Usermount) NodeRemove(ctx context.Context, cred *Cred, dir *Node, name string) error {
	if name == "." || name == ".." {
		return fmt.Errorf("perfuse: unlink %q: %w", name, syscall.EISDIR)
	}
	if err := checkName(name); err != nil {
		return err
	}
	return u.do(ctx, request{op: OpUnlink, node: dir, cred: cred, names: []string{name}}, nil)
}

// NodeRmdir removes the empty directory name from dir (FUSE_RMDIR).
// "." is EINVAL and ".." ENOTEMPTY, as rmdir(2) says, and nothing is sent.
func (u *Usermount) NodeRmdir(ctx context.Context, cred *Cred, dir *Node, name string) error {
	switch name {
	case ".":
		return fmt.Errorf("perfuse: rmdir \".\": %w", syscall.EINVAL)
	case "..":
		return fmt.Errorf("perfuse: rmdir \"..\": %w", syscall.ENOTEMPTY)
	}
	if err := checkName(name); err != nil {
		return err
	}
	return u.do(ctx, request{op: OpRmdir, node: dir, cred: cred, names: []string{name}}, nil)
}

// Flags of NodeRename, as renameat2(2)'s.
const (
	RenameNoreplace = 1 << 0
	RenameExchange  = 1 << 1
	RenameWhiteout  = 1 << 2
)

// NodeRename renames oldname in olddir to newname in newdir, replacing
// what is there (FUSE_RENAME). With flags it sends FUSE_RENAME2; a daemon
// that answers ENOSYS makes every later rename with flags EINVAL, as the
// kernel's does.
func (u *Usermount) NodeRename(ctx context.Context, cred *Cred, olddir *Node, oldname string, newdir *Node, newname string, flags uint32) error {
	for _, name := range []string{oldname, newname} {
		if name == "." || name == ".." {
			return fmt.Errorf("perfuse: rename %q: %w", name, syscall.EBUSY)
		}
		if err := checkName(name); err != nil {
			return err
		}
	}
	if flags&^(RenameNoreplace|RenameExchange|RenameWhiteout) != 0 ||
		flags&RenameNoreplace != 0 && flags&RenameExchange != 0 {
		return fmt.Errorf("perfuse: rename flags %#x: %w", flags, syscall.EINVAL)
	}
	op := OpRename
	if flags != 0 {
		op = OpRename2
		if u.unsupported[OpRename2].Load() {
			return fmt.Errorf("perfuse: daemon lacks RENAME2: %w", syscall.EINVAL)
		}
	}
	in := fuse.RenameIn{Newdir: newdir.id, Flags: flags}
	err := u.do(ctx, request{op: op, node: olddir, cred: cred, in: fixed(op, &in), names: []string{oldname, newname}}, nil)
	if op == OpRename2 && isENOSYS(err) {
		u.noLonger(OpRename2)
		return fmt.Errorf("perfuse: daemon lacks RENAME2: %w", syscall.EINVAL)
	}
	return err
}

// NodeReadlink returns the target of the symbolic link n (FUSE_READLINK).
// Trailing NULs (which many daemons send) are dropped; an empty or
// over-long target is EIO (upstream exited).
func (u *Usermount) NodeReadlink(ctx context.Context, cred *Cred, n *Node) (string, error) {
	var target string
	err := u.do(ctx, request{op: OpReadlink, node: n, cred: cred}, func(b []byte) error {
		if len(b) > pathMax {
			return fmt.Errorf("perfuse: READLINK reply of %d bytes: %w", len(b), syscall.EIO)
		}
		b = bytes.TrimRight(b, "\x00")
		if len(b) == 0 || bytes.IndexByte(b, 0) >= 0 {
			return fmt.Errorf("perfuse: READLINK reply %q: %w", b, syscall.EIO)
		}
		target = string(b)
		return nil
	})
	return target, err
}
