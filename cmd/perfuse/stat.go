package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/perfuse-go/perfuse"
	"io"
	"io/fs"
	"time"
)

func init() {
	register(&command{
		name:     "stat",
		args:     "PATH...",
		summary:  "show the attributes of each path, as stat(1) does",
		help:     `A symbolic link itself is shown, not its target.`,
		validate: nargs(1, -1, "at least one PATH"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				fsys := e.fsys(ctx)
				for _, p := range args {
					st, err := fs.Lstat(fsys, fsName(p))
					if err != nil {
						return inDaemon(err)
					}
					printStat(e.stdout, slash(fsName(p)), st.Sys().(*perfuse.Attr))
				}
				return nil
			}
		},
	})
}

func printStat(w io.Writer, name string, a *perfuse.Attr) {
	ts := func(sec uint64, nsec uint32) string {
		return time.Unix(int64(sec), int64(nsec)).UTC().Format("2006-01-02 15:04:05.000000000 -0700")
	}
	fmt.Fprintf(w, "  File: %s\n", name)
	fmt.Fprintf(w, "  Size: %-12d Blocks: %-10d IO Block: %-6d %s\n", a.Size, a.Blocks, a.Blksize, fileType(a.Mode))
	fmt.Fprintf(w, " Inode: %-12d Links: %-10d Device type: %d,%d\n", a.Ino, a.Nlink, a.Rdev>>8&0xfff, a.Rdev&0xff|a.Rdev>>12&0xfff00)
	fmt.Fprintf(w, "Access: (%04o/%s)  Uid: %d  Gid: %d\n", a.Mode&0o7777, modeString(perfuse.FileMode(a.Mode)), a.Uid, a.Gid)
	fmt.Fprintf(w, "Access: %s\n", ts(a.Atime, a.Atimensec))
	fmt.Fprintf(w, "Modify: %s\n", ts(a.Mtime, a.Mtimensec))
	fmt.Fprintf(w, "Change: %s\n", ts(a.Ctime, a.Ctimensec))
}
