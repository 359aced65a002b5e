package nfsexport

import (
	"encoding/hex"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/perfuse-go/perfuse"
	nfs "github.com/willscott/go-nfs"
	"github.com/willscott/go-nfs/file"
)

// fsys is the daemon's tree as go-nfs's billy.Filesystem, seen from one
// directory (the export's root, or the directory a client mounted).
//
// go-nfs names files by paths: the []string a handle turns into, joined.
// Here a path starts with tokens, each naming a held node by its nodeid
// (what FromHandle gives), followed by names looked up from there; so a
// handle keeps naming its node through renames, as NFS wants, and no path
// is walked from the root again.
type fsys struct {
	s    *Server
	root *ref
}

var (
	_ billy.Filesystem = (*fsys)(nil)
	_ billy.Change     = (*fsys)(nil)
	_ billy.Capable    = (*fsys)(nil)
)

// tokenMark starts a token: NUL, which no FUSE name holds. A token also
// carries the server's secret, so a name sent by a client can never pass
// for one.
const tokenMark = "\x00"

// badName replaces a path whose names could not be joined safely (one
// holding "/" or NUL): it resolves to EINVAL.
const badName = tokenMark + "!"

func (f *fsys) token(id uint64) string {
	return tokenMark + f.s.secret + strconv.FormatUint(id, 16)
}

func (f *fsys) parseToken(c string) (uint64, bool) {
	rest, ok := strings.CutPrefix(c, tokenMark+f.s.secret)
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(rest, 16, 64)
	return id, err == nil
}

func newSecret() string {
	var b [8]byte
	if _, err := randRead(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:]) + ":"
}

// Join joins path elements with "/". It does not clean them: "." and ".."
// are go-nfs's to interpret.
func (f *fsys) Join(elem ...string) string {
	var parts []string
	for _, e := range elem {
		if e == "" {
			continue
		}
		if _, ok := f.parseToken(e); !ok && strings.ContainsAny(e, "/\x00") {
			return badName
		}
		parts = append(parts, e)
	}
	return strings.Join(parts, "/")
}

// resolve returns the ref p names.
func (f *fsys) resolve(p string) (*ref, error) {
	cur := f.root
	for c := range strings.SplitSeq(p, "/") {
		if c == "" {
			continue
		}
		if strings.HasPrefix(c, tokenMark) {
			id, ok := f.parseToken(c)
			if !ok {
				return nil, syscall.EINVAL
			}
			if cur = f.s.table.byID(id); cur == nil {
				return nil, syscall.ESTALE
			}
			continue
		}
		var err error
		if cur, err = f.s.child(cur, c); err != nil {
			return nil, err
		}
	}
	return cur, nil
}

// split resolves the directory of p and returns it with p's last name.
func (f *fsys) split(p string) (*ref, string, error) {
	dir, name := path.Split(p)
	if name == "" || strings.HasPrefix(name, tokenMark) || name == "." || name == ".." {
		return nil, "", syscall.EINVAL
	}
	d, err := f.resolve(dir)
	return d, name, err
}

func (f *fsys) Stat(p string) (os.FileInfo, error) { return f.Lstat(p) }
func (f *fsys) Lstat(p string) (os.FileInfo, error) {
	r, err := f.resolve(p)
	if err != nil {
		return nil, pathError("lstat", p, err)
	}
	a, err := f.s.attr(r)
	if err != nil {
		return nil, pathError("lstat", p, err)
	}
	return newInfo(path.Base(p), r, a), nil
}

// Create makes p private to its owner: go-nfs sets the client's mode
// right after.
func (f *fsys) Create(p string) (billy.File, error) {
	return f.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
}

func (f *fsys) Open(p string) (billy.File, error) { return f.OpenFile(p, os.O_RDONLY, 0) }

// OpenFile opens p. With O_CREATE it makes p if missing, but never
// truncates it: go-nfs creates through here, and NFS's CREATE truncates
// only when the client asks for size 0, which comes as a SETATTR.
//
// Errors of an open for writing carry their NFS status (go-nfs sends those
// of SETATTR's truncation on unchanged); those of an open for reading are
// *os.PathError values, which go-nfs's READ tells apart.
func (f *fsys) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	o, err := f.openFile(p, flag, perm)
	if err != nil && flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE) != 0 {
		err = statusError(err)
	}
	return o, err
}

func (f *fsys) openFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 && f.s.ro {
		return nil, pathError("open", p, syscall.EROFS)
	}
	flag &^= os.O_TRUNC
	if flag&os.O_CREATE != 0 {
		dir, name, err := f.split(p)
		if err != nil {
			return nil, pathError("create", p, err)
		}
		e, h, err := f.s.u.NodeCreate(f.s.ctx, f.s.cred, dir.node, name, flag&^os.O_CREATE, uint32(perm.Perm()), 0)
		if err != nil {
			return nil, pathError("create", p, err)
		}
		r := f.s.table.hold(e, dir, name)
		f.s.table.stale(dir)
		f.s.table.pin(r)
		return &openFile{f: f, r: r, h: h, path: p}, nil
	}
	r, err := f.resolve(p)
	if err != nil {
		return nil, pathError("open", p, err)
	}
	if r.node.IsDir() {
		// As open(2); and go-nfs's SETATTR would not close the directory
		// after its truncation failed.
		return nil, pathError("open", p, syscall.EISDIR)
	}
	f.s.table.pin(r)
	h, err := f.s.u.NodeOpen(f.s.ctx, f.s.cred, r.node, flag)
	if err != nil {
		f.s.table.unpin(r)
		return nil, pathError("open", p, err)
	}
	return &openFile{f: f, r: r, h: h, path: p}, nil
}

func (f *fsys) Rename(from, to string) error {
	if f.s.ro {
		return pathError("rename", from, syscall.EROFS)
	}
	od, on, err := f.split(from)
	if err != nil {
		return pathError("rename", from, err)
	}
	nd, nn, err := f.split(to)
	if err != nil {
		return pathError("rename", to, err)
	}
	moving, _ := f.s.child(od, on)
	if err := f.s.u.NodeRename(f.s.ctx, f.s.cred, od.node, on, nd.node, nn, 0); err != nil {
		return pathError("rename", from, err)
	}
	f.s.table.unname(od, on)
	f.s.table.unname(nd, nn)
	f.s.table.stale(od)
	f.s.table.stale(nd)
	if moving != nil {
		f.s.table.moved(moving, nd, nn)
	}
	return nil
}

// Remove removes the file or empty directory p (go-nfs serves REMOVE and
// RMDIR with it).
func (f *fsys) Remove(p string) error {
	if f.s.ro {
		return pathError("remove", p, syscall.EROFS)
	}
	dir, name, err := f.split(p)
	if err != nil {
		return pathError("remove", p, err)
	}
	victim, err := f.s.child(dir, name)
	if err != nil {
		return pathError("remove", p, err)
	}
	a, _ := f.s.table.cachedAttr(victim)
	isDir := victim.node.IsDir()
	if isDir {
		err = f.s.u.NodeRmdir(f.s.ctx, f.s.cred, dir.node, name)
	} else {
		err = f.s.u.NodeRemove(f.s.ctx, f.s.cred, dir.node, name)
	}
	if err != nil {
		return pathError("remove", p, err)
	}
	f.s.table.unname(dir, name)
	f.s.table.stale(dir)
	if isDir || a.Nlink <= 1 {
		// Its last name is gone: a handle to it is stale now.
		f.s.table.drop(victim)
	} else {
		f.s.table.stale(victim)
	}
	return nil
}

func (f *fsys) TempFile(dir, prefix string) (billy.File, error) {
	return nil, pathError("tempfile", dir, syscall.ENOTSUP)
}

func (f *fsys) ReadDir(p string) ([]os.FileInfo, error) {
	r, err := f.resolve(p)
	if err != nil {
		return nil, pathError("readdir", p, err)
	}
	infos, err := f.s.readDir(r)
	return infos, pathError("readdir", p, err)
}

// MkdirAll makes the directory p; its parent must exist (go-nfs's MKDIR
// makes one directory).
func (f *fsys) MkdirAll(p string, perm os.FileMode) error {
	if f.s.ro {
		return pathError("mkdir", p, syscall.EROFS)
	}
	dir, name, err := f.split(p)
	if err != nil {
		return pathError("mkdir", p, err)
	}
	e, err := f.s.u.NodeMkdir(f.s.ctx, f.s.cred, dir.node, name, uint32(perm.Perm()), 0)
	if err != nil {
		return pathError("mkdir", p, err)
	}
	f.s.table.hold(e, dir, name)
	f.s.table.stale(dir) // its mtime changed
	return nil
}

func (f *fsys) Symlink(target, link string) error {
	if f.s.ro {
		return pathError("symlink", link, syscall.EROFS)
	}
	dir, name, err := f.split(link)
	if err != nil {
		return pathError("symlink", link, err)
	}
	e, err := f.s.u.NodeSymlink(f.s.ctx, f.s.cred, dir.node, name, target)
	if err != nil {
		return pathError("symlink", link, err)
	}
	f.s.table.hold(e, dir, name)
	f.s.table.stale(dir) // its mtime changed
	return nil
}

func (f *fsys) Readlink(p string) (string, error) {
	r, err := f.resolve(p)
	if err != nil {
		return "", pathError("readlink", p, err)
	}
	s, err := f.s.u.NodeReadlink(f.s.ctx, f.s.cred, r.node)
	return s, pathError("readlink", p, err)
}

// Chroot returns the tree seen from the directory p: what a client that
// mounts p gets.
func (f *fsys) Chroot(p string) (billy.Filesystem, error) {
	r, err := f.resolve(p)
	if err != nil {
		return nil, pathError("chroot", p, err)
	}
	if !r.node.IsDir() {
		return nil, pathError("chroot", p, syscall.ENOTDIR)
	}
	return &fsys{s: f.s, root: r}, nil
}

func (f *fsys) Root() string { return "/" }

// Capabilities leaves out writing for a read-only export: go-nfs then
// refuses every change with NFS3ERR_ROFS before it reaches the daemon.
func (f *fsys) Capabilities() billy.Capability {
	if f.s.ro {
		return billy.ReadCapability | billy.SeekCapability
	}
	return billy.DefaultCapabilities
}

// The billy.Change methods: SETATTR. go-nfs sends their errors on as
// they are, so these carry the errno's own NFS status.

func (f *fsys) Chmod(p string, mode os.FileMode) error {
	return f.setattr(p, &perfuse.SetAttrIn{Valid: perfuse.FattrMode, Mode: unixMode(mode)})
}

func (f *fsys) Lchown(p string, uid, gid int) error {
	in := perfuse.SetAttrIn{}
	if uid >= 0 {
		in.Valid |= perfuse.FattrUid
		in.Owner.Uid = uint32(uid)
	}
	if gid >= 0 {
		in.Valid |= perfuse.FattrGid
		in.Owner.Gid = uint32(gid)
	}
	return f.setattr(p, &in)
}

func (f *fsys) Chown(p string, uid, gid int) error { return f.Lchown(p, uid, gid) }

func (f *fsys) Chtimes(p string, atime, mtime time.Time) error {
	in := perfuse.SetAttrIn{Valid: perfuse.FattrAtime | perfuse.FattrMtime}
	in.Atime, in.Atimensec = uint64(atime.Unix()), uint32(atime.Nanosecond())
	in.Mtime, in.Mtimensec = uint64(mtime.Unix()), uint32(mtime.Nanosecond())
	return f.setattr(p, &in)
}

func (f *fsys) setattr(p string, in *perfuse.SetAttrIn) error {
	if f.s.ro {
		return statusError(syscall.EROFS)
	}
	r, err := f.resolve(p)
	if err != nil {
		return statusError(err)
	}
	out, err := f.s.u.NodeSetattr(f.s.ctx, f.s.cred, r.node, nil, in)
	if err != nil {
		return statusError(pathError("setattr", p, err))
	}
	f.s.table.setAttr(r, out)
	return nil
}

// info is a node's attributes as go-nfs reads them: the type and mode
// bits, and through Sys the owner, links, device and file id.
type info struct {
	name string
	attr perfuse.Attr
	id   uint64
}

func newInfo(name string, r *ref, a perfuse.Attr) *info {
	id := a.Ino
	if id == 0 {
		id = r.id()
	}
	return &info{name: name, attr: a, id: id}
}

func (i *info) Name() string       { return i.name }
func (i *info) Size() int64        { return int64(i.attr.Size) }
func (i *info) ModTime() time.Time { return time.Unix(int64(i.attr.Mtime), int64(i.attr.Mtimensec)) }
func (i *info) IsDir() bool        { return i.Mode().IsDir() }
func (i *info) Sys() any {
	return &file.FileInfo{Nlink: i.attr.Nlink, UID: i.attr.Owner.Uid, GID: i.attr.Owner.Gid,
		Major: i.attr.Rdev >> 8 & 0xfff, Minor: i.attr.Rdev&0xff | i.attr.Rdev>>12&0xfff00, Fileid: i.id}
}

// Mode is the Go file type with the Unix permission bits, setuid, setgid
// and sticky included, in their Unix places (which Go leaves unused):
// go-nfs sends this value as the NFS mode.
func (i *info) Mode() os.FileMode {
	m := perfuse.FileMode(i.attr.Mode) &^ (os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
	return m | os.FileMode(i.attr.Mode&0o7000)
}

// unixMode is the permission bits of a Go mode, setuid, setgid and sticky
// taken from either their Go bits or their Unix places.
func unixMode(m os.FileMode) uint32 {
	u := uint32(m) & 0o7777
	if m&os.ModeSetuid != 0 {
		u |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		u |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		u |= syscall.S_ISVTX
	}
	return u
}

// The nfs.UnixChange methods: LINK and MKNOD.

var _ nfs.UnixChange = (*fsys)(nil)

// Link makes link a new name of target, which go-nfs passes as the file
// handle itself.
func (f *fsys) Link(target, link string) error {
	if f.s.ro {
		return pathError("link", link, syscall.EROFS)
	}
	id, gen, ok := parseHandle(f.s.boot, []byte(target))
	r := f.s.table.get(id, gen)
	if !ok || r == nil {
		return pathError("link", link, syscall.ESTALE)
	}
	dir, name, err := f.split(link)
	if err != nil {
		return pathError("link", link, err)
	}
	e, err := f.s.u.NodeLink(f.s.ctx, f.s.cred, r.node, dir.node, name)
	if err != nil {
		return pathError("link", link, err)
	}
	f.s.table.hold(e, dir, name)
	f.s.table.stale(dir) // its mtime changed
	return nil
}

func (f *fsys) Mkfifo(p string, mode uint32) error {
	return f.mknod(p, syscall.S_IFIFO|mode&0o7777, 0)
}

func (f *fsys) Socket(p string) error { return f.mknod(p, syscall.S_IFSOCK|0o644, 0) }

// Mknod is refused: go-nfs passes no file type, so a character device
// could not be told from a block device.
func (f *fsys) Mknod(p string, mode, major, minor uint32) error {
	return pathError("mknod", p, syscall.ENOTSUP)
}

func (f *fsys) mknod(p string, mode, rdev uint32) error {
	if f.s.ro {
		return pathError("mknod", p, syscall.EROFS)
	}
	dir, name, err := f.split(p)
	if err != nil {
		return pathError("mknod", p, err)
	}
	e, err := f.s.u.NodeMknod(f.s.ctx, f.s.cred, dir.node, name, mode, rdev, 0)
	if err != nil {
		return pathError("mknod", p, err)
	}
	f.s.table.hold(e, dir, name)
	f.s.table.stale(dir) // its mtime changed
	return nil
}
