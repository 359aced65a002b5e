package perfuse

import (
	"context"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS returns a read-only io/fs view of the daemon's tree, for tools and
// tests that walk it with the standard library (fs.WalkDir, fs.ReadFile,
// fstest.TestFS). Operations use ctx and the caller credentials cred (nil:
// root). Each open file or directory holds one lookup and one handle until
// it is closed; nothing else is left behind.
func (u *Usermount) FS(ctx context.Context, cred *Cred) fs.FS {
	return &iofs{u: u, ctx: ctx, cred: cred}
}

type iofs struct {
	u    *Usermount
	ctx  context.Context
	cred *Cred
}

// walk looks up each component of name from the root, returning the final
// node with one lookup held (none for the root) and its attributes.
func (f *iofs) walk(name string) (*Node, *fuse.Attr, error) {
	n := f.u.root
	if name == "." {
		a, err := f.u.NodeGetattr(f.ctx, f.cred, n, nil)
		if err != nil {
			return nil, nil, err
		}
		return n, &a.Attr, nil
	}
	var attr *fuse.Attr
	for _, part := range strings.Split(name, "/") {
		e, err := f.u.NodeLookup(f.ctx, f.cred, n, part)
		if n != f.u.root {
			f.u.NodeReclaim(f.ctx, n, 1)
		}
		if err != nil {
			return nil, nil, err
		}
		n, attr = e.Node, &e.Attr
	}
	return n, attr, nil
}

func (f *iofs) release(n *Node) {
	if n != f.u.root {
		f.u.NodeReclaim(f.ctx, n, 1)
	}
}

func (f *iofs) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	n, attr, err := f.walk(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	h, err := f.u.NodeOpen(f.ctx, f.cred, n, syscall.O_RDONLY)
	if err != nil {
		f.release(n)
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &iofile{fsys: f, name: name, node: n, h: h, attr: *attr}, nil
}

// iofile is an open file or directory of an iofs.
type iofile struct {
	fsys   *iofs
	name   string
	node   *Node
	h      *Handle
	attr   fuse.Attr
	off    int64
	cookie uint64
	eof    bool
	closed bool
}

func (f *iofile) Stat() (fs.FileInfo, error) {
	if f.closed {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: fs.ErrClosed}
	}
	a, err := f.fsys.u.NodeGetattr(f.fsys.ctx, f.fsys.cred, f.node, f.h)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: err}
	}
	return &fileInfo{name: path.Base(f.name), attr: a.Attr}, nil
}

func (f *iofile) Read(p []byte) (int, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	}
	if f.h.dir {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EISDIR}
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := f.fsys.u.NodeRead(f.fsys.ctx, f.fsys.cred, f.h, p, f.off)
	f.off += int64(n)
	if err != nil {
		return n, &fs.PathError{Op: "read", Path: f.name, Err: err}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// ReadDir streams entries from the daemon, resuming from the cookie of the
// last entry returned; "." and ".." are left out, as io/fs wants.
func (f *iofile) ReadDir(count int) ([]fs.DirEntry, error) {
	if f.closed {
		return nil, &fs.PathError{Op: "readdir", Path: f.name, Err: fs.ErrClosed}
	}
	if !f.h.dir {
		return nil, &fs.PathError{Op: "readdir", Path: f.name, Err: syscall.ENOTDIR}
	}
	var out []fs.DirEntry
	for !f.eof && (count <= 0 || len(out) < count) {
		err := f.fsys.u.NodeReaddir(f.fsys.ctx, f.fsys.cred, f.h, f.cookie, func(d Dirent) bool {
			f.cookie = d.Off
			if d.Name != "." && d.Name != ".." {
				out = append(out, &dirEntry{fsys: f.fsys, dir: f.name, d: d})
			}
			return count <= 0 || len(out) < count
		})
		if err != nil {
			return out, &fs.PathError{Op: "readdir", Path: f.name, Err: err}
		}
		if count <= 0 || len(out) < count {
			f.eof = true
		}
	}
	if count > 0 && len(out) == 0 {
		return nil, io.EOF
	}
	return out, nil
}

func (f *iofile) Close() error {
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	err := f.fsys.u.NodeRelease(f.fsys.ctx, f.h)
	f.fsys.release(f.node)
	if err != nil {
		return &fs.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

// dirEntry is one entry; Info looks it up when asked.
type dirEntry struct {
	fsys *iofs
	dir  string
	d    Dirent
}

func (e *dirEntry) Name() string      { return e.d.Name }
func (e *dirEntry) IsDir() bool       { return e.Type().IsDir() }
func (e *dirEntry) Type() fs.FileMode { return modeType(e.d.Type << 12) }
func (e *dirEntry) Info() (fs.FileInfo, error) {
	name := path.Join(e.dir, e.d.Name)
	n, attr, err := e.fsys.walk(name)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	e.fsys.release(n)
	return &fileInfo{name: e.d.Name, attr: *attr}, nil
}
func (e *dirEntry) String() string { return fs.FormatDirEntry(e) }

type fileInfo struct {
	name string
	attr fuse.Attr
}

func (i *fileInfo) Name() string { return i.name }
func (i *fileInfo) Size() int64  { return int64(i.attr.Size) }
func (i *fileInfo) Mode() fs.FileMode {
	return modeType(i.attr.Mode) | fs.FileMode(i.attr.Mode&0777) | modeBits(i.attr.Mode)
}
func (i *fileInfo) ModTime() time.Time {
	return time.Unix(int64(i.attr.Mtime), int64(i.attr.Mtimensec))
}
func (i *fileInfo) IsDir() bool    { return i.Mode().IsDir() }
func (i *fileInfo) Sys() any       { return &i.attr }
func (i *fileInfo) String() string { return fs.FormatFileInfo(i) }

// modeType maps S_IFMT bits to io/fs type bits.
func modeType(mode uint32) fs.FileMode {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return fs.ModeDir
	case syscall.S_IFLNK:
		return fs.ModeSymlink
	case syscall.S_IFIFO:
		return fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		return fs.ModeSocket
	case syscall.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		return fs.ModeDevice
	}
	return 0
}

func modeBits(mode uint32) fs.FileMode {
	var m fs.FileMode
	if mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}
