package check

import (
	"bytes"
	"errors"
	"syscall"
)

// xattrFlags are setxattr(2)'s.
const (
	xattrCreate  = 1
	xattrReplace = 2
)

// xattrCase: SETXATTR, GETXATTR and LISTXATTR with the size probe and
// ERANGE for a short buffer, REMOVEXATTR, and the CREATE and REPLACE
// flags.
func (r *runner) xattrCase() outcome {
	if r.scratch == nil {
		return r.xattrReadOnly()
	}
	e, h, err := r.create(r.scratch, "xattr")
	if err != nil {
		return fail("%v", err)
	}
	r.done(nil, h)
	defer r.unlink(r.scratch, "xattr")
	defer r.u.NodeReclaim(r.ctx, e.Node, 1)
	n := e.Node
	const name = "user.perfuse.check"
	value := []byte("value-0123456789")
	err = r.u.NodeSetextattr(r.ctx, nil, n, name, value, 0)
	if unsupported(err) || errors.Is(err, syscall.ENODATA) {
		return skip("SETXATTR answered %s", errName(err))
	}
	if err != nil {
		return fail("SETXATTR: %v", err)
	}
	_, size, err := r.u.NodeGetextattr(r.ctx, nil, n, name, 0)
	if err != nil || size != uint32(len(value)) {
		return fail("GETXATTR size probe: %d (%v), want %d", size, err, len(value))
	}
	if _, _, err := r.u.NodeGetextattr(r.ctx, nil, n, name, 4); !errors.Is(err, syscall.ERANGE) {
		return fail("GETXATTR into 4 bytes: %v, want ERANGE", err)
	}
	got, _, err := r.u.NodeGetextattr(r.ctx, nil, n, name, size)
	if err != nil || !bytes.Equal(got, value) {
		return fail("GETXATTR: %q (%v), want %q", got, err, value)
	}
	_, lsize, err := r.u.NodeListextattr(r.ctx, nil, n, 0)
	if err != nil || lsize < uint32(len(name)+1) {
		return fail("LISTXATTR size probe: %d (%v), want at least %d", lsize, err, len(name)+1)
	}
	if _, _, err := r.u.NodeListextattr(r.ctx, nil, n, 1); !errors.Is(err, syscall.ERANGE) {
		return fail("LISTXATTR into 1 byte: %v, want ERANGE", err)
	}
	list, _, err := r.u.NodeListextattr(r.ctx, nil, n, lsize)
	if err != nil || !bytes.Contains(append([]byte{0}, list...), []byte("\x00"+name+"\x00")) {
		return fail("LISTXATTR: %q (%v), want %s in it", list, err, name)
	}
	if err := r.u.NodeSetextattr(r.ctx, nil, n, name, value, xattrCreate); !errors.Is(err, syscall.EEXIST) {
		return fail("SETXATTR XATTR_CREATE of an existing name: %v, want EEXIST", err)
	}
	if err := r.u.NodeSetextattr(r.ctx, nil, n, name+".none", value, xattrReplace); !errors.Is(err, syscall.ENODATA) {
		return fail("SETXATTR XATTR_REPLACE of a missing name: %v, want ENODATA", err)
	}
	if err := r.u.NodeDeleteextattr(r.ctx, nil, n, name); err != nil {
		return fail("REMOVEXATTR: %v", err)
	}
	if _, _, err := r.u.NodeGetextattr(r.ctx, nil, n, name, 0); !errors.Is(err, syscall.ENODATA) {
		return fail("GETXATTR after REMOVEXATTR: %v, want ENODATA", err)
	}
	return pass("set, size probes, ERANGE for short buffers, list, CREATE/REPLACE flags, remove")
}

// xattrReadOnly: a missing name is ENODATA, and the list probe and read
// agree.
func (r *runner) xattrReadOnly() outcome {
	n := r.u.Root()
	_, _, err := r.u.NodeGetextattr(r.ctx, nil, n, "user.perfuse.none", 0)
	if unsupported(err) {
		return skip("GETXATTR answered %s (%s)", errName(err), r.ro)
	}
	if !errors.Is(err, syscall.ENODATA) {
		return fail("GETXATTR of a missing name: %v, want ENODATA", err)
	}
	_, size, err := r.u.NodeListextattr(r.ctx, nil, n, 0)
	if unsupported(err) {
		return pass("%s: GETXATTR of a missing name ENODATA; LISTXATTR %s", r.ro, errName(err))
	}
	if err != nil {
		return fail("LISTXATTR probe: %v", err)
	}
	if size > 0 {
		if _, _, err := r.u.NodeListextattr(r.ctx, nil, n, size); err != nil {
			return fail("LISTXATTR of %d bytes: %v", size, err)
		}
	}
	return pass("%s: GETXATTR of a missing name ENODATA, LISTXATTR of the root %d bytes", r.ro, size)
}
