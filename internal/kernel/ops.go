package kernel

import (
	"context"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
)

// The operations of perfuse's op table that the binding maps, one
// interface each. The binding finds them on the *perfuse.Usermount at
// run time, so it builds against an op table that is still growing; a
// missing one answers ENOSYS, which the kernel remembers for most
// opcodes (and then stops asking).
type (
	creater interface {
		NodeCreate(ctx context.Context, cred *perfuse.Cred, dir *perfuse.Node, name string, flags int, mode, umask uint32) (*perfuse.Entry, *perfuse.Handle, error)
	}
	mknoder interface {
		NodeMknod(ctx context.Context, cred *perfuse.Cred, dir *perfuse.Node, name string, mode, rdev, umask uint32) (*perfuse.Entry, error)
	}
	mkdirer interface {
		NodeMkdir(ctx context.Context, cred *perfuse.Cred, dir *perfuse.Node, name string, mode, umask uint32) (*perfuse.Entry, error)
	}
	symlinker interface {
		NodeSymlink(ctx context.Context, cred *perfuse.Cred, dir *perfuse.Node, name, target string) (*perfuse.Entry, error)
	}
	linker interface {
		NodeLink(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node, dir *perfuse.Node, name string) (*perfuse.Entry, error)
	}
	remover interface {
		NodeRemove(ctx context.Context, cred *perfuse.Cred, dir *perfuse.Node, name string) error
	}
	rmdirer interface {
		NodeRmdir(ctx context.Context, cred *perfuse.Cred, dir *perfuse.Node, name string) error
	}
	renamer interface {
		NodeRename(ctx context.Context, cred *perfuse.Cred, olddir *perfuse.Node, oldname string, newdir *perfuse.Node, newname string, flags uint32) error
	}
	readlinker interface {
		NodeReadlink(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node) (string, error)
	}
	setattrer interface {
		NodeSetattr(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node, h *perfuse.Handle, in *fuse.SetAttrIn) (*fuse.AttrOut, error)
	}
	accesser interface {
		NodeAccess(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node, mask uint32) error
	}
	writer interface {
		NodeWrite(ctx context.Context, cred *perfuse.Cred, h *perfuse.Handle, p []byte, off int64, writeFlags uint32, lockOwner uint64) (int, error)
	}
	flusher interface {
		NodeFlush(ctx context.Context, cred *perfuse.Cred, h *perfuse.Handle, lockOwner uint64) error
	}
	fsyncer interface {
		NodeFsync(ctx context.Context, cred *perfuse.Cred, h *perfuse.Handle, datasync bool) error
	}
	fallocater interface {
		NodeFallocate(ctx context.Context, cred *perfuse.Cred, h *perfuse.Handle, mode uint32, off, length uint64) error
	}
	lseeker interface {
		NodeLseek(ctx context.Context, cred *perfuse.Cred, h *perfuse.Handle, off int64, whence uint32) (int64, error)
	}
	copier interface {
		NodeCopyFileRange(ctx context.Context, cred *perfuse.Cred, in *perfuse.Handle, offIn uint64, out *perfuse.Handle, offOut, length, flags uint64) (uint64, error)
	}
	advlocker interface {
		NodeAdvlock(ctx context.Context, cred *perfuse.Cred, h *perfuse.Handle, op perfuse.Opcode, owner uint64, lk fuse.FileLock, lkFlags uint32) (fuse.FileLock, error)
	}
	getxattrer interface {
		NodeGetextattr(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node, name string, size uint32) ([]byte, uint32, error)
	}
	listxattrer interface {
		NodeListextattr(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node, size uint32) ([]byte, uint32, error)
	}
	setxattrer interface {
		NodeSetextattr(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node, name string, value []byte, flags uint32) error
	}
	removexattrer interface {
		NodeDeleteextattr(ctx context.Context, cred *perfuse.Cred, n *perfuse.Node, name string) error
	}
	readdirplusser interface {
		NodeReaddirplus(ctx context.Context, cred *perfuse.Cred, h *perfuse.Handle, off uint64, fn func(perfuse.DirentPlus) bool) error
	}
	notifyReplier interface {
		NotifyReply(ctx context.Context, notifyUnique uint64, n *perfuse.Node, off uint64, data []byte) error
	}
)

// opTable holds the operations the Usermount has, nil for the others.
type opTable struct {
	create      creater
	mknod       mknoder
	mkdir       mkdirer
	symlink     symlinker
	link        linker
	remove      remover
	rmdir       rmdirer
	rename      renamer
	readlink    readlinker
	setattr     setattrer
	access      accesser
	write       writer
	flush       flusher
	fsync       fsyncer
	fallocate   fallocater
	lseek       lseeker
	copyRange   copier
	advlock     advlocker
	getxattr    getxattrer
	listxattr   listxattrer
	setxattr    setxattrer
	removexattr removexattrer
	readdirplus readdirplusser
	notifyReply notifyReplier
}

func findOps(u *perfuse.Usermount) opTable {
	var t opTable
	v := any(u)
	t.create, _ = v.(creater)
	t.mknod, _ = v.(mknoder)
	t.mkdir, _ = v.(mkdirer)
	t.symlink, _ = v.(symlinker)
	t.link, _ = v.(linker)
	t.remove, _ = v.(remover)
	t.rmdir, _ = v.(rmdirer)
	t.rename, _ = v.(renamer)
	t.readlink, _ = v.(readlinker)
	t.setattr, _ = v.(setattrer)
	t.access, _ = v.(accesser)
	t.write, _ = v.(writer)
	t.flush, _ = v.(flusher)
	t.fsync, _ = v.(fsyncer)
	t.fallocate, _ = v.(fallocater)
	t.lseek, _ = v.(lseeker)
	t.copyRange, _ = v.(copier)
	t.advlock, _ = v.(advlocker)
	t.getxattr, _ = v.(getxattrer)
	t.listxattr, _ = v.(listxattrer)
	t.setxattr, _ = v.(setxattrer)
	t.removexattr, _ = v.(removexattrer)
	t.readdirplus, _ = v.(readdirplusser)
	t.notifyReply, _ = v.(notifyReplier)
	return t
}

// Missing lists the op-table methods this build of perfuse lacks, for
// diagnostics.
func Missing(u *perfuse.Usermount) []string {
	t := findOps(u)
	var out []string
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"NodeCreate", t.create != nil}, {"NodeMknod", t.mknod != nil}, {"NodeMkdir", t.mkdir != nil},
		{"NodeSymlink", t.symlink != nil}, {"NodeLink", t.link != nil}, {"NodeRemove", t.remove != nil},
		{"NodeRmdir", t.rmdir != nil}, {"NodeRename", t.rename != nil}, {"NodeReadlink", t.readlink != nil},
		{"NodeSetattr", t.setattr != nil}, {"NodeAccess", t.access != nil}, {"NodeWrite", t.write != nil},
		{"NodeFlush", t.flush != nil}, {"NodeFsync", t.fsync != nil}, {"NodeFallocate", t.fallocate != nil},
		{"NodeLseek", t.lseek != nil}, {"NodeCopyFileRange", t.copyRange != nil}, {"NodeAdvlock", t.advlock != nil},
		{"NodeGetextattr", t.getxattr != nil}, {"NodeListextattr", t.listxattr != nil},
		{"NodeSetextattr", t.setxattr != nil}, {"NodeDeleteextattr", t.removexattr != nil},
		{"NodeReaddirplus", t.readdirplus != nil}, {"NotifyReply", t.notifyReply != nil},
	} {
		if !c.ok {
			out = append(out, c.name)
		}
	}
	return out
}
