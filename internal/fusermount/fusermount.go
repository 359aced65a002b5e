// Package fusermount lets perfused's wrap mode run FUSE daemons that mount
// a real mountpoint themselves instead of taking /dev/fd/3 (libfuse 2
// daemons such as bindfs, fuse-zip, fuse2fs, unionfs-fuse; libfuse 3,
// go-fuse and bazil.org/fuse daemons given a real mountpoint), handing
// them perfused's socket instead of a /dev/fuse connection.
//
// How such a daemon gets its FUSE descriptor: libfuse first tries mount(2)
// itself; when that fails with EPERM it runs /bin/fusermount (libfuse 3:
// fusermount3; go-fuse and bazil run fusermount3 straight away) with
// _FUSE_COMMFD naming one end of a socketpair, and fusermount mounts and
// sends the /dev/fuse descriptor back over that socket with SCM_RIGHTS.
// perfused plays all the parts:
//
//  1. It starts itself (EnvSetup set) as a helper, in a new mount namespace
//     whose mounts are private (nothing perfused mounts later reaches it).
//  2. The helper (Setup) bind-mounts its own executable over every
//     fusermount and fusermount3 in that namespace and /dev/null over
//     /dev/fuse, makes mount(2) fail with EPERM and umount2(2) do nothing
//     for the daemon (a seccomp filter), and execs the daemon. The
//     mountpoint is left as it is: a daemon that checks it is not yet
//     mounted (rclone) finds it so.
//  3. The daemon runs "fusermount"; that is perfused again, which knows the
//     part by its name alone, whatever environment and descriptors the
//     daemon gave it (Standin). It sends its arguments (the daemon's mount
//     options and mountpoint) to perfused over a private channel (see
//     Listen), receives the relay's socket, passes it over _FUSE_COMMFD and
//     exits 0. "fusermount -u" (the daemon's unmount at exit) does nothing.
//  4. perfused applies the options (or refuses them, and the stand-in says
//     why), performs INIT and mounts the real mountpoint in its own
//     namespace as in any wrap mount.
package fusermount

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// EnvDaemon marks the wrapped daemon's environment (its value is the
	// mountpoint), so that it and what it starts can be told apart.
	EnvDaemon = "PERFUSED_WRAPPED"
	// EnvSetup marks the namespace helper (Setup).
	EnvSetup = "PERFUSED_FUSERMOUNT_SETUP"
	// EnvTarget tells the helper the mountpoint.
	EnvTarget = "PERFUSED_FUSERMOUNT_TARGET"
	// CommFDEnv is how libfuse names its end of the descriptor socket.
	CommFDEnv = "_FUSE_COMMFD"
	// SocketFD is where a daemon given /dev/fd/3 gets perfused's socket.
	SocketFD = 3
)

// helloMagic starts the request the stand-in sends perfused.
const helloMagic = "perfused-fusermount\x00"

// Paths is where fusermount binaries may be; every one that exists is
// replaced by the stand-in in the daemon's namespace. libfuse 2 runs
// /bin/fusermount (then "fusermount" on PATH), libfuse 3 runs
// /usr/bin/fusermount3, go-fuse looks fusermount3 then fusermount up on
// PATH, then in /bin; bazil.org/fuse runs fusermount3 from PATH.
var Paths = []string{
	"/bin/fusermount", "/usr/bin/fusermount", "/bin/fusermount3", "/usr/bin/fusermount3",
	"/usr/local/bin/fusermount", "/usr/local/bin/fusermount3", "/sbin/fusermount", "/usr/sbin/fusermount",
}

// IsStandin reports whether a program run as argv0 is the stand-in: in the
// daemon's namespace perfused's executable is run under fusermount's name,
// and that name is all it can count on.
func IsStandin(argv0 string) bool {
	return strings.HasPrefix(filepath.Base(argv0), "fusermount")
}

// Run is called first thing in perfused's main with os.Args. It returns
// false when perfused runs as itself. Otherwise it plays the part it was
// started for and returns the exit status: the stand-in fusermount (it is
// run under that name), or the namespace helper (EnvSetup=1), which only
// returns if it could not exec the daemon.
func Run(args []string) (status int, ok bool) {
	if os.Getenv(EnvSetup) == "1" {
		err := Setup(args[1:])
		fmt.Fprintln(os.Stderr, "perfused:", err)
		return 127, true
	}
	if len(args) > 0 && IsStandin(args[0]) {
		if err := Standin(args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "fusermount (perfused's stand-in):", strings.TrimSpace(err.Error()))
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// Command returns the command that runs argv as a daemon whose fusermount
// is the stand-in: self (perfused's executable) as the namespace helper in
// a new private mount namespace, target the mountpoint. The caller sets the
// standard streams, starts it, and then listens for the stand-in (Listen,
// with the namespace of the started process); Setpgid and Pdeathsig carry
// over to the daemon, which the helper becomes by exec.
func Command(self string, argv []string, target string) *exec.Cmd {
	cmd := exec.Command(self, argv...)
	cmd.Args[0] = argv[0]
	cmd.Env = append(os.Environ(), EnvSetup+"=1", EnvTarget+"="+target)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:      true,
		Pdeathsig:    syscall.SIGTERM,
		Unshareflags: syscall.CLONE_NEWNS, // Go makes "/" MS_REC|MS_PRIVATE too
	}
	return cmd
}

// Setup is the namespace helper: in its private mount namespace it puts
// the stand-in in place of fusermount and /dev/null in place of /dev/fuse,
// makes mount(2) fail with EPERM and umount2(2) a no-op, and execs argv.
// It returns only on error.
func Setup(argv []string) error {
	target := os.Getenv(EnvTarget)
	os.Unsetenv(EnvSetup)
	os.Unsetenv(EnvTarget)
	if len(argv) == 0 {
		return errors.New("fusermount setup: no command")
	}
	// Go's Unshareflags already did this; make sure nothing we mount leaks
	// out (or the real mount in).
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the daemon's mounts private: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	done := map[string]bool{}
	for _, p := range Paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil || done[real] {
			continue
		}
		if err := unix.Mount(self, real, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind the stand-in over %s: %w", real, err)
		}
		done[real] = true
	}
	if len(done) == 0 {
		return fmt.Errorf("no fusermount found to stand in for (looked at %s); install fuse3", strings.Join(Paths, ", "))
	}
	if _, err := os.Stat("/dev/fuse"); err == nil {
		if err := unix.Mount("/dev/null", "/dev/fuse", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/null over /dev/fuse: %w", err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	env := append(os.Environ(), EnvDaemon+"="+target)
	runtime.LockOSThread()
	if err := denyMount(); err != nil {
		return err
	}
	return fmt.Errorf("exec %s: %w", argv[0], syscall.Exec(path, argv, env))
}

// auditArch is the seccomp architecture of this build's system calls.
var auditArch = map[string]uint32{
	"amd64":   unix.AUDIT_ARCH_X86_64,
	"arm64":   unix.AUDIT_ARCH_AARCH64,
	"386":     unix.AUDIT_ARCH_I386,
	"riscv64": unix.AUDIT_ARCH_RISCV64,
	"ppc64le": unix.AUDIT_ARCH_PPC64LE,
	"s390x":   unix.AUDIT_ARCH_S390X,
	"loong64": unix.AUDIT_ARCH_LOONGARCH64,
}

// denyMount makes mount(2) (and the new mount API's fsopen) fail with
// EPERM in this process and whatever it execs, which is what sends libfuse
// to fusermount, and makes umount2(2) succeed
// without doing anything: libfuse unmounts its mountpoint itself at exit
// as root, and in this namespace nothing is mounted there (perfused
// removes the real mount). move_mount stays allowed: without fsopen or
// mount(2) it can only move mounts about in this private namespace, and
// the stand-in uses it for the placeholder (Placeholder). Every other call, privilege and capability
// stays: the daemon behaves as it would as root. On an architecture
// without a table entry CAP_SYS_ADMIN is dropped from the bounding set
// instead (mount(2) then fails with EPERM too, but so do a few other
// calls, e.g. setting trusted.* attributes).
func denyMount() error {
	arch, ok := auditArch[runtime.GOARCH]
	if !ok {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_ADMIN, 0, 0, 0); err != nil {
			return fmt.Errorf("drop CAP_SYS_ADMIN: %w", err)
		}
		return nil
	}
	const (
		allow = unix.SECCOMP_RET_ALLOW
		deny  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		noop  = unix.SECCOMP_RET_ERRNO // errno 0: the call returns 0
	)
	ld := func(k uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: k}
	}
	ret := func(k uint32) unix.SockFilter { return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k} }
	// jeq jumps to the instruction ret(action) of the table at the end.
	var f []unix.SockFilter
	calls := []struct{ nr, action uint32 }{
		{unix.SYS_MOUNT, deny}, {unix.SYS_FSOPEN, deny}, {unix.SYS_UMOUNT2, noop},
	}
	f = append(f, ld(4), unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, K: arch}, ret(allow), ld(0))
	for i, c := range calls {
		// After this jeq: the rest of the jeqs, ret(allow), then one
		// ret per call in order.
		skip := len(calls) - i - 1 + 1 + i
		f = append(f, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: uint8(skip), K: c.nr})
	}
	f = append(f, ret(allow))
	for _, c := range calls {
		f = append(f, ret(c.action))
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	_, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(f)
	if e != 0 {
		return fmt.Errorf("seccomp filter denying mount(2): %w", e)
	}
	return nil
}

// Standin is fusermount as the daemon runs it: args are its arguments
// (without the program name). For a mount it fetches the relay's socket
// from perfused (fetch), sending it args, and passes it over
// _FUSE_COMMFD; "-u" (unmount) does nothing: perfused owns the real mount
// and ends it.
func Standin(args []string) error {
	for _, a := range args {
		switch a {
		case "-u", "--unmount":
			return nil
		case "-V", "--version":
			fmt.Println("fusermount3 version: 3.14.0 (perfused's stand-in)")
			return nil
		case "-h", "--help":
			fmt.Println("perfused's stand-in fusermount: hands a wrapped daemon perfused's socket")
			return nil
		}
	}
	commfd, err := strconv.Atoi(os.Getenv(CommFDEnv))
	if err != nil || commfd < 0 {
		return fmt.Errorf("%s=%q: not a descriptor (run by a FUSE library?)", CommFDEnv, os.Getenv(CommFDEnv))
	}
	fd, err := fetch(args)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		err = unix.Sendmsg(commfd, []byte{0}, unix.UnixRights(fd), nil, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("send the descriptor over %s=%d: %w", CommFDEnv, commfd, err)
	}
	return nil
}

// Hello is the record the stand-in sends perfused: the magic, then its
// arguments, each followed by a NUL.
func Hello(args []string) []byte {
	var b bytes.Buffer
	b.WriteString(helloMagic)
	for _, a := range args {
		b.WriteString(a)
		b.WriteByte(0)
	}
	return b.Bytes()
}

// Request is what the daemon asked fusermount for.
type Request struct {
	Options    string // the -o options, comma-joined
	Mountpoint string
	Args       []string // all of fusermount's arguments
}

// ParseHello decodes a Hello record.
func ParseHello(b []byte) (*Request, error) {
	rest, ok := bytes.CutPrefix(b, []byte(helloMagic))
	if !ok {
		return nil, errors.New("not a hello from the stand-in fusermount")
	}
	r := &Request{}
	for len(rest) > 0 {
		a, tail, ok := bytes.Cut(rest, []byte{0})
		if !ok {
			return nil, errors.New("hello from the stand-in fusermount: unterminated argument")
		}
		r.Args = append(r.Args, string(a))
		rest = tail
	}
	var opts []string
	for i := 0; i < len(r.Args); i++ {
		a := r.Args[i]
		switch {
		case a == "--":
			if i+1 < len(r.Args) {
				r.Mountpoint = r.Args[i+1]
			}
			i = len(r.Args)
		case a == "-o" && i+1 < len(r.Args):
			opts = append(opts, r.Args[i+1])
			i++
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = append(opts, a[2:])
		case strings.HasPrefix(a, "-"):
		default:
			r.Mountpoint = a
		}
	}
	r.Options = strings.Join(opts, ",")
	return r, nil
}
