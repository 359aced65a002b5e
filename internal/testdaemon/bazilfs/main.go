// Command bazilfs is a bazil.org/fuse daemon as rclone mounts one: it
// refuses a mountpoint that is already mounted, then mounts read-only a
// tree of one file, "hello": "bazilfs MOUNTPOINT".
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
)

const hello = "hello from bazil\n"

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bazilfs MOUNTPOINT")
		os.Exit(2)
	}
	mnt, _ := filepath.Abs(os.Args[1])
	if mounted(mnt) {
		fmt.Fprintf(os.Stderr, "bazilfs: %s is already mounted\n", mnt)
		os.Exit(1)
	}
	c, err := fuse.Mount(mnt, fuse.FSName("bazilfs"), fuse.Subtype("bazilfs"), fuse.ReadOnly())
	if err != nil {
		fmt.Fprintln(os.Stderr, "bazilfs: mount:", err)
		os.Exit(1)
	}
	defer c.Close()
	if err := fs.Serve(c, FS{}); err != nil {
		fmt.Fprintln(os.Stderr, "bazilfs: serve:", err)
		os.Exit(1)
	}
}

// mounted is rclone's check: is dir a mountpoint in /proc/self/mountinfo?
func mounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

type FS struct{}

func (FS) Root() (fs.Node, error) { return Dir{}, nil }

type Dir struct{}

func (Dir) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode, a.Mode = 1, os.ModeDir|0o755
	return nil
}

func (Dir) Lookup(ctx context.Context, name string) (fs.Node, error) {
	if name == "hello" {
		return File{}, nil
	}
	return nil, syscall.ENOENT
}

func (Dir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return []fuse.Dirent{{Inode: 2, Name: "hello", Type: fuse.DT_File}}, nil
}

type File struct{}

func (File) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode, a.Mode, a.Size = 2, 0o644, uint64(len(hello))
	return nil
}

func (File) ReadAll(ctx context.Context) ([]byte, error) { return []byte(hello), nil }
