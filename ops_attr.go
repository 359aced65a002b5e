package perfuse

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Attributes and permissions.

// setattrChanges are the valid bits that ask the daemon to change
// something; FattrFh and FattrLockowner only qualify a request.
const setattrChanges = FattrMode | FattrUid | FattrGid | FattrSize |
	FattrAtime | FattrMtime | FattrAtimeNow | FattrMtimeNow |
	FattrCtime | FattrKillSuidgid

// NodeGetattr fetches n's attributes (FUSE_GETATTR), with h's file handle
// when the node is open as a file.
func (u *Usermount) NodeGetattr(ctx context.Context, cred *Cred, n *Node, h *Handle) (*AttrOut, error) {
	if h != nil {
		// A released fh may already name another open in the daemon.
		if err := usable(h); err != nil {
			return nil, err
		}
	}
	in := fuse.GetAttrIn{}
	if h != nil && !h.dir {
		in.Flags_, in.Fh_ = fuse.FUSE_GETATTR_FH, h.fh
	}
	out, err := roundTrip[AttrOut](ctx, u, request{op: OpGetattr, node: n, cred: cred, in: fixed(OpGetattr, &in)})
	if err != nil {
		return nil, err
	}
	n.setAttr(&out.Attr)
	return out, nil
}

// NodeSetattr changes n's attributes (FUSE_SETATTR) as in.Valid says
// (Fattr* bits with their fields), and returns the attributes the daemon
// answers, which also become n's cached ones. With h, an open of a file,
// the request carries its handle (FattrFh), as ftruncate(2) does. A
// request with nothing to change is not sent: the current attributes are
// fetched instead. Times not being set still carry the cached values,
// for daemons (GlusterFS) that reset fields they were not asked to set.
func (u *Usermount) NodeSetattr(ctx context.Context, cred *Cred, n *Node, h *Handle, in *SetAttrIn) (*AttrOut, error) {
	if in == nil {
		return nil, syscall.EINVAL
	}
	if h != nil {
		if err := usable(h); err != nil {
			return nil, err
		}
	}
	req := *in
	if req.Valid&setattrChanges == 0 {
		return u.NodeGetattr(ctx, cred, n, h)
	}
	if req.Valid&FattrSize != 0 && n.IsDir() {
		return nil, syscall.EISDIR
	}
	if h != nil && !h.dir {
		req.Valid |= FattrFh
		req.Fh = h.fh
	}
	if a, ok := n.Attr(); ok {
		if req.Valid&(FattrAtime|FattrAtimeNow) == 0 {
			req.Atime, req.Atimensec = a.Atime, a.Atimensec
		}
		if req.Valid&(FattrMtime|FattrMtimeNow) == 0 {
			req.Mtime, req.Mtimensec = a.Mtime, a.Mtimensec
		}
	}
	if req.Valid&FattrSize != 0 {
		// A size change and the writes on the node are ordered.
		if err := u.lockWrites(ctx, n); err != nil {
			return nil, err
		}
		defer n.unlockWrites()
	}
	// SetAttrIn is the whole fixed part: it has no in header to cut.
	out, err := roundTrip[AttrOut](ctx, u, request{op: OpSetattr, node: n, cred: cred, in: structBytes(&req)})
	if err != nil {
		return nil, err
	}
	n.setAttr(&out.Attr)
	return out, nil
}

// Access bits of NodeAccess, as access(2)'s.
const (
	AccessExec  = 1 // X_OK
	AccessWrite = 2 // W_OK
	AccessRead  = 4 // R_OK
)

// NodeAccess checks whether cred may access n for mask (R_OK, W_OK, X_OK;
// 0 tests existence). By default, as libperfuse, it is decided here from
// n's cached attributes (fetched with GETATTR when none are cached yet).
// With FUSE_ACCESS enabled (WithAccess, PERFUSE_OPTIONS=enable_access) the
// daemon decides, until it answers ENOSYS, which switches to the
// emulation for the session.
func (u *Usermount) NodeAccess(ctx context.Context, cred *Cred, n *Node, mask uint32) error {
	if mask&^7 != 0 {
		return syscall.EINVAL
	}
	if !u.noAccess.Load() {
		in := fuse.AccessIn{Mask: mask}
		err := u.do(ctx, request{op: OpAccess, node: n, cred: cred, in: fixed(OpAccess, &in)}, nil)
		if !isENOSYS(err) {
			return err
		}
		u.noAccess.Store(true)
		u.debug(DiagMisc, "perfuse: daemon lacks ACCESS: emulated from now on")
	}
	a, ok := n.Attr()
	if !ok {
		out, err := u.NodeGetattr(ctx, cred, n, nil)
		if err != nil {
			return err
		}
		a = out.Attr
	}
	return accessCheck(&a, cred, mask)
}

// accessCheck is the owner/group/other check of the cached mode. Root
// (or no caller) may do anything but execute a file that nobody may
// execute. Only the caller's primary group is known.
func accessCheck(a *Attr, cred *Cred, mask uint32) error {
	if cred == nil || cred.Uid == 0 {
		if mask&AccessExec != 0 && a.Mode&syscall.S_IFMT != syscall.S_IFDIR && a.Mode&0o111 == 0 {
			return syscall.EACCES
		}
		return nil
	}
	var bits uint32
	switch {
	case cred.Uid == a.Uid:
		bits = a.Mode >> 6
	case cred.Gid == a.Gid:
		bits = a.Mode >> 3
	default:
		bits = a.Mode
	}
	if mask&^(bits&7) != 0 {
		return syscall.EACCES
	}
	return nil
}

// Names of NodePathconf, with Linux's _PC_* values.
const (
	PcLinkMax         = 0
	PcNameMax         = 3
	PcPathMax         = 4
	PcPipeBuf         = 5
	PcChownRestricted = 6
	PcNoTrunc         = 7
	PcSyncIO          = 9
	PcFilesizebits    = 13
	PcSymlinkMax      = 19
	Pc2Symlinks       = 20
)

// pathconfStatic are the values that do not depend on the daemon: Linux's
// (upstream copied NetBSD's UFS values).
var pathconfStatic = map[int]int64{
	PcLinkMax:         127, // LINK_MAX
	PcPathMax:         4096,
	PcPipeBuf:         4096,
	PcChownRestricted: 1,
	PcNoTrunc:         1,
	PcSyncIO:          1,
	PcFilesizebits:    64,
	PcSymlinkMax:      pathMax - 1,
	Pc2Symlinks:       1,
}

// NodePathconf returns the pathconf(3) value name for n. NAME_MAX is the
// daemon's (FUSE_STATFS namelen, 255 when it says 0); the others are
// fixed. An unknown name is EINVAL, as pathconf(3) says (upstream
// answered ENOSYS).
func (u *Usermount) NodePathconf(ctx context.Context, cred *Cred, n *Node, name int) (int64, error) {
	if v, ok := pathconfStatic[name]; ok {
		return v, nil
	}
	if name != PcNameMax {
		return 0, fmt.Errorf("perfuse: pathconf %d: %w", name, syscall.EINVAL)
	}
	st, err := u.FsStatvfs(ctx, cred)
	if err != nil {
		return 0, err
	}
	if st.NameLen == 0 {
		return nameMax, nil
	}
	return int64(st.NameLen), nil
}

// NodePrint logs what the session knows of n (puffs' print; upstream
// exited here). It always succeeds.
func (u *Usermount) NodePrint(n *Node) error {
	if n == nil {
		return nil
	}
	a, _ := n.Attr()
	u.log.Info("perfuse: node", "nodeid", n.id, "name", n.Name(), "lookups", u.Lookups(n),
		"mode", fmt.Sprintf("%#o", a.Mode), "size", a.Size, "opens", len(u.openHandles(n)))
	return nil
}
