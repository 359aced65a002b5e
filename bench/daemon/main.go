// Command daemon is the FUSE daemon the benchmarks mount three ways: go-fuse's
// loopback of a directory, with no kernel caching of entries or attributes,
// no splicing and no passthrough, so that every operation reaches it.
//
//	daemon BACKING MOUNTPOINT
//
// A MOUNTPOINT of /dev/fd/N means fd N is already a FUSE connection (a socket
// from the forwarder or perfused); any other MOUNTPOINT is mounted directly
// with mount(2). It serves until the mount goes away or the connection
// closes; SIGINT or SIGTERM unmounts.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: daemon BACKING MOUNTPOINT")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		os.Exit(1)
	}
}

func run(backing, mnt string) error {
	lb, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return err
	}
	zero := time.Duration(0)
	opts := &fs.Options{EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero}
	opts.DisableSplice = true
	opts.FsName, opts.Name = "bench", "bench"
	// go-fuse takes /dev/fd/N as a connection it must not mount.
	opts.DirectMountStrict = !strings.HasPrefix(mnt, "/dev/fd/")
	srv, err := fs.Mount(mnt, &node{lb.(*fs.LoopbackNode)}, opts)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Unmount()
	}()
	srv.Wait()
	return nil
}

// node is a loopback node whose files refuse passthrough: on a direct mount
// as root go-fuse would otherwise hand the kernel the backing file, and
// reads would never reach the daemon.
type node struct{ *fs.LoopbackNode }

// WrapChild makes every node of the tree a node.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{ops.(*fs.LoopbackNode)}
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return wrap(fh), fl, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, wrap(fh), fl, errno
}

func wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return file{lf}
	}
	return fh
}

// file is a loopback file without passthrough.
type file struct{ *fs.LoopbackFile }

// PassthroughFd declines, so go-fuse serves every read itself.
func (file) PassthroughFd() (int, bool) { return 0, false }
