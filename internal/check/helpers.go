package check

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"github.com/perfuse-go/perfuse"
)

// pattern is n bytes that differ with seed and offset.
func pattern(seed, off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint32(seed)*2654435761 + uint32(off+i)*40503
		b[i] = byte(x>>13) ^ byte(off+i)
	}
	return b
}

// create makes and opens name in dir for reading and writing.
func (r *runner) create(dir *perfuse.Node, name string) (*perfuse.Entry, *perfuse.Handle, error) {
	e, h, err := r.u.NodeCreate(r.ctx, nil, dir, name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL, 0o644, 0o022)
	if err != nil {
		return nil, nil, fmt.Errorf("CREATE %s: %w", name, err)
	}
	return e, h, nil
}

// writeAll writes p at off, failing on a short write.
func (r *runner) writeAll(h *perfuse.Handle, p []byte, off int64) error {
	n, err := r.u.NodeWrite(r.ctx, nil, h, p, off, 0, 0)
	if err != nil {
		return fmt.Errorf("WRITE %d bytes at %d: %w", len(p), off, err)
	}
	if n != len(p) {
		return fmt.Errorf("WRITE %d bytes at %d: wrote %d", len(p), off, n)
	}
	return nil
}

// readAt reads up to n bytes at off, as many READs as it takes (a READ
// may return less than asked only at end of file).
func (r *runner) readAt(h *perfuse.Handle, off int64, n int) ([]byte, error) {
	buf := make([]byte, n)
	got := 0
	for got < n {
		m, err := r.u.NodeRead(r.ctx, nil, h, buf[got:], off+int64(got))
		if err != nil {
			return nil, fmt.Errorf("READ %d bytes at %d: %w", n-got, off+int64(got), err)
		}
		if m == 0 {
			break
		}
		got += m
	}
	return buf[:got], nil
}

// truncate sets h's file size.
func (r *runner) truncate(n *perfuse.Node, h *perfuse.Handle, size int64) error {
	in := &perfuse.SetAttrIn{}
	in.Valid = perfuse.FattrSize
	in.Size = uint64(size)
	if h != nil {
		in.Valid |= perfuse.FattrFh
		in.Fh = h.Fh()
	}
	out, err := r.u.NodeSetattr(r.ctx, nil, n, h, in)
	if err != nil {
		return fmt.Errorf("SETATTR size %d: %w", size, err)
	}
	if out.Size != uint64(size) {
		return fmt.Errorf("SETATTR size %d: reply says size %d", size, out.Size)
	}
	return nil
}

// getattr returns n's attributes.
func (r *runner) getattr(n *perfuse.Node) (perfuse.Attr, error) {
	out, err := r.u.NodeGetattr(r.ctx, nil, n, nil)
	if err != nil {
		return perfuse.Attr{}, fmt.Errorf("GETATTR: %w", err)
	}
	return out.Attr, nil
}

// done closes h and gives e back.
func (r *runner) done(e *perfuse.Entry, h *perfuse.Handle) {
	if h != nil {
		r.u.NodeClose(r.ctx, nil, h, 0)
	}
	if e != nil {
		r.u.NodeReclaim(r.ctx, e.Node, 1)
	}
}

// lookup looks name up in dir, with the error naming it.
func (r *runner) lookup(dir *perfuse.Node, name string) (*perfuse.Entry, error) {
	e, err := r.u.NodeLookup(r.ctx, nil, dir, name)
	if err != nil {
		return nil, fmt.Errorf("LOOKUP %s: %w", name, err)
	}
	return e, nil
}

// exists reports whether name is in dir (its lookup given back).
func (r *runner) exists(dir *perfuse.Node, name string) (bool, error) {
	e, err := r.u.NodeLookup(r.ctx, nil, dir, name)
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("LOOKUP %s: %w", name, err)
	}
	r.u.NodeReclaim(r.ctx, e.Node, 1)
	return true, nil
}

// mkdir makes the directory name in dir.
func (r *runner) mkdir(dir *perfuse.Node, name string) (*perfuse.Entry, error) {
	e, err := r.u.NodeMkdir(r.ctx, nil, dir, name, 0o755, 0o022)
	if err != nil {
		return nil, fmt.Errorf("MKDIR %s: %w", name, err)
	}
	return e, nil
}

// names lists dir's entries but "." and "..".
func (r *runner) names(dir *perfuse.Node) ([]perfuse.Dirent, error) {
	h, err := r.u.NodeOpen(r.ctx, nil, dir, syscall.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("OPENDIR: %w", err)
	}
	defer r.u.NodeRelease(r.ctx, h)
	var out []perfuse.Dirent
	err = r.u.NodeReaddir(r.ctx, nil, h, 0, func(d perfuse.Dirent) bool {
		if d.Name != "." && d.Name != ".." {
			out = append(out, d)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("READDIR: %w", err)
	}
	return out, nil
}

// removeAll removes name from dir, and all under it.
func (r *runner) removeAll(dir *perfuse.Node, name string) error {
	e, err := r.u.NodeLookup(r.ctx, nil, dir, name)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("LOOKUP %s: %w", name, err)
	}
	defer r.u.NodeReclaim(r.ctx, e.Node, 1)
	if e.Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		if err := r.u.NodeRemove(r.ctx, nil, dir, name); err != nil {
			return fmt.Errorf("UNLINK %s: %w", name, err)
		}
		return nil
	}
	ents, err := r.names(e.Node)
	if err != nil {
		return err
	}
	for _, d := range ents {
		if err := r.removeAll(e.Node, d.Name); err != nil {
			return fmt.Errorf("%s/%w", name, err)
		}
	}
	if err := r.u.NodeRmdir(r.ctx, nil, dir, name); err != nil {
		return fmt.Errorf("RMDIR %s: %w", name, err)
	}
	return nil
}

// maxWalkDirs bounds the directories a read-only run looks through.
const maxWalkDirs = 2000

// regularFiles walks the daemon's tree through the io/fs view for up to
// max regular files, and the directory with the most entries.
func (r *runner) regularFiles(max int) (files []string, bigDir string, bigN int, err error) {
	fsys := r.u.FS(r.ctx, nil)
	bigDir = "."
	dirs, empty := 0, 0
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if dirs++; dirs > maxWalkDirs {
				return fs.SkipAll
			}
			ents, err := fs.ReadDir(fsys, p)
			if err != nil {
				return err
			}
			if len(ents) > bigN {
				bigDir, bigN = p, len(ents)
			}
			if path.Base(p) == r.name {
				return fs.SkipDir
			}
		} else if d.Type().IsRegular() && len(files) < max {
			// Empty files say little: a few only.
			if info, err := d.Info(); err == nil && (info.Size() > 0 || empty < 3) {
				files = append(files, p)
				if info.Size() == 0 {
					empty++
				}
			}
		}
		return nil
	})
	return files, bigDir, bigN, err
}

// lookupPath looks an io/fs name up from the root, component by
// component, giving back the lookups on the way.
func (r *runner) lookupPath(name string) (*perfuse.Entry, error) {
	dir := r.u.Root()
	var cur *perfuse.Entry
	for _, part := range strings.Split(name, "/") {
		e, err := r.lookup(dir, part)
		if cur != nil {
			r.u.NodeReclaim(r.ctx, cur.Node, 1)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		cur, dir = e, e.Node
	}
	return cur, nil
}

// hold looks the names up in their directories, as the kernel holds the
// dentries of the names a namespace operation changes, and returns the
// function giving them back. Daemons may assume it: fuse-overlayfs 1.10
// aborts with a double free on UNLINK of a name whose node it was told to
// forget. Names that do not exist are left out.
func (r *runner) hold(pairs ...any) func() {
	var held []*perfuse.Node
	for i := 0; i+1 < len(pairs); i += 2 {
		e, err := r.u.NodeLookup(r.ctx, nil, pairs[i].(*perfuse.Node), pairs[i+1].(string))
		if err == nil {
			held = append(held, e.Node)
		}
	}
	return func() {
		for _, n := range held {
			r.u.NodeReclaim(r.ctx, n, 1)
		}
	}
}

// unlink removes the file name from dir, holding its lookup meanwhile.
func (r *runner) unlink(dir *perfuse.Node, name string) error {
	defer r.hold(dir, name)()
	return r.u.NodeRemove(r.ctx, nil, dir, name)
}

// renameHeld renames with the lookups of both names held.
func (r *runner) renameHeld(od *perfuse.Node, on string, nd *perfuse.Node, nn string, flags uint32) error {
	defer r.hold(od, on, nd, nn)()
	return r.u.NodeRename(r.ctx, nil, od, on, nd, nn, flags)
}
