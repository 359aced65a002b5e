// Command perfused is perfuse's relay daemon, as perfused(8) is
// libperfuse's: it mounts FUSE daemons through the Linux kernel and relays
// every kernel request to them over a socket, through perfuse's operation
// table. See usage for the modes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/fusermount"
	"github.com/perfuse-go/perfuse/internal/policy"
)

const usage = `usage:
  perfused [-fs] [-d classes] [-o options] [-t dir] -i fd
  perfused [-fs] [-d classes] [-o options] [-t dir] [-l path]
  perfused [-fs] [-d classes] [-o options] [-t dir] MOUNTPOINT -- COMMAND [ARGS...]
  perfused -demo
  perfused --help

perfused mounts FUSE daemons through the kernel's FUSE and relays each kernel
request to the daemon over a local socket (perfuse's operation table in
between): the Linux counterpart of NetBSD's perfused(8).

Modes:
  -i fd    Serve the one mount whose daemon is at the other end of socket fd.
           This is how perfuse.Open starts perfused ("perfused -i 3"): the
           daemon sends a mount frame with perfuse.Mount, perfused reads and
           validates it, takes the owner from the socket's peer credentials,
           applies the policy below, performs FUSE INIT with the daemon,
           mounts the target, relays until it is unmounted, and exits 0.

  (listening, the default when no other mode is given)
           Listen on a SEQPACKET socket (-l path, else $PERFUSE_SOCKET, else
           /run/perfused.sock; mode 0666, access is decided per mount) and
           serve one mount per connection, any number at once, each owned by
           the connecting process's user (SO_PEERCRED). perfuse.Open connects
           here when the socket exists. perfused does not fork: run it under
           a service manager, or in the background. Under systemd socket
           activation (ListenSequentialPacket=) it serves the socket the unit
           passes, with the unit's SocketMode= and SocketGroup=: restrict who
           may mount there (SECURITY.md).

  MOUNTPOINT -- COMMAND [ARGS...]
           Wrap an unmodified FUSE daemon (libfuse 3, go-fuse): start COMMAND
           with the relay's socket as fd 3, perform INIT with it, mount at
           MOUNTPOINT and relay until MOUNTPOINT is unmounted or COMMAND
           exits. Write /dev/fd/3 where the daemon expects its mountpoint,
           and keep it in the foreground (-f) if it has the option, e.g.
               perfused /mnt/sq -- squashfuse -f image.sqfs /dev/fd/3
               perfused /mnt/ov -- fuse-overlayfs -f -o lowerdir=L,upperdir=U,workdir=W /dev/fd/3
           Daemons that cannot take /dev/fd/3 (libfuse 2: bindfs, fuse-zip,
           fuse2fs, unionfs-fuse) are given the real MOUNTPOINT instead:
               perfused /mnt/x -- bindfs -f /src /mnt/x
               perfused /mnt/z -- fuse-zip -f -r archive.zip /mnt/z
           When no argument names /dev/fd/3 (or with -fusermount), perfused
           runs COMMAND in a private mount namespace where its mount(2) fails
           with EPERM and fusermount is perfused itself, which hands the
           daemon the relay's socket (through _FUSE_COMMFD, as fusermount
           hands over /dev/fuse) and reports the daemon's mount options;
           "fusermount -u" does nothing there. perfused mounts MOUNTPOINT in
           its own namespace; the daemon's shows a read-only placeholder
           there. This needs root; libfuse 2 and 3, go-fuse and
           bazil.org/fuse daemons work so. A daemon that calls mount(2)
           itself and never runs fusermount (ntfs-3g) is refused.
           Either way the daemon's kernel mount options (ro, rw, nosuid,
           nodev, noexec, sync, dirsync, noatime, allow_other,
           default_permissions, fsname=, subtype=, max_read=) are applied:
           with /dev/fd/3 perfused reads the -o options on its command line
           as libfuse does. Options it cannot apply (blksize=, blkdev,
           context=) and a daemon's own flags that read like one (-ro,
           --allow-other) refuse the mount, naming the fix.
           The mount is owned by the user running perfused, and its
           mountpoint is checked before COMMAND starts.

  -demo    Run the demo: an embedded in-memory FUSE filesystem served by a
           go-fuse daemon over a socket. As root with /dev/fuse it is first
           mounted through the kernel at a temporary directory, walked, read,
           compared and written with ordinary file calls, and unmounted; then
           (or only, without /dev/fuse or root, which it says) the same tree
           is read mount-free through perfuse's operation table. The FUSE
           trace statistics are printed.

Flags:
  -o options  Mount options as mount(8) takes them, applied to every mount and
              winning over what the daemon asks: allow_other,
              default_permissions, ro, rw, noexec, suid, dev (root owners
              only), fsname=NAME (the source shown in /proc/mounts; default
              the daemon's source), subtype=NAME (shown as fuse.NAME; default
              perfuse), max_read=N. Unknown options are warned about.
  -d classes  Diagnostic classes, comma-separated: fuse, puffs, dump, fh,
              reclaim, readdir, requeue, sync, misc, filename, resize, trace
              (unknown words are warned about). puffs also logs every kernel
              request; trace keeps trace records from the start.
  -f          Foreground: also log "misc" diagnostics. (perfused never
              forks; the flag is accepted for compatibility.)
  -s          Start with the -d classes off; SIGUSR2 swaps them on and off
              (upstream uses SIGINFO, which Linux lacks).
  -t dir      Where SIGUSR1 writes trace dumps (default /run/perfused). A
              dump that cannot be written is a warning, never a dead mount.
  -l path     Listening socket path (listening mode).
  -fusermount Wrap mode: use the stand-in fusermount (above) even though an
              argument names /dev/fd/3.
  -grace d    On SIGINT/SIGTERM, how long a mount may stay in use (open
              files, or requests a daemon that stopped reading has not
              answered) before perfused aborts its own kernel connection
              (default 5s; Go duration syntax, e.g. 500ms, 10s).

Limits (listening mode; a refusal is logged once per kind and user every
10 s, and told to the client: perfuse.Mount returns it; root is never
refused):
  -max-pending N       connections not yet mounted, in total (default 128)
  -max-pending-user N  the same, per user (default 16)
  -mount-max N         live mounts of users other than root, in total
                       (default: mount_max from /etc/fuse.conf, else 1000)
  -mount-max-user N    live mounts per user other than root (default 100)
A connection has 10 s to send its mount frame and its daemon 10 s more to
answer INIT and be mounted.

Policy (fixed): a mount owned by a user other than root is nosuid,nodev; its
mountpoint must be a directory owned by that user and readable and writable
by them (readable for ro), reached with that user's rights, on a file system
type fusermount3 allows (not procfs, sysfs, ...), checked on the directory
itself (O_NOFOLLOW, fstat, fstatfs) and mounted through that same
descriptor; allow_other is granted to such a user only if /etc/fuse.conf has
user_allow_other (or -o allow_other was given to perfused). Mounts show in
/proc/mounts with the daemon's fsname, as fuse.SUBTYPE when the daemon asked
for a subtype (wrap mode; e.g. -o subtype=mine shows fuse.mine), else as
fuse.perfuse. SECURITY.md has the threat model.

Signals:
  SIGUSR1         toggle tracing; turning it off dumps the trace of every
                  mount to DIR/perfused<target, "%" "-" "/" as %25 %2D ->.trace
                  (DIR must be perfused's own and writable by nobody else)
  SIGUSR2         with -s, toggle the -d diagnostics
  SIGINT, SIGTERM unmount every mount (lazily if busy) and exit 0 once all
                  are gone; a mount still in use after -grace (open files,
                  or requests its daemon has not answered) has its
                  connection aborted (its processes get ENOTCONN), its
                  daemon ended, and perfused exits 1

Exit: 0 after a clean unmount; 1 when the FUSE daemon exited or crashed
while mounted (the mount is then removed, lazily if busy, and processes using
it get ENOTCONN instead of hanging); 2 for usage errors; 1 for a refused or
failed mount. If perfused itself is killed, the kernel aborts the FUSE
connection: processes get ENOTCONN, and "umount -l MOUNTPOINT" (or
"fusermount3 -u -z") removes the dead mount.

Environment: PERFUSE_SOCKET (listening socket), PERFUSE_BUFSIZE (socket
buffers), PERFUSE_OPTIONS (enable_access, disable_access, enable_creat,
disable_creat).
`

// flags are the parsed command line.
type flags struct {
	fd       int
	listen   string
	opts     policy.Options
	diag     perfuse.Diag
	fg       bool
	swap     bool
	traceDir string
	demo     bool
	// fusermount: run the wrapped daemon with a stand-in fusermount even
	// if its command line names /dev/fd/3.
	fusermount bool
	wrap       []string // MOUNTPOINT COMMAND ARGS...
	// grace is how long SIGTERM waits for stuck requests before aborting
	// the kernel connection.
	grace time.Duration
	lim   limits
}

func parseFlags(args []string, _ io.Writer) (*flags, error) {
	fl := flag.NewFlagSet("perfused", flag.ContinueOnError)
	// main prints the usage for -help itself (to stdout), and an error
	// once with a one-line hint: the flag package must print neither.
	fl.SetOutput(io.Discard)
	fl.Usage = func() {}
	f := &flags{}
	fdStr := fl.String("i", "", "serve the mount on socket `fd`")
	fl.StringVar(&f.listen, "l", "", "listening socket `path`")
	optStr := fl.String("o", "", "mount `options`")
	diagStr := fl.String("d", "", "diagnostic `classes`")
	fl.BoolVar(&f.fg, "f", false, "foreground")
	fl.BoolVar(&f.swap, "s", false, "start with diagnostics off; SIGUSR2 toggles")
	fl.StringVar(&f.traceDir, "t", "", "trace dump `dir`")
	fl.BoolVar(&f.demo, "demo", false, "run the demo")
	fl.BoolVar(&f.fusermount, "fusermount", false, "wrap mode: hand the daemon our socket through a stand-in fusermount")
	fl.DurationVar(&f.grace, "grace", 5*time.Second, "on SIGTERM, how long stuck requests may take before the connection is aborted")
	mountMax := defaultMountMax
	if n, ok := policy.MountMax(); ok {
		mountMax = n
	}
	fl.IntVar(&f.lim.PendingTotal, "max-pending", defaultPendingTotal, "connections not yet mounted, in total")
	fl.IntVar(&f.lim.PendingPerUser, "max-pending-user", defaultPendingPerUser, "connections not yet mounted, per user")
	fl.IntVar(&f.lim.MountsTotal, "mount-max", mountMax, "mounts of users other than root, in total")
	fl.IntVar(&f.lim.MountsPerUser, "mount-max-user", defaultMountsPerUser, "mounts per user other than root")
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if f.grace <= 0 || f.lim.PendingTotal <= 0 || f.lim.PendingPerUser <= 0 || f.lim.MountsTotal <= 0 || f.lim.MountsPerUser <= 0 {
		return nil, errors.New("-grace and the limits must be positive")
	}
	f.fd = -1
	if *fdStr != "" {
		n, err := strconv.Atoi(*fdStr)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-i %q: not a descriptor", *fdStr)
		}
		f.fd = n
	}
	if unk := f.opts.Parse(*optStr); len(unk) > 0 {
		slog.Warn("perfused: unknown mount options ignored", "options", strings.Join(unk, ","))
	}
	d, unknown := perfuse.ParseDiag(*diagStr)
	for _, w := range unknown {
		slog.Warn("perfused: unknown diagnostic class ignored", "class", w)
	}
	f.diag = d
	if f.fg {
		f.diag |= perfuse.DiagMisc
	}
	if rest := fl.Args(); len(rest) > 0 {
		if len(rest) < 3 || rest[1] != "--" {
			return nil, fmt.Errorf("want MOUNTPOINT -- COMMAND [ARGS...], got %q", rest)
		}
		f.wrap = append([]string{rest[0]}, rest[2:]...)
	}
	modes := 0
	for _, on := range []bool{f.fd >= 0, f.wrap != nil, f.demo, f.listen != ""} {
		if on {
			modes++
		}
	}
	if modes > 1 {
		return nil, errors.New("-i, -l, -demo and MOUNTPOINT -- COMMAND exclude each other")
	}
	return f, nil
}

func main() {
	// perfused is also the stand-in fusermount of wrap mode, and the
	// helper that sets up the wrapped daemon's mount namespace.
	if status, ok := fusermount.Run(os.Args); ok {
		os.Exit(status)
	}
	// And the helper that looks a user's mountpoint up as that user.
	if status, ok := policy.RunHelper(os.Args); ok {
		os.Exit(status)
	}
	// go-fuse logs through the standard log package; keep it on stderr
	// with our prefix. perfuse logs through slog.
	log.SetFlags(0)
	log.SetPrefix("perfused: ")
	var level slog.LevelVar
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: &level})))
	f, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(os.Stdout, usage)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfused:", err)
		fmt.Fprint(os.Stderr, "run perfused --help for the modes\n")
		os.Exit(2)
	}
	if f.diag&^perfuse.DiagTrace != 0 && !f.swap {
		level.Set(slog.LevelDebug)
	}
	if f.demo {
		if err := runDemo(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "perfused: demo:", err)
			os.Exit(1)
		}
		return
	}
	d := newDaemon(f)
	switch {
	case f.fd >= 0:
		err = d.serveFd(f.fd)
	case f.wrap != nil:
		err = d.wrap(f.wrap[0], f.wrap[1:])
	default:
		err = d.listenAndServe(f.listen)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfused:", err)
		os.Exit(1)
	}
}
