package fusermount

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The stand-in finds perfused through neither its environment (go-fuse
// clears it before running fusermount) nor an inherited descriptor
// (bazil.org/fuse puts its own socket on fd 3, and Go's os/exec closes
// every other): perfused listens on an abstract AF_UNIX SEQPACKET socket
// named after the daemon's private mount namespace, which the stand-in,
// running inside it, names the same way. Each side checks the other by
// its credentials: perfused serves only a peer inside that namespace
// (which only the daemon and what it starts are in), and the stand-in
// takes the socket only from a listener owned by root or its own user.

// standinWait bounds how long the stand-in waits for perfused's channel
// (perfused binds it right after starting the daemon) and for its answer.
var standinWait = 10 * time.Second

// Namespace returns the identity of the mount namespace of process pid (0:
// this process), e.g. "4026532291".
func Namespace(pid int) (string, error) {
	p := "/proc/self/ns/mnt"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/ns/mnt", pid)
	}
	l, err := os.Readlink(p)
	if err != nil {
		return "", fmt.Errorf("mount namespace: %w", err)
	}
	id, ok := strings.CutPrefix(l, "mnt:[")
	if !ok || !strings.HasSuffix(id, "]") {
		return "", fmt.Errorf("mount namespace %s: unexpected %q", p, l)
	}
	return strings.TrimSuffix(id, "]"), nil
}

func channelAddr(ns string) *net.UnixAddr {
	return &net.UnixAddr{Net: "unixpacket", Name: "@perfused-fusermount." + ns}
}

// Channel is perfused's end: it hands the relay's socket to the stand-in
// run in one mount namespace.
type Channel struct {
	l  *net.UnixListener
	ns string
}

// Listen binds the channel for the mount namespace ns.
func Listen(ns string) (*Channel, error) {
	l, err := net.ListenUnix("unixpacket", channelAddr(ns))
	if err != nil {
		return nil, fmt.Errorf("channel for the stand-in fusermount: %w", err)
	}
	return &Channel{l: l, ns: ns}, nil
}

// Close stops listening; a pending Accept returns an error.
func (c *Channel) Close() error { return c.l.Close() }

// Handoff is one stand-in's request, to be answered with Give or Refuse.
type Handoff struct {
	*Request
	conn *net.UnixConn
}

// Accept waits until deadline for the stand-in of the namespace and reads
// what it was asked. Connections from outside the namespace are closed
// and reported to reject, and Accept goes on waiting.
func (c *Channel) Accept(deadline time.Time, reject func(error)) (*Handoff, error) {
	for {
		c.l.SetDeadline(deadline)
		conn, err := c.l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		h, err := c.read(conn, deadline)
		if err != nil {
			conn.Close()
			if reject != nil {
				reject(err)
			}
			continue
		}
		return h, nil
	}
}

func (c *Channel) read(conn *net.UnixConn, deadline time.Time) (*Handoff, error) {
	cred, err := peerCred(conn)
	if err != nil {
		return nil, err
	}
	if ns, err := Namespace(int(cred.Pid)); err != nil || ns != c.ns {
		return nil, fmt.Errorf("a connection from pid %d (uid %d), outside the daemon's mount namespace: refused", cred.Pid, cred.Uid)
	}
	conn.SetDeadline(deadline)
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("read the stand-in's request: %w", err)
	}
	req, err := ParseHello(buf[:n])
	if err != nil {
		return nil, err
	}
	return &Handoff{Request: req, conn: conn}, nil
}

// Give sends f (the relay socket's daemon end) to the stand-in, and
// placeholder, if not nil, for it to mount on the mountpoint (see
// Placeholder).
func (h *Handoff) Give(f, placeholder *os.File) error {
	defer h.conn.Close()
	fds := []int{int(f.Fd())}
	if placeholder != nil {
		fds = append(fds, int(placeholder.Fd()))
	}
	_, _, err := h.conn.WriteMsgUnix([]byte{'+'}, unix.UnixRights(fds...), nil)
	return err
}

// ProbeName is the file go-fuse opens under the mountpoint once fusermount
// has returned (its "poll hack", Server.WaitMount), failing the mount if
// it cannot.
const ProbeName = ".go-fuse-epoll-hack"

// Placeholder returns a detached read-only tmpfs that holds an empty
// ProbeName. The stand-in mounts it on the mountpoint in the daemon's
// namespace: after fusermount a daemon finds its mountpoint mounted, as
// with the real one, although perfused's kernel mount (made after INIT
// with the daemon, in perfused's namespace) is not visible there. go-fuse
// daemons need this: their probe runs as soon as INIT is answered.
func Placeholder() (*os.File, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("placeholder: fsopen tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	for k, v := range map[string]string{"mode": "0555", "size": "4k", "nr_inodes": "8"} {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return nil, fmt.Errorf("placeholder: tmpfs %s=%s: %w", k, v, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("placeholder: tmpfs: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return nil, fmt.Errorf("placeholder: fsmount: %w", err)
	}
	probe, err := unix.Openat(mfd, ProbeName, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o444)
	if err == nil {
		unix.Close(probe)
		err = unix.MountSetattr(mfd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	}
	if err != nil {
		unix.Close(mfd)
		return nil, fmt.Errorf("placeholder: %w", err)
	}
	return os.NewFile(uintptr(mfd), "placeholder"), nil
}

// Refuse tells the stand-in why there is no mount; it prints why.
func (h *Handoff) Refuse(why string) error {
	defer h.conn.Close()
	_, err := h.conn.Write([]byte("-" + why))
	return err
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("peer credentials: %w", cerr)
	}
	return cred, nil
}

// fetch is the stand-in's end: it sends args (fusermount's arguments) to
// the perfused serving this mount namespace and returns the socket it
// hands over, or perfused's refusal. A placeholder that comes with it is
// mounted on the mountpoint.
func fetch(args []string) (int, error) {
	ns, err := Namespace(0)
	if err != nil {
		return -1, err
	}
	deadline := time.Now().Add(standinWait)
	var conn *net.UnixConn
	for {
		conn, err = net.DialUnix("unixpacket", nil, channelAddr(ns))
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) || time.Now().After(deadline) {
			return -1, fmt.Errorf("no perfused serves this mount namespace (run by a daemon that perfused wraps?): %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer conn.Close()
	cred, err := peerCred(conn)
	if err != nil {
		return -1, err
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return -1, fmt.Errorf("the channel is owned by uid %d, neither root nor us: not perfused", cred.Uid)
	}
	conn.SetDeadline(deadline.Add(standinWait))
	if _, err := conn.Write(Hello(args)); err != nil {
		return -1, fmt.Errorf("tell perfused: %w", err)
	}
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, fmt.Errorf("perfused's answer: %w", err)
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for i := range msgs {
			if got, err := unix.ParseUnixRights(&msgs[i]); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	if n > 0 && buf[0] == '+' && (len(fds) == 1 || len(fds) == 2) {
		if len(fds) == 2 {
			// Without it most daemons still work; go-fuse's will say why
			// its probe failed.
			if err := placehold(fds[1], args); err != nil {
				fmt.Fprintln(os.Stderr, "fusermount (perfused's stand-in): warning:", err)
			}
			unix.Close(fds[1])
		}
		return fds[0], nil
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if n > 0 && buf[0] == '-' {
		return -1, errors.New(string(buf[1:n]))
	}
	return -1, fmt.Errorf("perfused's answer: %q", buf[:n])
}

// placehold mounts the placeholder mfd on the mountpoint named in args.
func placehold(mfd int, args []string) error {
	req, err := ParseHello(Hello(args))
	if err != nil || req.Mountpoint == "" {
		return fmt.Errorf("no mountpoint among %q", args)
	}
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, req.Mountpoint, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount the placeholder on %s: %w", req.Mountpoint, err)
	}
	return nil
}
