package perfuse

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Extended attributes. Names are Linux's, namespace prefix included
// ("user.x", "trusted.x", "security.x", "system.posix_acl_access"), and go
// to the daemon unchanged; the permission rules of the kernel's
// xattr_permission are applied first.

const (
	xattrNameMax = 255   // XATTR_NAME_MAX
	xattrSizeMax = 65536 // XATTR_SIZE_MAX
	xattrCreate  = 1     // XATTR_CREATE
	xattrReplace = 2     // XATTR_REPLACE
)

func checkXattrName(name string) error {
	switch {
	case name == "" || len(name) > xattrNameMax:
		return fmt.Errorf("perfuse: xattr name of %d bytes: %w", len(name), syscall.ERANGE)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("perfuse: xattr name with NUL: %w", syscall.EINVAL)
	}
	return nil
}

// xattrPermission is the kernel's namespace check: trusted.* is root's,
// and user.* exists only on files and directories. A reader is told
// there is no such attribute, a writer that it may not.
func xattrPermission(cred *Cred, n *Node, name string, write bool) error {
	deny := syscall.ENODATA
	if write {
		deny = syscall.EPERM
	}
	switch {
	case strings.HasPrefix(name, "trusted.") && cred != nil && cred.Uid != 0:
		return fmt.Errorf("perfuse: xattr %q: %w", name, deny)
	case strings.HasPrefix(name, "user."):
		if t := n.mode.Load(); t != 0 && t != syscall.S_IFREG && t != syscall.S_IFDIR {
			return fmt.Errorf("perfuse: xattr %q on type %#o: %w", name, t, deny)
		}
	}
	return nil
}

// xattrCall sends an xattr request, turning the daemon's ENOSYS into
// EOPNOTSUPP, remembered for the session as the kernel does.
func (u *Usermount) xattrCall(ctx context.Context, r request, fn func([]byte) error) error {
	err := u.do(ctx, r, fn)
	if isENOSYS(err) {
		u.noLonger(r.op)
		return fmt.Errorf("perfuse: daemon lacks %s: %w", r.op, syscall.EOPNOTSUPP)
	}
	return err
}

func (u *Usermount) xattrLacking(op Opcode) error {
	if u.unsupported[op].Load() {
		return fmt.Errorf("perfuse: daemon lacks %s: %w", op, syscall.EOPNOTSUPP)
	}
	return nil
}

// NodeGetextattr reads the extended attribute name of n
// (FUSE_GETXATTR). With size 0 it asks only for the value's size and
// returns (nil, size, nil); otherwise it returns the value, of at most
// size bytes (ERANGE from the daemon when it is larger).
func (u *Usermount) NodeGetextattr(ctx context.Context, cred *Cred, n *Node, name string, size uint32) ([]byte, uint32, error) {
	if err := checkXattrName(name); err != nil {
		return nil, 0, err
	}
	if err := xattrPermission(cred, n, name, false); err != nil {
		return nil, 0, err
	}
	if err := u.xattrLacking(OpGetxattr); err != nil {
		return nil, 0, err
	}
	in := fuse.GetXAttrIn{Size: min(size, xattrSizeMax)}
	var value []byte
	var got uint32
	err := u.xattrCall(ctx, request{op: OpGetxattr, node: n, cred: cred, in: fixed(OpGetxattr, &in), names: []string{name}}, func(b []byte) (err error) {
		value, got, err = xattrReply(OpGetxattr, b, in.Size)
		return err
	})
	return value, got, err
}

// xattrReply decodes a GETXATTR or LISTXATTR reply: the size for a probe
// (size 0), else the data, which may not exceed size.
func xattrReply(op Opcode, b []byte, size uint32) ([]byte, uint32, error) {
	if size == 0 {
		out, err := decodeExact[fuse.GetXAttrOut](op, b)
		if err != nil {
			return nil, 0, err
		}
		if out.Size > xattrSizeMax {
			// The kernel caps what a probe may announce (XATTR_SIZE_MAX).
			return nil, 0, errProto(op, "size %d beyond %d", out.Size, xattrSizeMax)
		}
		return nil, out.Size, nil
	}
	if len(b) > int(size) {
		return nil, 0, errProto(op, "%d bytes for a buffer of %d", len(b), size)
	}
	return bytes.Clone(b), uint32(len(b)), nil
}

// NodeListextattr lists the extended attribute names of n
// (FUSE_LISTXATTR), each followed by a NUL, with the size convention of
// NodeGetextattr. A list that is not a sequence of non-empty NUL-ended
// names is EIO, as the kernel checks.
func (u *Usermount) NodeListextattr(ctx context.Context, cred *Cred, n *Node, size uint32) ([]byte, uint32, error) {
	if err := u.xattrLacking(OpListxattr); err != nil {
		return nil, 0, err
	}
	in := fuse.GetXAttrIn{Size: min(size, xattrSizeMax)}
	var list []byte
	var sz uint32
	err := u.xattrCall(ctx, request{op: OpListxattr, node: n, cred: cred, in: fixed(OpListxattr, &in)}, func(b []byte) (err error) {
		list, sz, err = xattrReply(OpListxattr, b, in.Size)
		return err
	})
	if err != nil || list == nil {
		return list, sz, err
	}
	if err := checkXattrList(list); err != nil {
		return nil, 0, err
	}
	return list, sz, nil
}

// checkXattrList checks a LISTXATTR reply: non-empty names, each ended by
// a NUL.
func checkXattrList(b []byte) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i <= 0 {
			return errProto(OpListxattr, "malformed name list")
		}
		b = b[i+1:]
	}
	return nil
}

// NodeSetextattr sets the extended attribute name of n to value
// (FUSE_SETXATTR). flags are setxattr(2)'s: XATTR_CREATE (1) or
// XATTR_REPLACE (2). A value over 64 KiB, or a request larger than the
// daemon accepts, is E2BIG.
func (u *Usermount) NodeSetextattr(ctx context.Context, cred *Cred, n *Node, name string, value []byte, flags uint32) error {
	if err := checkXattrName(name); err != nil {
		return err
	}
	if flags&^(xattrCreate|xattrReplace) != 0 {
		return syscall.EINVAL
	}
	if len(value) > xattrSizeMax {
		return fmt.Errorf("perfuse: xattr value of %d bytes: %w", len(value), syscall.E2BIG)
	}
	if err := xattrPermission(cred, n, name, true); err != nil {
		return err
	}
	if err := u.xattrLacking(OpSetxattr); err != nil {
		return err
	}
	// The 8-byte fuse_setxattr_in: SETXATTR_EXT is not offered.
	in := fuse.SetXAttrIn{Size: uint32(len(value)), Flags: flags}
	return u.xattrCall(ctx, request{op: OpSetxattr, node: n, cred: cred, in: fixed(OpSetxattr, &in), names: []string{name}, tail: value}, nil)
}

// NodeDeleteextattr removes the extended attribute name of n
// (FUSE_REMOVEXATTR).
func (u *Usermount) NodeDeleteextattr(ctx context.Context, cred *Cred, n *Node, name string) error {
	if err := checkXattrName(name); err != nil {
		return err
	}
	if err := xattrPermission(cred, n, name, true); err != nil {
		return err
	}
	if err := u.xattrLacking(OpRemovexattr); err != nil {
		return err
	}
	return u.xattrCall(ctx, request{op: OpRemovexattr, node: n, cred: cred, names: []string{name}}, nil)
}
