package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
)

func init() {
	register(&command{
		name:    "cp",
		args:    "[-r] [-p] SRC DST",
		summary: "copy out of the daemon's tree, or into it when DST starts with ':'",
		help: `A path starting with ':' is in the daemon's tree, any other is local:
  perfuse cp :/etc/motd ./motd -- DAEMON...     out (the ':' may be left off SRC)
  perfuse cp -r ./site :/www -- DAEMON...       in
When DST is an existing directory, SRC is copied into it under its own name.
-r copies directories and what they hold (symbolic links in them are copied as
links); -p keeps permission bits and access and modification times. A progress
bar (bytes, files, rate, time left) goes to stderr when it is a terminal.`,
		validate: validateCp,
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			c := &copier{}
			fl.BoolVar(&c.recursive, "r", false, "copy directories recursively")
			fl.BoolVar(&c.preserve, "p", false, "keep modes and times")
			return func(ctx context.Context, e *env, args []string) error {
				src, dst := args[0], args[1]
				c.e, c.ctx = e, ctx
				if strings.HasPrefix(dst, ":") {
					return c.copyIn(src, fsName(dst))
				}
				return c.copyOut(fsName(src), dst)
			}
		},
	})
}

func validateCp(args []string) error {
	if len(args) != 2 {
		return usagef("want SRC and DST, got %d arguments", len(args))
	}
	if strings.HasPrefix(args[0], ":") && strings.HasPrefix(args[1], ":") {
		return usagef("SRC and DST are both in the daemon's tree: one must be local")
	}
	return nil
}

type copier struct {
	recursive, preserve bool
	e                   *env
	ctx                 context.Context
	prog                *progress
}

// copyOut copies the daemon's src to the local dst.
func (c *copier) copyOut(src, dst string) error {
	fsys := c.e.fsys(c.ctx)
	st, err := fs.Stat(fsys, src)
	if err != nil {
		return err
	}
	if st.IsDir() && !c.recursive {
		return errorf("cp", src, fmt.Errorf("a directory (use -r): %w", syscall.EISDIR))
	}
	if info, err := os.Stat(dst); err == nil && info.IsDir() && src != "." {
		dst = filepath.Join(dst, path.Base(src))
	}
	if c.prog = newProgress(c.e.stderr); c.prog != nil {
		c.prog.total(fs.WalkDir(fsys, src, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if info, err := d.Info(); err == nil {
					c.prog.add(info.Size())
				}
			}
			return err
		}))
		defer c.prog.done()
	}
	return c.out(fsys, src, st, dst)
}

func (c *copier) out(fsys fs.FS, src string, st fs.FileInfo, dst string) error {
	a := st.Sys().(*perfuse.Attr)
	switch {
	case st.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		ents, err := fs.ReadDir(fsys, src)
		if err != nil {
			return err
		}
		for _, ent := range ents {
			p := path.Join(src, ent.Name())
			st, err := fs.Lstat(fsys, p)
			if err != nil {
				return err
			}
			if err := c.out(fsys, p, st, filepath.Join(dst, ent.Name())); err != nil {
				return err
			}
		}
		if c.preserve {
			if err := os.Chmod(dst, st.Mode().Perm()); err != nil {
				return err
			}
		}
	case st.Mode()&fs.ModeSymlink != 0:
		target, err := fs.ReadLink(fsys, src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case st.Mode().IsRegular():
		if err := c.fileOut(fsys, src, dst, st.Mode().Perm()); err != nil {
			return err
		}
	default:
		fmt.Fprintf(c.e.stderr, "perfuse cp: %s: %s not copied\n", slash(src), fileType(a.Mode))
		return nil
	}
	if c.preserve {
		return os.Chtimes(dst, time.Unix(int64(a.Atime), int64(a.Atimensec)), time.Unix(int64(a.Mtime), int64(a.Mtimensec)))
	}
	return nil
}

func (c *copier) fileOut(fsys fs.FS, src, dst string, perm fs.FileMode) error {
	in, err := fsys.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, c.prog.reader(in))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && c.preserve {
		err = os.Chmod(dst, perm)
	}
	c.prog.file()
	return err
}

// copyIn copies the local src into the daemon's tree at dst.
func (c *copier) copyIn(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() && !c.recursive {
		return &fs.PathError{Op: "cp", Path: src, Err: fmt.Errorf("a directory (use -r): %w", syscall.EISDIR)}
	}
	if n, err := c.e.lookup(c.ctx, dst); err == nil {
		isDir := n.attr.Mode&syscall.S_IFMT == syscall.S_IFDIR
		n.release(c.ctx)
		if isDir {
			dst = path.Join(dst, filepath.Base(src))
		}
	}
	if c.prog = newProgress(c.e.stderr); c.prog != nil {
		c.prog.total(filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if info, err := d.Info(); err == nil {
					c.prog.add(info.Size())
				}
			}
			return err
		}))
		defer c.prog.done()
	}
	return c.in(src, st, dst)
}

func (c *copier) in(src string, st fs.FileInfo, dst string) error {
	dir, base, err := c.e.parent(c.ctx, dst)
	if err != nil {
		return err
	}
	defer dir.release(c.ctx)
	u := c.e.d
	var ent *perfuse.Entry
	switch {
	case st.IsDir():
		ent, err = u.NodeMkdir(c.ctx, nil, dir.n, base, 0o755, 0o022)
		if errors.Is(err, syscall.EEXIST) {
			ent, err = u.NodeLookup(c.ctx, nil, dir.n, base)
			if err == nil && ent.Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
				u.NodeReclaim(c.ctx, ent.Node, 1)
				err = syscall.ENOTDIR
			}
		}
		if err != nil {
			return errorf("mkdir", dst, err)
		}
		defer u.NodeReclaim(c.ctx, ent.Node, 1)
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, de := range ents {
			p := filepath.Join(src, de.Name())
			info, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if err := c.in(p, info, path.Join(dst, de.Name())); err != nil {
				return err
			}
		}
	case st.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		ent, err := u.NodeSymlink(c.ctx, nil, dir.n, base, target)
		if err != nil {
			return errorf("symlink", dst, err)
		}
		u.NodeReclaim(c.ctx, ent.Node, 1)
		return nil
	case st.Mode().IsRegular():
		if ent, err = c.fileIn(src, dir.n, base, dst, st.Mode().Perm()); err != nil {
			return err
		}
		defer u.NodeReclaim(c.ctx, ent.Node, 1)
	default:
		fmt.Fprintf(c.e.stderr, "perfuse cp: %s: %v not copied\n", src, st.Mode().Type())
		return nil
	}
	if !c.preserve {
		return nil
	}
	in := &perfuse.SetAttrIn{}
	in.Valid = perfuse.FattrMode | perfuse.FattrAtime | perfuse.FattrMtime
	in.Mode = uint32(st.Mode().Perm())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		in.Atime, in.Atimensec = uint64(sys.Atim.Sec), uint32(sys.Atim.Nsec)
	}
	mt := st.ModTime()
	in.Mtime, in.Mtimensec = uint64(mt.Unix()), uint32(mt.Nanosecond())
	if _, err := u.NodeSetattr(c.ctx, nil, ent.Node, nil, in); err != nil {
		return errorf("setattr", dst, err)
	}
	return nil
}

// copyBuf is how much one write to the daemon carries (the op table cuts
// it to max_write).
const copyBuf = 1 << 20

func (c *copier) fileIn(src string, dir *perfuse.Node, base, dst string, perm fs.FileMode) (*perfuse.Entry, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	u := c.e.d
	ent, h, err := u.NodeCreate(c.ctx, nil, dir, base, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC, uint32(perm), 0o022)
	if err != nil {
		return nil, errorf("create", dst, err)
	}
	buf := make([]byte, copyBuf)
	var off int64
	r := c.prog.reader(f)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if _, err = u.NodeWrite(c.ctx, nil, h, buf[:n], off, 0, 0); err != nil {
				err = errorf("write", dst, err)
				break
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if cerr := u.NodeClose(c.ctx, nil, h, 0); err == nil && cerr != nil {
		err = errorf("close", dst, cerr)
	}
	c.prog.file()
	if err != nil {
		u.NodeReclaim(c.ctx, ent.Node, 1)
		return nil, err
	}
	return ent, nil
}
