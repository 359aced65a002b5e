package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"path"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
)

func init() {
	register(&command{
		name:    "ls",
		args:    "[-l] [-R] [PATH]",
		summary: "list a directory of the daemon's tree (default /)",
		help: `Entries are sorted by name. -l shows mode, links, owner, group, size,
modification time and a symbolic link's target; -R lists subdirectories
too, each under a "DIR:" line, without following symbolic links.`,
		validate: nargs(0, 1, "at most one PATH"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			long := fl.Bool("l", false, "long format")
			recursive := fl.Bool("R", false, "list subdirectories recursively")
			return func(ctx context.Context, e *env, args []string) error {
				p := "/"
				if len(args) == 1 {
					p = args[0]
				}
				return inDaemon(ls(e, e.fsys(ctx), fsName(p), *long, *recursive))
			}
		},
	})
}

func ls(e *env, fsys fs.FS, name string, long, recursive bool) error {
	st, err := fs.Stat(fsys, name)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return lsEntry(e.stdout, fsys, name, long)
	}
	var dirs []string
	err = fs.WalkDir(fsys, name, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if p != name && !recursive {
			return fs.SkipDir
		}
		dirs = append(dirs, p)
		return nil
	})
	if err != nil {
		return err
	}
	for i, dir := range dirs {
		if recursive {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			fmt.Fprintf(e.stdout, "%s:\n", slash(dir))
		}
		ents, err := fs.ReadDir(fsys, dir)
		if err != nil {
			return err
		}
		for _, ent := range ents {
			if err := lsEntry(e.stdout, fsys, path.Join(dir, ent.Name()), long); err != nil {
				return err
			}
		}
	}
	return nil
}

// lsEntry prints one name, with its attributes when long.
func lsEntry(w io.Writer, fsys fs.FS, name string, long bool) error {
	if !long {
		_, err := fmt.Fprintln(w, path.Base(name))
		return err
	}
	st, err := fs.Lstat(fsys, name)
	if err != nil {
		return err
	}
	line := longLine(st)
	if st.Mode()&fs.ModeSymlink != 0 {
		target, err := fs.ReadLink(fsys, name)
		if err != nil {
			return err
		}
		line += " -> " + target
	}
	_, err = fmt.Fprintln(w, line)
	return err
}

// longLine is ls -l's line for st: mode, links, owner, group, size, time, name.
func longLine(st fs.FileInfo) string {
	var nlink, uid, gid uint32 = 1, 0, 0
	if a, ok := st.Sys().(*perfuse.Attr); ok {
		nlink, uid, gid = a.Nlink, a.Uid, a.Gid
	}
	return fmt.Sprintf("%s %3d %5d %5d %9d %s %s", modeString(st.Mode()), nlink, uid, gid, st.Size(),
		st.ModTime().UTC().Format(time.DateTime), st.Name())
}

// modeString is the mode as ls shows it: "drwxr-xr-x".
func modeString(m fs.FileMode) string {
	t := byte('-')
	switch {
	case m.IsDir():
		t = 'd'
	case m&fs.ModeSymlink != 0:
		t = 'l'
	case m&fs.ModeNamedPipe != 0:
		t = 'p'
	case m&fs.ModeSocket != 0:
		t = 's'
	case m&fs.ModeCharDevice != 0:
		t = 'c'
	case m&fs.ModeDevice != 0:
		t = 'b'
	}
	b := []byte{t}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) != 0 {
			b = append(b, rwx[i])
		} else {
			b = append(b, '-')
		}
	}
	if m&fs.ModeSetuid != 0 {
		b[3] = special(b[3], 's')
	}
	if m&fs.ModeSetgid != 0 {
		b[6] = special(b[6], 's')
	}
	if m&fs.ModeSticky != 0 {
		b[9] = special(b[9], 't')
	}
	return string(b)
}

func special(c, s byte) byte {
	if c == '-' {
		return s - 'a' + 'A'
	}
	return s
}

// fileType names the type of mode bits as stat(1) does.
func fileType(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "regular file"
	case syscall.S_IFDIR:
		return "directory"
	case syscall.S_IFLNK:
		return "symbolic link"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	case syscall.S_IFCHR:
		return "character special file"
	case syscall.S_IFBLK:
		return "block special file"
	}
	return "unknown type"
}
