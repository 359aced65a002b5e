package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/perfuse-go/perfuse"
	"golang.org/x/sys/unix"
)

func init() {
	register(&command{
		name:    "shell",
		args:    "",
		summary: "an interactive prompt for poking at the daemon's tree",
		help: `Commands, one a line (paths are relative to the current directory;
quote names with spaces in "" or ''):
` + shellHelp + `
It reads commands from stdin until end of file or "exit", prompting when
stdin is a terminal. A failed command prints its error and the shell goes
on; the exit status is 1 if any command failed.`,
		validate: nargs(0, 0, "no arguments"),
		flags: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				return (&shell{e: e, ctx: ctx, cwd: "."}).run()
			}
		},
	})
}

const shellHelp = `  ls [-l] [PATH]     list a directory
  cd [PATH]          change directory (default /)
  pwd                print the current directory
  cat PATH...        print files
  get PATH [LOCAL]   copy a file or directory out (default: its name, here)
  put LOCAL [PATH]   copy a local file or directory in (default: its name)
  rm PATH...         remove files, and empty directories
  mkdir PATH...      make directories
  mv OLD NEW         rename
  stat PATH...       show attributes
  df                 show the filesystem's space and inodes
  help               this list
  exit               end`

type shell struct {
	e      *env
	ctx    context.Context
	cwd    string // an io/fs name
	failed bool
}

var errShellFailed = errors.New("a command failed")

func (s *shell) run() error {
	prompt := isTerminal(s.e.stdin)
	sc := bufio.NewScanner(s.e.stdin)
	for {
		if prompt {
			fmt.Fprintf(s.e.stdout, "perfuse:%s> ", slash(s.cwd))
		}
		if !sc.Scan() {
			break
		}
		words, err := splitWords(sc.Text())
		if err == nil && len(words) > 0 && words[0] == "exit" {
			break
		}
		if err == nil && len(words) > 0 {
			err = s.do(words[0], words[1:])
		}
		if err != nil {
			s.failed = true
			fmt.Fprintf(s.e.stderr, "%s\n", describe(err))
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
		}
	}
	if prompt {
		fmt.Fprintln(s.e.stdout)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if s.failed {
		return errShellFailed
	}
	return nil
}

// abs is the io/fs name of p, relative to the current directory.
func (s *shell) abs(p string) string {
	if strings.HasPrefix(p, "/") {
		return fsName(p)
	}
	return fsName(path.Join(slash(s.cwd), p))
}

func (s *shell) do(cmd string, args []string) error {
	e, ctx := s.e, s.ctx
	need := func(min, max int) error {
		if len(args) < min || max >= 0 && len(args) > max {
			return fmt.Errorf("%s: wrong number of arguments (try help)", cmd)
		}
		return nil
	}
	switch cmd {
	case "help":
		fmt.Fprintln(e.stdout, shellHelp)
		return nil
	case "pwd":
		fmt.Fprintln(e.stdout, slash(s.cwd))
		return nil
	case "ls":
		long := len(args) > 0 && args[0] == "-l"
		if long {
			args = args[1:]
		}
		if err := need(0, 1); err != nil {
			return err
		}
		p := s.cwd
		if len(args) == 1 {
			p = s.abs(args[0])
		}
		return ls(e, e.fsys(ctx), p, long, false)
	case "cd":
		if err := need(0, 1); err != nil {
			return err
		}
		p := "."
		if len(args) == 1 {
			p = s.abs(args[0])
		}
		st, err := fs.Stat(e.fsys(ctx), p)
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return errorf("cd", p, syscall.ENOTDIR)
		}
		s.cwd = p
		return nil
	case "cat":
		if err := need(1, -1); err != nil {
			return err
		}
		for _, a := range args {
			if err := catFile(e.stdout, e.fsys(ctx), s.abs(a)); err != nil {
				return err
			}
		}
		return nil
	case "stat":
		if err := need(1, -1); err != nil {
			return err
		}
		for _, a := range args {
			st, err := fs.Lstat(e.fsys(ctx), s.abs(a))
			if err != nil {
				return err
			}
			printStat(e.stdout, slash(s.abs(a)), st.Sys().(*perfuse.Attr))
		}
		return nil
	case "get":
		if err := need(1, 2); err != nil {
			return err
		}
		src := s.abs(args[0])
		dst := path.Base(slash(src))
		if len(args) == 2 {
			dst = args[1]
		}
		c := &copier{recursive: true, e: e, ctx: ctx}
		return c.copyOut(src, dst)
	case "put":
		if err := need(1, 2); err != nil {
			return err
		}
		dst := s.abs(filepath.Base(args[0]))
		if len(args) == 2 {
			dst = s.abs(args[1])
		}
		c := &copier{recursive: true, e: e, ctx: ctx}
		return c.copyIn(args[0], dst)
	case "rm":
		if err := need(1, -1); err != nil {
			return err
		}
		for _, a := range args {
			if err := s.remove(s.abs(a)); err != nil {
				return err
			}
		}
		return nil
	case "mkdir":
		if err := need(1, -1); err != nil {
			return err
		}
		for _, a := range args {
			name := s.abs(a)
			dir, base, err := e.parent(ctx, name)
			if err != nil {
				return err
			}
			ent, err := e.d.NodeMkdir(ctx, nil, dir.n, base, 0o755, 0o022)
			dir.release(ctx)
			if err != nil {
				return errorf("mkdir", name, err)
			}
			e.d.NodeReclaim(ctx, ent.Node, 1)
		}
		return nil
	case "mv":
		if err := need(2, 2); err != nil {
			return err
		}
		return s.rename(s.abs(args[0]), s.abs(args[1]))
	case "df":
		if err := need(0, 0); err != nil {
			return err
		}
		st, err := e.d.FsStatvfs(ctx, nil)
		if err != nil {
			return errorf("statfs", ".", err)
		}
		printDf(e.stdout, st)
		return nil
	}
	return fmt.Errorf("%s: unknown command (try help)", cmd)
}

func (s *shell) remove(name string) error {
	e, ctx := s.e, s.ctx
	dir, base, err := e.parent(ctx, name)
	if err != nil {
		return err
	}
	defer dir.release(ctx)
	err = e.d.NodeRemove(ctx, nil, dir.n, base)
	if errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EPERM) {
		if st, serr := fs.Lstat(e.fsys(ctx), name); serr == nil && st.IsDir() {
			err = e.d.NodeRmdir(ctx, nil, dir.n, base)
		}
	}
	if err != nil {
		return errorf("rm", name, err)
	}
	return nil
}

func (s *shell) rename(from, to string) error {
	e, ctx := s.e, s.ctx
	if n, err := e.lookup(ctx, to); err == nil {
		isDir := n.attr.Mode&syscall.S_IFMT == syscall.S_IFDIR
		n.release(ctx)
		if isDir {
			to = path.Join(to, path.Base(slash(from)))
		}
	}
	od, oname, err := e.parent(ctx, from)
	if err != nil {
		return err
	}
	defer od.release(ctx)
	nd, nname, err := e.parent(ctx, to)
	if err != nil {
		return err
	}
	defer nd.release(ctx)
	if err := e.d.NodeRename(ctx, nil, od.n, oname, nd.n, nname, 0); err != nil {
		return errorf("mv", from, err)
	}
	return nil
}

func printDf(w io.Writer, st *perfuse.StatfsOut) {
	bs := uint64(st.Frsize)
	if bs == 0 {
		bs = uint64(st.Bsize)
	}
	used := st.Blocks - st.Bfree
	pct := 0.0
	if used+st.Bavail > 0 {
		pct = 100 * float64(used) / float64(used+st.Bavail)
	}
	fmt.Fprintf(w, "%12s %12s %12s %5s %10s %10s %8s\n", "Size", "Used", "Avail", "Use%", "Inodes", "IFree", "NameMax")
	fmt.Fprintf(w, "%12s %12s %12s %4.0f%% %10d %10d %8d\n",
		size(int64(st.Blocks*bs)), size(int64(used*bs)), size(int64(st.Bavail*bs)), pct, st.Files, st.Ffree, st.NameLen)
}

// splitWords splits a command line into words, honouring ” and "".
func splitWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
