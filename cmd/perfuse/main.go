// Command perfuse uses a FUSE filesystem with no kernel mount, no
// /dev/fuse and no privileges: it runs the FUSE daemon as a child process
// with its end of a socket pair as fd 3 (perfuse.Start) and talks FUSE to
// it directly. Run "perfuse help" for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// command is one subcommand. A file adds its own with register, from init.
type command struct {
	name    string
	args    string // after the name: "[-l] [-R] PATH"
	summary string // one line for "perfuse help"
	help    string // more text for "perfuse help NAME", or ""
	// flags defines the command's flags on fs and returns the function
	// that runs it with the arguments left, on a started daemon.
	flags func(fs *flag.FlagSet) func(ctx context.Context, e *env, args []string) error
	// validate checks the arguments left after the flags, before the
	// daemon is started; its errors are usage errors. Optional.
	validate func(args []string) error
}

// nargs is a validate function for between min and max arguments (max
// -1: no limit).
func nargs(min, max int, what string) func([]string) error {
	return func(args []string) error {
		if len(args) < min || max >= 0 && len(args) > max {
			return usagef("want %s, got %d arguments", what, len(args))
		}
		return nil
	}
}

var commands = map[string]*command{}

func register(c *command) {
	if commands[c.name] != nil {
		panic("perfuse: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// usageError is a command line perfuse cannot run: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// globals are the flags every command takes.
type globals struct {
	trace   bool
	verbose bool
	timeout time.Duration
}

func (g *globals) define(fs *flag.FlagSet) {
	fs.BoolVar(&g.trace, "trace", g.trace, "print the FUSE trace statistics at exit")
	fs.BoolVar(&g.verbose, "v", g.verbose, "log each FUSE request, and pass the daemon's stderr through")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "bound each FUSE request (0: no bound)")
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs one perfuse command line and returns its exit status: 0 on
// success, 1 on an operation error, 2 on a usage error.
func run(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var g globals
	top := flag.NewFlagSet("perfuse", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.define(top)
	mine, daemon, dashes := splitDaemon(argv)
	if err := top.Parse(mine); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			topUsage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "perfuse: %v\n", err)
		topUsage(stderr)
		return 2
	}
	rest := top.Args()
	if len(rest) == 0 {
		topUsage(stderr)
		return 2
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		return help(rest, stdout, stderr)
	}
	c := commands[name]
	if c == nil {
		fmt.Fprintf(stderr, "perfuse: unknown command %q\n", name)
		topUsage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("perfuse "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.define(fs)
	runCmd := c.flags(fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmdUsage(stdout, c, fs)
			return 0
		}
		fmt.Fprintf(stderr, "perfuse %s: %v\n", name, err)
		cmdUsage(stderr, c, fs)
		return 2
	}
	if c.validate != nil {
		if err := c.validate(fs.Args()); err != nil {
			fmt.Fprintf(stderr, "perfuse %s: %v\n", name, err)
			cmdUsage(stderr, c, fs)
			return 2
		}
	}
	if !dashes || len(daemon) == 0 {
		fmt.Fprintf(stderr, "perfuse %s: no daemon: give its command line after --\n", name)
		cmdUsage(stderr, c, fs)
		return 2
	}
	e := &env{g: g, stdin: stdin, stdout: stdout, stderr: stderr, argv: daemon}
	err := e.run(ctx, func(ctx context.Context) error { return runCmd(ctx, e, fs.Args()) })
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "perfuse %s: %v\n", name, err)
		cmdUsage(stderr, c, fs)
		return 2
	default:
		fmt.Fprintf(stderr, "perfuse %s: %s\n", name, describe(err))
		return 1
	}
}

// splitDaemon splits argv at its first "--": perfuse's arguments, then the
// daemon's command line.
func splitDaemon(argv []string) (mine, daemon []string, found bool) {
	i := slices.Index(argv, "--")
	if i < 0 {
		return argv, nil, false
	}
	return argv[:i], argv[i+1:], true
}

// describe is err's message with the errno's name, as in
// "open x: no such file or directory (ENOENT)".
func describe(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" && !strings.Contains(err.Error(), name) {
			return fmt.Sprintf("%v (%s)", err, name)
		}
	}
	return err.Error()
}

func topUsage(w io.Writer) {
	fmt.Fprint(w, `usage: perfuse [--trace] [-v] [--timeout D] COMMAND [FLAGS] ARGS -- DAEMON...

perfuse uses a FUSE filesystem with no kernel mount and no privileges.
DAEMON... is a FUSE daemon's command line with /dev/fd/3 where it expects
its mountpoint, e.g. "squashfuse -f image.sqfs /dev/fd/3": perfuse runs it
with its end of a socket pair as fd 3 and speaks FUSE to it. Paths are in
the daemon's tree; / is its root.

Commands:
`)
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		c := commands[name]
		fmt.Fprintf(w, "  %-8s %s\n", name, c.summary)
	}
	fmt.Fprint(w, `
Global flags (before or after COMMAND):
  --trace      print the FUSE trace statistics at exit, on stderr
  -v           log each FUSE request on stderr, with the daemon's stderr
  --timeout D  bound each FUSE request, e.g. 10s (default: none)

"perfuse help COMMAND" or "perfuse COMMAND --help" describes a command.
Exit status: 0 on success, 1 on an operation error, 2 on a usage error.
`)
}

func cmdUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: perfuse %s %s -- DAEMON...\n\n%s\n", c.name, c.args, c.summary)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
	}
	fmt.Fprintln(w, "\nFlags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

func help(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		topUsage(stdout)
		return 0
	}
	c := commands[args[0]]
	if c == nil || len(args) > 1 {
		fmt.Fprintf(stderr, "perfuse help: unknown command %q\n", strings.Join(args, " "))
		topUsage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("perfuse "+c.name, flag.ContinueOnError)
	var g globals
	g.define(fs)
	c.flags(fs)
	cmdUsage(stdout, c, fs)
	return 0
}
