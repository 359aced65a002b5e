package perfuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"
)

// FS returns a read-only io/fs view of the daemon's tree, for tools and
// tests that walk it with the standard library (fs.WalkDir, fs.ReadFile,
// fstest.TestFS). Operations use ctx and the caller credentials cred (nil:
// root). Each open file or directory holds one lookup and one handle until
// it is closed; nothing else is left behind.
//
// The view is also an fs.StatFS, an fs.ReadLinkFS and an fs.SubFS. Open
// and Stat follow symbolic links, and every path follows those in its
// directories, as the kernel would: at most 40 per path, then ELOOP. A
// link resolves inside the view: one with an absolute target, or whose
// ".." climbs above the view's root, is not followed and reads as missing
// (an error wrapping ENOENT, so fs.ErrNotExist, as in fstest.MapFS). Lstat
// and ReadLink do not follow a path's last link. A view made by Sub shares
// its parent's root for links, as fs.Sub's generic view does.
//
// Directory entries the daemon lists with type unknown (DT_UNKNOWN, as
// sshfs answers from its cache) are looked up before ReadDir returns them,
// and the lookup is given back at once.
//
// A fifo, socket or device opens without a request to the daemon (the
// kernel sends none either, and a daemon's open(2) of a fifo would
// block); Stat works and Read fails with EOPNOTSUPP.
//
// A FileInfo's Sys is its node's attributes, an *Attr.
//
// Errors are *fs.PathError values naming the operation and the caller's
// path, wrapping the daemon's errno. The view may be used by several
// goroutines at once; each of its open files by one at a time.
func (u *Usermount) FS(ctx context.Context, cred *Cred) fs.FS {
	return &iofs{u: u, ctx: ctx, cred: cred}
}

type iofs struct {
	u    *Usermount
	ctx  context.Context
	cred *Cred
	// prefix is the directory of a Sub view, "" for the whole view.
	prefix string
}

// maxLinks is how many symbolic links one path may follow (Linux's
// MAXSYMLINKS).
const maxLinks = 40

// errOutside is why a link that leads out of the view is not followed.
var errOutside = fmt.Errorf("perfuse: symbolic link leads outside the io/fs view: %w", syscall.ENOENT)

// step is a directory walked by resolve, holding one lookup.
type step struct {
	n    *Node
	attr Attr
}

// validPath is fs.ValidPath but for UTF-8: a FUSE name is any bytes but
// "/" and NUL, and a file named in Latin-1 must be as reachable as it is
// listed.
func validPath(name string) bool {
	return fs.ValidPath(strings.ToValidUTF8(name, "_"))
}

// resolve checks name and walks it from the view's root, following the
// links on the way, and the last one too when follow is set. It returns
// the node reached with one lookup held (none for the root) and its
// attributes; an error is a *fs.PathError for op and name.
func (f *iofs) resolve(op, name string, follow bool) (*Node, Attr, error) {
	if !validPath(name) {
		return nil, Attr{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	n, attr, err := f.walk(path.Join(f.prefix, name), follow)
	if err != nil {
		return nil, attr, pathError(op, name, err)
	}
	return n, attr, nil
}

// walk does resolve's work on a path relative to the view's root. The
// directories walked stay held on a stack, so that a ".." in a link's
// target goes back to the directory the walk came through, as in the
// kernel, with no LOOKUP of "..".
func (f *iofs) walk(name string, follow bool) (*Node, Attr, error) {
	var stack []step
	defer func() {
		for _, s := range stack {
			f.release(s.n)
		}
	}()
	var todo []string
	if name != "." {
		todo = strings.Split(name, "/")
	}
	links := 0
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		dir := f.u.root
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			if top.attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
				return nil, Attr{}, syscall.ENOTDIR
			}
			dir = top.n
		}
		switch part {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return nil, Attr{}, errOutside
			}
			f.release(stack[len(stack)-1].n)
			stack = stack[:len(stack)-1]
			continue
		}
		e, err := f.u.NodeLookup(f.ctx, f.cred, dir, part)
		if err != nil {
			return nil, Attr{}, err
		}
		// A trailing "" (a target ending in "/") follows the link too.
		if e.Attr.Mode&syscall.S_IFMT != syscall.S_IFLNK || (len(todo) == 0 && !follow) {
			stack = append(stack, step{e.Node, e.Attr})
			continue
		}
		if links++; links > maxLinks {
			f.release(e.Node)
			return nil, Attr{}, syscall.ELOOP
		}
		target, err := f.u.NodeReadlink(f.ctx, f.cred, e.Node)
		f.release(e.Node)
		if err != nil {
			return nil, Attr{}, err
		}
		if path.IsAbs(target) {
			return nil, Attr{}, errOutside
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	if len(stack) == 0 {
		a, err := f.u.NodeGetattr(f.ctx, f.cred, f.u.root, nil)
		if err != nil {
			return nil, Attr{}, err
		}
		return f.u.root, a.Attr, nil
	}
	last := stack[len(stack)-1]
	stack = stack[:len(stack)-1]
	return last.n, last.attr, nil
}

// pathError wraps err for op and name; a negative entry is plain ENOENT.
func pathError(op, name string, err error) error {
	var neg *NegativeEntry
	if errors.As(err, &neg) {
		err = syscall.ENOENT
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

func (f *iofs) release(n *Node) {
	if n != f.u.root {
		f.u.NodeReclaim(f.ctx, n, 1)
	}
}

func (f *iofs) Open(name string) (fs.File, error) {
	n, attr, err := f.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	file := &iofile{fsys: f, name: name, node: n}
	// The kernel never sends OPEN for a fifo, socket or device (a
	// daemon's open(2) of a fifo would block), so neither does the view.
	if t := attr.Mode & syscall.S_IFMT; t == syscall.S_IFREG || t == syscall.S_IFDIR {
		file.h, err = f.u.NodeOpen(f.ctx, f.cred, n, syscall.O_RDONLY)
		if err != nil {
			f.release(n)
			return nil, pathError("open", name, err)
		}
	}
	return file, nil
}

// Stat returns the attributes of name, following links.
func (f *iofs) Stat(name string) (fs.FileInfo, error) {
	return f.stat("stat", name, true)
}

// Lstat returns the attributes of name; a last link is not followed.
func (f *iofs) Lstat(name string) (fs.FileInfo, error) {
	return f.stat("lstat", name, false)
}

func (f *iofs) stat(op, name string, follow bool) (fs.FileInfo, error) {
	n, attr, err := f.resolve(op, name, follow)
	if err != nil {
		return nil, err
	}
	f.release(n)
	return &fileInfo{name: path.Base(name), attr: attr}, nil
}

// ReadLink returns the target of the link name, as the daemon stores it.
func (f *iofs) ReadLink(name string) (string, error) {
	n, attr, err := f.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	defer f.release(n)
	if attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: syscall.EINVAL}
	}
	target, err := f.u.NodeReadlink(f.ctx, f.cred, n)
	if err != nil {
		return "", pathError("readlink", name, err)
	}
	return target, nil
}

// Sub returns the view of the directory dir. Like fs.Sub, it does not
// check that dir exists.
func (f *iofs) Sub(dir string) (fs.FS, error) {
	if !validPath(dir) {
		return nil, &fs.PathError{Op: "sub", Path: dir, Err: fs.ErrInvalid}
	}
	if dir == "." {
		return f, nil
	}
	sub := *f
	sub.prefix = path.Join(f.prefix, dir)
	return &sub, nil
}

// iofile is an open file or directory of an iofs; h is nil for a special
// file.
type iofile struct {
	fsys   *iofs
	name   string
	node   *Node
	h      *Handle
	off    int64
	cookie uint64
	// resumed are the cookies the listing resumed from: one that comes
	// again means the daemon's cookies cycle (NodeReaddir sees it only
	// within one call).
	resumed map[uint64]bool
	eof     bool
	closed  bool
}

func (f *iofile) Stat() (fs.FileInfo, error) {
	if f.closed {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: fs.ErrClosed}
	}
	a, err := f.fsys.u.NodeGetattr(f.fsys.ctx, f.fsys.cred, f.node, f.h)
	if err != nil {
		return nil, pathError("stat", f.name, err)
	}
	return &fileInfo{name: path.Base(f.name), attr: a.Attr}, nil
}

func (f *iofile) Read(p []byte) (int, error) {
	switch {
	case f.closed:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	case f.h == nil:
		// The data of a special file is not the daemon's to serve.
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EOPNOTSUPP}
	case f.h.dir:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EISDIR}
	case len(p) == 0:
		return 0, nil
	}
	n, err := f.fsys.u.NodeRead(f.fsys.ctx, f.fsys.cred, f.h, p, f.off)
	f.off += int64(n)
	if err != nil {
		return n, pathError("read", f.name, err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt: fewer only at end of
// file (io.EOF) or on error. It does not move the offset Read uses.
func (f *iofile) ReadAt(p []byte, off int64) (int, error) {
	switch {
	case f.closed:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	case f.h == nil:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EOPNOTSUPP}
	case f.h.dir:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EISDIR}
	case off < 0:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EINVAL}
	}
	n, err := f.fsys.u.NodeRead(f.fsys.ctx, f.fsys.cred, f.h, p, off)
	switch {
	case err != nil:
		return n, pathError("read", f.name, err)
	case n < len(p):
		return n, io.EOF
	}
	return n, nil
}

// Seek sets the offset of the next Read, as io.Seeker; io.SeekEnd asks
// the daemon for the size. (http.FileServerFS serves ranges through it.)
func (f *iofile) Seek(offset int64, whence int) (int64, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrClosed}
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		a, err := f.fsys.u.NodeGetattr(f.fsys.ctx, f.fsys.cred, f.node, f.h)
		if err != nil {
			return 0, pathError("seek", f.name, err)
		}
		offset += int64(a.Size)
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: syscall.EINVAL}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: syscall.EINVAL}
	}
	f.off = offset
	return offset, nil
}

// ReadDir streams entries from the daemon, resuming from the cookie of the
// last entry returned; "." and ".." are left out, as io/fs wants.
func (f *iofile) ReadDir(count int) ([]fs.DirEntry, error) {
	if f.closed {
		return nil, &fs.PathError{Op: "readdir", Path: f.name, Err: fs.ErrClosed}
	}
	if f.h == nil || !f.h.dir {
		return nil, &fs.PathError{Op: "readdir", Path: f.name, Err: syscall.ENOTDIR}
	}
	var out []fs.DirEntry
	for !f.eof && (count <= 0 || len(out) < count) {
		if f.resumed == nil {
			f.resumed = map[uint64]bool{}
		}
		if f.resumed[f.cookie] {
			return out, pathError("readdir", f.name, fmt.Errorf("perfuse: readdir cookie %d came back: the daemon's cookies cycle: %w", f.cookie, syscall.EIO))
		}
		f.resumed[f.cookie] = true
		var batch []Dirent
		stopped := false
		err := f.fsys.u.NodeReaddir(f.fsys.ctx, f.fsys.cred, f.h, f.cookie, func(d Dirent) bool {
			if count > 0 && len(out)+len(batch) >= count {
				stopped = true
				return false
			}
			f.cookie = d.Off
			if d.Name != "." && d.Name != ".." {
				batch = append(batch, d)
			}
			return true
		})
		f.eof = err == nil && !stopped
		// Types are resolved once the listing is read, never from
		// inside it.
		for _, d := range batch {
			if d.Type == 0 {
				ok, err := f.resolveType(&d)
				if err != nil {
					return out, pathError("readdir", f.name, err)
				}
				if !ok {
					continue
				}
			}
			out = append(out, &dirEntry{fsys: f.fsys, dir: f.name, d: d})
		}
		if err != nil {
			return out, pathError("readdir", f.name, err)
		}
	}
	if count > 0 && len(out) == 0 {
		return nil, io.EOF
	}
	return out, nil
}

// resolveType looks up an entry listed with type DT_UNKNOWN to learn its
// type, and gives the lookup back. An entry gone since the listing is
// left out (ok false), as os.ReadDir does.
func (f *iofile) resolveType(d *Dirent) (ok bool, err error) {
	e, err := f.fsys.u.NodeLookup(f.fsys.ctx, f.fsys.cred, f.node, d.Name)
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f.fsys.release(e.Node)
	d.Type = e.Attr.Mode & syscall.S_IFMT >> 12
	return true, nil
}

func (f *iofile) Close() error {
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	var err error
	if f.h != nil {
		err = f.fsys.u.NodeRelease(f.fsys.ctx, f.h)
	}
	f.fsys.release(f.node)
	if err != nil {
		return pathError("close", f.name, err)
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

// Info describes the entry itself, a link not followed, as os.ReadDir's.
func (e *dirEntry) Info() (fs.FileInfo, error) {
	return e.fsys.Lstat(path.Join(e.dir, e.d.Name))
}
func (e *dirEntry) String() string { return fs.FormatDirEntry(e) }

type fileInfo struct {
	name string
	attr Attr
}

func (i *fileInfo) Name() string { return i.name }
func (i *fileInfo) Size() int64  { return int64(i.attr.Size) }
func (i *fileInfo) Mode() fs.FileMode {
	return FileMode(i.attr.Mode)
}
func (i *fileInfo) ModTime() time.Time {
	return time.Unix(int64(i.attr.Mtime), int64(i.attr.Mtimensec))
}
func (i *fileInfo) IsDir() bool    { return i.Mode().IsDir() }
func (i *fileInfo) Sys() any       { return &i.attr }
func (i *fileInfo) String() string { return fs.FormatFileInfo(i) }

// modeType maps S_IFMT bits to io/fs type bits.
// FileMode converts a FUSE (stat(2)) mode, type and permission bits, to
// an fs.FileMode.
func FileMode(mode uint32) fs.FileMode {
	return modeType(mode) | fs.FileMode(mode&0o777) | modeBits(mode)
}

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
