package gofusepeer

import (
	"encoding/binary"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// UnknownTypes wraps a go-fuse RawFileSystem so that every directory entry
// it lists has type DT_UNKNOWN (0), as sshfs answers a listing from its
// cache and as many file systems do on Linux: a client must look such an
// entry up to learn what it is. Serve it with ServeRaw.
type UnknownTypes struct {
	fuse.RawFileSystem
}

// Dirent layout (struct fuse_dirent): ino, off, namelen, type, name padded
// to 8 bytes. READDIRPLUS puts a fuse_entry_out before each.
const (
	direntHeader  = 24
	direntTypeOff = 20
	entryOutSize  = int(unsafe.Sizeof(fuse.EntryOut{}))
)

func (u *UnknownTypes) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	s := u.RawFileSystem.ReadDir(cancel, in, out)
	if s == fuse.OK {
		blankTypes(out.Bytes(), 0)
	}
	return s
}

func (u *UnknownTypes) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	s := u.RawFileSystem.ReadDirPlus(cancel, in, out)
	if s == fuse.OK {
		blankTypes(out.Bytes(), entryOutSize)
	}
	return s
}

// blankTypes zeroes the type of each record of buf in place; prefix is the
// size of what precedes each dirent. Bytes() is go-fuse's reply buffer
// itself, sent after the method returns.
func blankTypes(buf []byte, prefix int) {
	for len(buf) >= prefix+direntHeader {
		d := buf[prefix:]
		namelen := int(binary.NativeEndian.Uint32(d[16:]))
		binary.NativeEndian.PutUint32(d[direntTypeOff:], 0)
		size := prefix + direntHeader + (namelen+7)&^7
		if size > len(buf) {
			return
		}
		buf = buf[size:]
	}
}
