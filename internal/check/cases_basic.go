package check

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/perfuse-go/perfuse"
)

// initCase checks what INIT settled, and that a WRITE of max_write bytes
// (one frame) is taken whole.
func (r *runner) initCase() outcome {
	minor, flags, maxWrite, maxRead := r.u.Negotiated()
	got := func() string {
		return "7." + itoa(minor) + ", flags " + hex(flags) + ", max_write " + itoa(maxWrite) + ", max_read " + itoa(maxRead)
	}
	switch {
	case minor < 12:
		return fail("protocol 7.%d: older than 7.12, which Linux needs", minor)
	case maxWrite < 4096:
		return fail("max_write %d: below one page (%s)", maxWrite, got())
	case maxRead < 4096:
		return fail("max_read %d: below one page (%s)", maxRead, got())
	}
	if o := r.needWrite(); o != nil {
		return pass("%s; max_write not tried (%s)", got(), r.ro)
	}
	e, h, err := r.create(r.scratch, "init")
	if err != nil {
		return fail("%v", err)
	}
	defer r.done(e, h)
	data := pattern(1, 0, maxWrite)
	if err := r.writeAll(h, data, 0); err != nil {
		return fail("%v (max_write %d)", err, maxWrite)
	}
	back, err := r.readAt(h, 0, maxWrite+1)
	if err != nil {
		return fail("%v", err)
	}
	if !bytes.Equal(back, data) {
		return fail("a max_write WRITE of %d bytes read back as %d different bytes", maxWrite, len(back))
	}
	r.unlink(r.scratch, "init")
	return pass("%s; a %d-byte WRITE taken whole", got(), maxWrite)
}

// lookupCase: a missing name is ENOENT; a name's nodeid is stable while
// it is held, and its attributes' inode number matches GETATTR's.
func (r *runner) lookupCase() outcome {
	root := r.u.Root()
	if _, err := r.u.NodeLookup(r.ctx, nil, root, ".perfuse-check-missing"); !errors.Is(err, syscall.ENOENT) {
		return fail("LOOKUP of a missing name: %v, want ENOENT", err)
	}
	name := ""
	if r.scratch != nil {
		e, h, err := r.create(r.scratch, "lookup")
		if err != nil {
			return fail("%v", err)
		}
		r.done(e, h)
		defer r.unlink(r.scratch, "lookup")
		name = "lookup"
	} else {
		ents, err := r.names(root)
		if err != nil {
			return fail("%v", err)
		}
		if len(ents) == 0 {
			return pass("missing name ENOENT; empty root: no name to look up twice")
		}
		name = ents[0].Name
	}
	dir := root
	if r.scratch != nil {
		dir = r.scratch
	}
	a, err := r.lookup(dir, name)
	if err != nil {
		return fail("%v", err)
	}
	defer r.u.NodeReclaim(r.ctx, a.Node, 1)
	b, err := r.lookup(dir, name)
	if err != nil {
		return fail("%v", err)
	}
	defer r.u.NodeReclaim(r.ctx, b.Node, 1)
	if a.NodeId != b.NodeId {
		return fail("%q looked up twice while held: nodeids %d and %d", name, a.NodeId, b.NodeId)
	}
	attr, err := r.getattr(a.Node)
	if err != nil {
		return fail("%v", err)
	}
	if attr.Ino != a.Attr.Ino {
		return fail("%q: LOOKUP says inode %d, GETATTR %d", name, a.Attr.Ino, attr.Ino)
	}
	if r.u.Lookups(a.Node) != 2 {
		return fail("%q: %d lookups counted after two LOOKUPs", name, r.u.Lookups(a.Node))
	}
	return pass("missing name ENOENT; %q kept nodeid %d over two lookups, inode %d as GETATTR says", name, a.NodeId, attr.Ino)
}

// statfsCase checks STATFS's counts are consistent.
func (r *runner) statfsCase() outcome {
	st, err := r.u.FsStatvfs(r.ctx, nil)
	if errors.Is(err, syscall.ENOSYS) {
		return skip("STATFS answered ENOSYS")
	}
	if err != nil {
		return fail("STATFS: %v", err)
	}
	switch {
	case st.Bfree > st.Blocks:
		return fail("bfree %d > blocks %d", st.Bfree, st.Blocks)
	case st.Bavail > st.Blocks:
		return fail("bavail %d > blocks %d", st.Bavail, st.Blocks)
	case st.Ffree > st.Files && st.Files != 0:
		return fail("ffree %d > files %d", st.Ffree, st.Files)
	case st.Bsize == 0 && st.Blocks != 0:
		return fail("bsize 0 with %d blocks", st.Blocks)
	case st.NameLen == 0 || st.NameLen > 4096:
		return fail("namelen %d", st.NameLen)
	}
	return pass("blocks %d free %d avail %d of %d bytes, files %d free %d, namelen %d", st.Blocks, st.Bfree, st.Bavail, st.Bsize, st.Files, st.Ffree, st.NameLen)
}

// dotsCase: LOOKUP of "." and ".." must be refused, or give the directory
// itself and its parent. Linux sends ".." only to a daemon that took
// EXPORT_SUPPORT (for an NFS export's parent lookups) and never "."; a
// daemon without it that mishandles them is skipped, with what happened.
// It runs last but for the local checks, as it may end the daemon.
func (r *runner) dotsCase() outcome {
	_, flags, _, _ := r.u.Negotiated()
	export := flags&fuse.CAP_EXPORT_SUPPORT != 0
	bad := func(format string, args ...any) outcome {
		if export {
			return fail(format, args...)
		}
		return outcome{Skip, fmt.Sprintf(format, args...) + "; not reachable through Linux without EXPORT_SUPPORT, which the daemon did not take"}
	}
	var notes []string
	for _, name := range []string{".", ".."} {
		e, err := r.u.NodeLookup(r.ctx, nil, r.u.Root(), name)
		if errors.Is(err, syscall.ENOTCONN) {
			return bad("the daemon ended on LOOKUP %q in the root", name)
		}
		if err != nil {
			r.seen("LOOKUP "+name, err)
			notes = append(notes, fmt.Sprintf("%q refused (%s)", name, errName(err)))
			continue
		}
		id := e.Node.ID()
		r.u.NodeReclaim(r.ctx, e.Node, 1)
		if id != perfuse.RootID {
			return bad("LOOKUP %q in the root gave nodeid %d, not the root", name, id)
		}
		notes = append(notes, fmt.Sprintf("%q is the root", name))
	}
	return pass("%s", join(notes))
}
