package nfsexport

import (
	"io"
	"syscall"

	billy "github.com/go-git/go-billy/v5"
	"github.com/perfuse-go/perfuse"
)

// openFile is one FUSE open, for the length of one NFS procedure: go-nfs
// opens, reads or writes, and closes for each READ and WRITE.
type openFile struct {
	f     *fsys
	r     *ref
	h     *perfuse.Handle
	path  string // as opened, for errors
	off   int64
	wrote bool
}

var _ billy.File = (*openFile)(nil)

// Name is a path that names the node itself, whatever it is called: go-nfs
// stats a created file by it.
func (o *openFile) Name() string { return o.f.token(o.r.id()) }

func (o *openFile) Read(p []byte) (int, error) {
	n, err := o.ReadAt(p, o.off)
	o.off += int64(n)
	return n, err
}

func (o *openFile) ReadAt(p []byte, off int64) (int, error) {
	s := o.f.s
	n, err := s.u.NodeRead(s.ctx, s.cred, o.h, p, off)
	if err != nil {
		return n, pathError("read", o.path, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (o *openFile) Write(p []byte) (int, error) {
	s := o.f.s
	o.wrote = true
	s.table.stale(o.r)
	n, err := s.u.NodeWrite(s.ctx, s.cred, o.h, p, o.off, 0, 0)
	o.off += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return n, pathError("write", o.path, err)
}

func (o *openFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += o.off
	case io.SeekEnd:
		a, err := o.f.s.attr(o.r)
		if err != nil {
			return 0, pathError("seek", o.path, err)
		}
		off += int64(a.Size)
	}
	if off < 0 {
		return 0, pathError("seek", o.path, syscall.EINVAL)
	}
	o.off = off
	return off, nil
}

// Truncate sets the size (SETATTR's size). go-nfs sends its error on
// unchanged, so it carries the errno's own NFS status.
func (o *openFile) Truncate(size int64) error {
	s := o.f.s
	in := perfuse.SetAttrIn{Valid: perfuse.FattrSize, Size: uint64(size)}
	out, err := s.u.NodeSetattr(s.ctx, s.cred, o.r.node, o.h, &in)
	if err != nil {
		return statusError(err)
	}
	o.wrote = true
	s.table.setAttr(o.r, out)
	return nil
}

// Close ends the open. After writes it first asks the daemon for fsync:
// go-nfs answers every WRITE as FILE_SYNC, a promise that the data is on
// stable storage, and COMMIT reaches no handler of ours.
func (o *openFile) Close() error {
	s := o.f.s
	var err error
	if o.wrote {
		err = s.u.NodeFsync(s.ctx, s.cred, o.h, false)
	}
	if cerr := s.u.NodeClose(s.ctx, s.cred, o.h, 0); err == nil {
		err = cerr
	}
	s.table.unpin(o.r)
	if o.wrote {
		s.table.stale(o.r)
	}
	return pathError("close", o.path, err)
}

func (o *openFile) Lock() error   { return pathError("lock", o.path, syscall.ENOTSUP) }
func (o *openFile) Unlock() error { return pathError("unlock", o.path, syscall.ENOTSUP) }
