// Package fusermount lets perfused's wrap mode run FUSE daemons that insist
// on mounting a real mountpoint themselves (libfuse 2 daemons such as bindfs,
// fuse-zip, fuse2fs, unionfs-fuse, which cannot take /dev/fd/N), handing them
// perfused's socket instead of a /dev/fuse connection.
//
// How such a daemon gets its FUSE descriptor: libfuse first tries mount(2)
// itself; when that fails with EPERM it runs /bin/fusermount (libfuse 3:
// fusermount3) with _FUSE_COMMFD naming one end of a socketpair, and
// fusermount mounts and sends the /dev/fuse descriptor back over that socket
// with SCM_RIGHTS. perfused plays all the parts:
//
//  1. It starts itself (EnvSetup set) as a helper, in a new mount namespace
//     whose mounts are private (nothing perfused mounts later reaches it, so
//     the daemon never sees the real mount, busy or otherwise).
//  2. The helper (Setup) bind-mounts its own executable over every
//     fusermount and fusermount3 in that namespace and /dev/null over
//     /dev/fuse, makes mount(2) fail with EPERM for the daemon (a seccomp
//     filter), and execs the daemon with perfused's socket as fd 3 and
//     EnvFD=3.
//  3. The daemon's mount(2) fails with EPERM, so libfuse runs "fusermount";
//     that is perfused again, which sees its name and EnvFD and acts as the
//     stand-in (Standin): it sends a Hello record with its arguments (the
//     daemon's mount options and mountpoint) on fd 3, passes fd 3 over
//     _FUSE_COMMFD and exits 0. "fusermount -u" (libfuse's unmount at exit)
//     does nothing and exits 0.
//  4. perfused reads the Hello (ReadHello), then performs INIT and mounts the
//     real mountpoint in its own namespace as in any wrap mount.
package fusermount

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/perfuse-go/perfuse/internal/sock"
	"golang.org/x/sys/unix"
)

const (
	// EnvFD names the descriptor (in the daemon and so in the stand-in)
	// that is perfused's socket.
	EnvFD = "PERFUSED_FUSERMOUNT_FD"
	// EnvSetup marks the namespace helper (Setup).
	EnvSetup = "PERFUSED_FUSERMOUNT_SETUP"
	// EnvTarget tells the helper the mountpoint.
	EnvTarget = "PERFUSED_FUSERMOUNT_TARGET"
	// CommFDEnv is how libfuse names its end of the descriptor socket.
	CommFDEnv = "_FUSE_COMMFD"
	// SocketFD is where the daemon gets perfused's socket.
	SocketFD = 3
)

// helloMagic starts the record the stand-in sends perfused before anything
// else on the socket. A FUSE reply could never start so: its first four
// bytes are its length.
const helloMagic = "perfused-fusermount\x00"

// Paths is where fusermount binaries may be; every one that exists is
// replaced by the stand-in in the daemon's namespace. libfuse 2 runs
// /bin/fusermount (then "fusermount" on PATH), libfuse 3 runs
// /usr/bin/fusermount3, go-fuse looks fusermount3 then fusermount up on
// PATH.
var Paths = []string{
	"/bin/fusermount", "/usr/bin/fusermount", "/bin/fusermount3", "/usr/bin/fusermount3",
	"/usr/local/bin/fusermount", "/usr/local/bin/fusermount3", "/sbin/fusermount", "/usr/sbin/fusermount",
}

// Run is called first thing in perfused's main with os.Args. It returns
// false when perfused runs as itself. Otherwise it plays the part it was
// started for and returns the exit status: the stand-in fusermount (its
// name starts with "fusermount" and EnvFD is set), or the namespace helper
// (EnvSetup=1), which only returns if it could not exec the daemon.
func Run(args []string) (status int, ok bool) {
	if os.Getenv(EnvSetup) == "1" {
		err := Setup(args[1:])
		fmt.Fprintln(os.Stderr, "perfused:", err)
		return 127, true
	}
	if len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "fusermount") && os.Getenv(EnvFD) != "" {
		if err := Standin(args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "fusermount (perfused stand-in):", err)
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// Command returns the command that runs argv as a daemon handed sock through
// the stand-in: self (perfused's executable) as the namespace helper in a
// new private mount namespace, sock as its fd 3, target the mountpoint. The caller sets the
// standard streams and starts it; Setpgid and Pdeathsig carry over to the
// daemon, which the helper becomes by exec.
func Command(self string, argv []string, sock *os.File, target string) *exec.Cmd {
	cmd := exec.Command(self, argv...)
	cmd.Args[0] = argv[0]
	cmd.Env = append(os.Environ(), EnvSetup+"=1", EnvTarget+"="+target)
	cmd.ExtraFiles = []*os.File{sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:      true,
		Pdeathsig:    syscall.SIGTERM,
		Unshareflags: syscall.CLONE_NEWNS, // Go makes "/" MS_REC|MS_PRIVATE too
	}
	return cmd
}

// Setup is the namespace helper: in its private mount namespace it puts
// the stand-in in place of fusermount and /dev/null in place of /dev/fuse,
// makes mount(2) fail with EPERM, and execs argv. It returns only on error.
//
// The mountpoint is bound onto itself there, so that what libfuse does at
// exit as root, umount2(mountpoint, MNT_DETACH), finds a mount to remove
// (that private one) instead of failing with a message.
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
	if target != "" {
		unix.Mount(target, target, "", unix.MS_BIND, "") // best effort: see above
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
	env := append(os.Environ(), EnvFD+"="+strconv.Itoa(SocketFD))
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

// denyMount makes mount(2) (and the new mount API's fsopen and
// move_mount) fail with EPERM in this process and whatever it execs, which
// is what sends libfuse to fusermount. Every other call, privilege and
// capability stays: the daemon behaves as it would as root. On an
// architecture without a table entry CAP_SYS_ADMIN is dropped from the
// bounding set instead (mount(2) then fails with EPERM too, but so do a few
// other calls, e.g. setting trusted.* attributes).
func denyMount() error {
	arch, ok := auditArch[runtime.GOARCH]
	if !ok {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_ADMIN, 0, 0, 0); err != nil {
			return fmt.Errorf("drop CAP_SYS_ADMIN: %w", err)
		}
		return nil
	}
	deny := unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	f := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 4}, // seccomp_data.arch
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: arch},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 3, Jf: 0, K: unix.SYS_MOUNT},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 2, Jf: 0, K: unix.SYS_FSOPEN},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: unix.SYS_MOVE_MOUNT},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_RET | unix.BPF_K, K: deny},
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
// (without the program name). For a mount it sends the Hello record and
// then the socket EnvFD names over _FUSE_COMMFD; "-u" (unmount) does
// nothing: perfused owns the real mount and ends it.
func Standin(args []string) error {
	for _, a := range args {
		switch a {
		case "-u":
			return nil
		case "-V", "--version":
			fmt.Println("fusermount version: 2.9.9 (perfused stand-in)")
			return nil
		case "-h", "--help":
			fmt.Println("perfused's stand-in fusermount: hands the daemon perfused's socket")
			return nil
		}
	}
	fd, err := strconv.Atoi(os.Getenv(EnvFD))
	if err != nil || fd < 0 {
		return fmt.Errorf("%s=%q: not a descriptor", EnvFD, os.Getenv(EnvFD))
	}
	commfd, err := strconv.Atoi(os.Getenv(CommFDEnv))
	if err != nil || commfd < 0 {
		return fmt.Errorf("%s=%q: not a descriptor (run by a FUSE library?)", CommFDEnv, os.Getenv(CommFDEnv))
	}
	if t, err := sock.Type(fd); err != nil {
		return fmt.Errorf("fd %d is no longer perfused's socket (did the daemon close it?): %w", fd, err)
	} else if t != unix.SOCK_SEQPACKET && t != unix.SOCK_DGRAM {
		return fmt.Errorf("fd %d is not perfused's socket (type %d)", fd, t)
	}
	if err := sock.SendRecord(fd, Hello(args)); err != nil {
		return fmt.Errorf("tell perfused: %w", err)
	}
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

// ErrNoHello is returned by ReadHello when the daemon closed the socket (or
// exited) without running fusermount.
var ErrNoHello = errors.New("it closed its socket (or exited) without running fusermount")

// ReadHello waits up to timeout for the stand-in's Hello on fd, perfused's
// end of the socket.
func ReadHello(fd int, timeout time.Duration) (*Request, error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("the daemon did not run fusermount within %v", timeout)
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(min(left, time.Second)/time.Millisecond)+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		break
	}
	buf := make([]byte, 64<<10)
	n, _, err := sock.RecvRecord(fd, buf)
	if errors.Is(err, io.EOF) {
		return nil, ErrNoHello
	}
	if err != nil {
		return nil, err
	}
	return ParseHello(buf[:n])
}
