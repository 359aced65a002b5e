package check

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/perfuse-go/perfuse"
)

// renameFlags are RENAME2's flags (linux/fs.h).
const (
	renameNoreplace = 1 << 0
	renameExchange  = 1 << 1
)

// touch creates name in dir holding data.
func (r *runner) touch(dir *perfuse.Node, name string, data string) error {
	e, h, err := r.create(dir, name)
	if err != nil {
		return err
	}
	defer r.done(e, h)
	return r.writeAll(h, []byte(data), 0)
}

// content reads name in dir whole.
func (r *runner) content(dir *perfuse.Node, name string) (string, error) {
	e, err := r.lookup(dir, name)
	if err != nil {
		return "", err
	}
	h, err := r.u.NodeOpen(r.ctx, nil, e.Node, syscall.O_RDONLY)
	if err != nil {
		r.done(e, nil)
		return "", fmt.Errorf("OPEN %s: %w", name, err)
	}
	defer r.done(e, h)
	b, err := r.readAt(h, 0, 1<<16)
	return string(b), err
}

// wantContent checks name in dir holds want.
func (r *runner) wantContent(dir *perfuse.Node, name, want string) error {
	got, err := r.content(dir, name)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s holds %q, want %q", name, got, want)
	}
	return nil
}

// wantGone checks name is not in dir.
func (r *runner) wantGone(dir *perfuse.Node, name string) error {
	ok, err := r.exists(dir, name)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%s still exists", name)
	}
	return nil
}

func (r *runner) rename(od *perfuse.Node, on string, nd *perfuse.Node, nn string, flags uint32) error {
	if err := r.renameHeld(od, on, nd, nn, flags); err != nil {
		return fmt.Errorf("RENAME %s to %s (flags %d): %w", on, nn, flags, err)
	}
	return nil
}

// mkdirHeld makes name in dir, its entry held until releaseHeld.
func (r *runner) mkdirHeld(dir *perfuse.Node, name string) error {
	e, err := r.mkdir(dir, name)
	if err == nil {
		r.held = append(r.held, e.Node)
	}
	return err
}

// lookupHeld looks name up in dir, its entry held until releaseHeld.
func (r *runner) lookupHeld(dir *perfuse.Node, name string) (*perfuse.Node, error) {
	e, err := r.lookup(dir, name)
	if err != nil {
		return nil, err
	}
	r.held = append(r.held, e.Node)
	return e.Node, nil
}

// releaseHeld gives back the entries mkdirHeld and lookupHeld took.
func (r *runner) releaseHeld() {
	for _, n := range r.held {
		r.u.NodeReclaim(r.ctx, n, 1)
	}
	r.held = nil
}

// sub makes a fresh directory in the scratch directory for one case.
func (r *runner) sub(name string) (*perfuse.Entry, func(), error) {
	e, err := r.mkdir(r.scratch, name)
	if err != nil {
		return nil, nil, err
	}
	return e, func() {
		r.u.NodeReclaim(r.ctx, e.Node, 1)
		r.removeAll(r.scratch, name)
	}, nil
}

// renameCase: a plain rename, one over an existing file, one into another
// directory, a directory's rename, and one onto a non-empty directory
// (ENOTEMPTY or EEXIST).
func (r *runner) renameCase() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	d, undo, err := r.sub("rename")
	if err != nil {
		return fail("%v", err)
	}
	defer undo()
	dir := d.Node
	steps := []func() error{
		func() error { return r.touch(dir, "a", "A") },
		func() error { return r.rename(dir, "a", dir, "b", 0) },
		func() error { return r.wantGone(dir, "a") },
		func() error { return r.wantContent(dir, "b", "A") },
		func() error { return r.touch(dir, "c", "C") },
		func() error { return r.rename(dir, "b", dir, "c", 0) },
		func() error { return r.wantGone(dir, "b") },
		func() error { return r.wantContent(dir, "c", "A") },
		func() error { return r.mkdirHeld(dir, "sub") },
		func() error {
			sub, err := r.lookupHeld(dir, "sub")
			if err != nil {
				return err
			}
			return r.rename(dir, "c", sub, "c2", 0)
		},
		func() error { return r.wantGone(dir, "c") },
		func() error {
			sub, err := r.lookupHeld(dir, "sub")
			if err != nil {
				return err
			}
			return r.wantContent(sub, "c2", "A")
		},
		func() error { return r.rename(dir, "sub", dir, "sub2", 0) },
		func() error {
			sub, err := r.lookupHeld(dir, "sub2")
			if err != nil {
				return err
			}
			return r.wantContent(sub, "c2", "A")
		},
		func() error { return r.mkdirHeld(dir, "other") },
		func() error {
			err := r.renameHeld(dir, "other", dir, "sub2", 0)
			if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
				return nil
			}
			return fmt.Errorf("RENAME of a directory onto a non-empty one: %v, want ENOTEMPTY", err)
		},
	}
	for i, step := range steps {
		err := step()
		r.releaseHeld()
		if err != nil {
			if i == 0 || unsupported(err) && i == 1 {
				return skip("%v", err)
			}
			return fail("step %d: %v", i, err)
		}
	}
	return pass("rename, over a file, across directories, of a directory, onto a non-empty directory refused")
}

// rename2Case: RENAME_NOREPLACE and RENAME_EXCHANGE.
func (r *runner) rename2Case() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	d, undo, err := r.sub("rename2")
	if err != nil {
		return fail("%v", err)
	}
	defer undo()
	dir := d.Node
	if err := r.touch(dir, "x", "X"); err != nil {
		return fail("%v", err)
	}
	if err := r.touch(dir, "y", "Y"); err != nil {
		return fail("%v", err)
	}
	var notes []string
	err = r.renameHeld(dir, "x", dir, "y", renameNoreplace)
	switch {
	case errors.Is(err, syscall.EEXIST):
		if err := r.wantContent(dir, "y", "Y"); err != nil {
			return fail("after a refused RENAME_NOREPLACE: %v", err)
		}
		if err := r.rename(dir, "x", dir, "z", renameNoreplace); err != nil {
			return fail("%v", err)
		}
		if err := r.rename(dir, "z", dir, "x", 0); err != nil {
			return fail("%v", err)
		}
		notes = append(notes, "RENAME_NOREPLACE refused onto a file, done onto a free name")
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS):
		notes = append(notes, "RENAME_NOREPLACE not supported ("+errName(err)+")")
	case err == nil:
		return fail("RENAME_NOREPLACE onto an existing file succeeded")
	default:
		return fail("RENAME_NOREPLACE onto an existing file: %v, want EEXIST", err)
	}
	err = r.renameHeld(dir, "x", dir, "y", renameExchange)
	switch {
	case err == nil:
		if err := r.wantContent(dir, "x", "Y"); err != nil {
			return fail("after RENAME_EXCHANGE: %v", err)
		}
		if err := r.wantContent(dir, "y", "X"); err != nil {
			return fail("after RENAME_EXCHANGE: %v", err)
		}
		notes = append(notes, "RENAME_EXCHANGE swapped two files")
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS):
		notes = append(notes, "RENAME_EXCHANGE not supported ("+errName(err)+")")
	default:
		return fail("RENAME_EXCHANGE: %v", err)
	}
	if len(notes) == 2 && notes[0][len(notes[0])-1] == ')' && notes[1][len(notes[1])-1] == ')' {
		return skip("%s", join(notes))
	}
	return pass("%s", join(notes))
}

// linkCase: LINK raises the link count, UNLINK lowers it, and both names
// are one inode.
func (r *runner) linkCase() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	d, undo, err := r.sub("link")
	if err != nil {
		return fail("%v", err)
	}
	defer undo()
	dir := d.Node
	e, h, err := r.create(dir, "f")
	if err != nil {
		return fail("%v", err)
	}
	defer r.done(e, h)
	if e.Attr.Nlink != 1 {
		return fail("a new file has %d links, want 1", e.Attr.Nlink)
	}
	l, err := r.u.NodeLink(r.ctx, nil, e.Node, dir, "g")
	if unsupported(err) {
		return skip("LINK answered %s", errName(err))
	}
	if err != nil {
		return fail("LINK: %v", err)
	}
	defer r.u.NodeReclaim(r.ctx, l.Node, 1)
	if l.Attr.Ino != e.Attr.Ino || l.Attr.Nlink != 2 {
		return fail("LINK's entry: inode %d (want %d), %d links (want 2)", l.Attr.Ino, e.Attr.Ino, l.Attr.Nlink)
	}
	if a, err := r.getattr(e.Node); err != nil || a.Nlink != 2 {
		return fail("after LINK the file has %d links (%v), want 2", a.Nlink, err)
	}
	if err := r.writeAll(h, []byte("through f"), 0); err != nil {
		return fail("%v", err)
	}
	if err := r.wantContent(dir, "g", "through f"); err != nil {
		return fail("the second name: %v", err)
	}
	if err := r.unlink(dir, "g"); err != nil {
		return fail("UNLINK g: %v", err)
	}
	if a, err := r.getattr(e.Node); err != nil || a.Nlink != 1 {
		return fail("after UNLINK the file has %d links (%v), want 1", a.Nlink, err)
	}
	return pass("link count 1, 2 after LINK, 1 after UNLINK; both names one inode")
}

// symlinkCase: SYMLINK and READLINK agree, and the link's size is its
// target's length.
func (r *runner) symlinkCase() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	const target = "some/where/../odd target"
	e, err := r.u.NodeSymlink(r.ctx, nil, r.scratch, "link", target)
	if unsupported(err) {
		return skip("SYMLINK answered %s", errName(err))
	}
	if err != nil {
		return fail("SYMLINK: %v", err)
	}
	defer r.unlink(r.scratch, "link")
	defer r.u.NodeReclaim(r.ctx, e.Node, 1)
	if e.Attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return fail("SYMLINK's entry has mode %#o, not a link", e.Attr.Mode)
	}
	got, err := r.u.NodeReadlink(r.ctx, nil, e.Node)
	if err != nil {
		return fail("READLINK: %v", err)
	}
	if got != target {
		return fail("READLINK gave %q, want %q", got, target)
	}
	l, err := r.lookup(r.scratch, "link")
	if err != nil {
		return fail("%v", err)
	}
	r.u.NodeReclaim(r.ctx, l.Node, 1)
	if l.Attr.Size != uint64(len(target)) {
		return fail("the link's size is %d, want its target's length %d", l.Attr.Size, len(target))
	}
	return pass("READLINK gave the target back; size %d as its length", len(target))
}

// fifoCase: MKNOD of a FIFO.
func (r *runner) fifoCase() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	e, err := r.u.NodeMknod(r.ctx, nil, r.scratch, "fifo", syscall.S_IFIFO|0o644, 0, 0o022)
	if unsupported(err) {
		return skip("MKNOD of a FIFO answered %s", errName(err))
	}
	if err != nil {
		return fail("MKNOD: %v", err)
	}
	defer r.unlink(r.scratch, "fifo")
	defer r.u.NodeReclaim(r.ctx, e.Node, 1)
	if e.Attr.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		return fail("MKNOD's entry has mode %#o, not a FIFO", e.Attr.Mode)
	}
	a, err := r.getattr(e.Node)
	if err != nil {
		return fail("%v", err)
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFIFO || a.Mode&0o777 != 0o644 {
		return fail("GETATTR mode %#o, want a FIFO with 0644", a.Mode)
	}
	return pass("a FIFO with mode 0644")
}
