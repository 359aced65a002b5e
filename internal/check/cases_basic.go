package check

import (
	"bytes"
	"errors"
	"syscall"

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
	r.u.NodeRemove(r.ctx, nil, r.scratch, "init")
	return pass("%s; a %d-byte WRITE taken whole", got(), maxWrite)
}

// lookupCase: LOOKUP of "." and ".." (never sent by Linux, whose VFS
// resolves them) must be refused or name the directory itself and its
// parent; a name's nodeid is stable while it is held, and its attributes'
// inode number matches GETATTR's.
func (r *runner) lookupCase() outcome {
	root := r.u.Root()
	var notes []string
	for _, name := range []string{".", ".."} {
		e, err := r.u.NodeLookup(r.ctx, nil, root, name)
		if err != nil {
			r.seen("LOOKUP "+name, err)
			notes = append(notes, name+" refused ("+errName(err)+")")
			continue
		}
		id := e.Node.ID()
		r.u.NodeReclaim(r.ctx, e.Node, 1)
		if id != perfuse.RootID {
			return fail("LOOKUP %q in the root gave nodeid %d, not the root", name, id)
		}
		notes = append(notes, name+" is the root")
	}
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
		defer r.u.NodeRemove(r.ctx, nil, r.scratch, "lookup")
		name = "lookup"
	} else {
		ents, err := r.names(root)
		if err != nil {
			return fail("%v", err)
		}
		if len(ents) == 0 {
			return pass("%s; empty root: no name to look up twice", join(notes))
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
	return pass("%s; %q kept nodeid %d over two lookups, inode %d as GETATTR says", join(notes), name, a.NodeId, attr.Ino)
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
