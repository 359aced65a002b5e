package kernel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse"
	"golang.org/x/sys/unix"
)

// CanMount says whether this process can make kernel FUSE mounts with
// mount(2): it is root and /dev/fuse opens read-write. It returns the
// reason when not.
func CanMount() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not root"
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return false, "no usable /dev/fuse: " + err.Error()
	}
	f.Close()
	return true, ""
}

// Config says how the kernel mount is made. The zero value is a private
// (owner-only), nosuid, nodev mount with subtype "perfuse".
type Config struct {
	// AllowOther lets users other than the owner in (allow_other). The
	// caller decides whether the owner may ask for it.
	AllowOther bool
	// DefaultPermissions has the kernel check modes itself.
	DefaultPermissions bool
	// ReadOnly mounts read-only.
	ReadOnly bool
	// Suid and Dev keep setuid bits and device nodes working; they are
	// honoured for a root owner only (a user's mount is always
	// nosuid,nodev). NoExec forbids execution.
	Suid, Dev, NoExec bool
	// FsName is the source shown in /proc/mounts; default: the mount
	// frame's source, else "perfuse".
	FsName string
	// Subtype is the type shown as fuse.SUBTYPE; default "perfuse".
	Subtype string
	// MaxRead caps the kernel's READ size (0: what the daemon allows).
	MaxRead int
	// Dir, when set, is the mountpoint opened with O_DIRECTORY|O_NOFOLLOW
	// by the policy check: a root mount goes through /proc/self/fd/N, so
	// the directory checked is the directory mounted on.
	Dir *os.File
	// Logger receives diagnostics (default slog.Default()).
	Logger *slog.Logger
	// Debug logs every kernel request (go-fuse's debug output).
	Debug bool
}

// Mountpoint is a session mounted in the kernel, as Mount returns it.
//
// It pairs the two ends, so that neither outlives the other: a kernel
// unmount (umount(8), Unmount) ends the session (u.Unmount, which sends
// FUSE_DESTROY); a daemon that exits or dies ends the session first, and
// the kernel mount is then removed (lazily if busy) and its connection
// aborted, so that processes using it get ENOTCONN instead of hanging.
// Done says when both have ended.
type Mountpoint struct {
	Config
	fs         *FS
	u          *perfuse.Usermount
	target     string
	fusermount bool
	conn       uint32     // FUSE connection number (device minor), 0 if unknown
	dirMu      sync.Mutex // guards dirFd, held across the syscalls that use it
	dirFd      int        // our own dup of Config.Dir while mounted, -1 if none
	ctlMu      sync.Mutex // guards ctlFd
	ctlFd      int        // our connection's fusectl directory (abort.go), -1 if none
	forced     atomic.Bool
	served     chan struct{}
	done       chan struct{}
	mu         sync.Mutex // guards why
	why        error
}

// Mount mounts u at its MountInfo's target, mount(2) as root, fusermount3
// otherwise, and serves the kernel's requests through u's operation
// table. u must have done INIT (perfuse.Attach, or perfuse.Init and
// FsInit), since the kernel's own INIT is answered with what the daemon
// negotiated, and its transport must be reading replies, Mainloop started
// (Attach starts it). Mount returns once the kernel has answered INIT and
// the mount is ready; a ctx already done refuses the mount.
func Mount(ctx context.Context, u *perfuse.Usermount, cfg Config) (*Mountpoint, error) {
	mi := u.MountInfo()
	if mi.Target == "" {
		return nil, fmt.Errorf("kernel: no mount target: %w", syscall.EINVAL)
	}
	if minor, _, _, _ := u.Negotiated(); minor == 0 {
		return nil, fmt.Errorf("kernel: mount %s: session has not done INIT: %w", mi.Target, syscall.EINVAL)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kernel: mount %s: %w", mi.Target, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mountpoint{Config: cfg, u: u, target: mi.Target, done: make(chan struct{}), served: make(chan struct{}), dirFd: -1, ctlFd: -1}
	m.fs = newFS(u, m.Logger)
	// The kernel gives every write its offset, O_APPEND's included.
	u.SetKernelWrites(true)
	opts := m.mountOptions(u)
	path := mi.Target
	direct := os.Geteuid() == 0
	if direct && m.Dir != nil {
		path = fmt.Sprintf("/proc/self/fd/%d", m.Dir.Fd())
	}
	opts.DirectMountStrict = direct
	if !direct {
		opts.Options = append(opts.Options, fusermountFlags(opts.DirectMountFlags)...)
	}
	srv, err := fuse.NewServer(m.fs, path, opts)
	if err != nil {
		return nil, fmt.Errorf("kernel: mount %s: %w", mi.Target, err)
	}
	m.fusermount = !direct
	if direct && m.Dir != nil {
		// Our own descriptor of the checked directory, whatever the caller
		// does with Dir: unmounting goes through it.
		if fd, err := unix.FcntlInt(m.Dir.Fd(), unix.F_DUPFD_CLOEXEC, 0); err == nil {
			m.dirFd = fd
		}
	}
	go func() {
		srv.Serve()
		close(m.served)
	}()
	// NewServer has mounted and answered the kernel's INIT. WaitMount only
	// adds go-fuse's poll hack, which opens a file under the mountpoint:
	// through /proc/self/fd/N that is the user's directory beneath the
	// mount, opened as root (a FIFO there would hang us, a symlink point
	// anywhere). Mounted that way the hack is skipped: the binding answers
	// POLL with ENOSYS anyway.
	if path == mi.Target {
		if err := srv.WaitMount(); err != nil {
			m.unmount(true)
			m.closeDir()
			return nil, fmt.Errorf("kernel: mount %s: %w", mi.Target, err)
		}
	}
	m.conn = m.connection(mi.Target)
	m.ctlFd = m.openCtl(m.conn, mi.Target)
	go m.watch()
	return m, nil
}

// mountOptions builds go-fuse's options from the Config and what INIT
// negotiated with the daemon.
func (m *Mountpoint) mountOptions(u *perfuse.Usermount) *fuse.MountOptions {
	mi := u.MountInfo()
	_, flags, maxWrite, maxRead := u.Negotiated()
	if m.MaxRead > 0 {
		maxRead = min(maxRead, m.MaxRead)
	}
	fsname := m.FsName
	if fsname == "" {
		fsname = mi.Source
	}
	if fsname == "" {
		fsname = "perfuse"
	}
	subtype := m.Subtype
	if subtype == "" {
		subtype = "perfuse"
	}
	opts := &fuse.MountOptions{
		FsName:       fsname,
		Name:         subtype,
		AllowOther:   m.AllowOther,
		MaxWrite:     min(maxWrite, maxRead),
		MaxReadAhead: readahead(u.MaxReadahead(), maxRead),
		// Requests are relayed concurrently; the daemon decides its own
		// concurrency.
		MaxBackground: 64,
		Debug:         m.Debug,
		Logger:        log.New(logWriter{m.Logger}, "go-fuse: ", 0),
		// Entries are relayed with the daemon's lookups counted: only a
		// daemon that does READDIRPLUS gets it from the kernel.
		DisableReadDirPlus: flags&perfuse.CapReaddirplus == 0,
		DirectMountFlags:   m.mountFlags(mi),
	}
	// Locks go to the daemon only if it took them in INIT (POSIX, flock
	// each on its own); otherwise the kernel keeps them locally.
	opts.ExtraCapabilities |= flags & (perfuse.CapPosixLocks | perfuse.CapFlockLocks)
	if m.DefaultPermissions {
		opts.Options = append(opts.Options, "default_permissions")
	}
	if os.Geteuid() == 0 {
		// mount(2) as root: the kernel checks access against the owner,
		// not against perfused (go-fuse puts its own ids first; the last
		// value wins).
		opts.Options = append(opts.Options, fmt.Sprintf("user_id=%d", mi.UID), fmt.Sprintf("group_id=%d", mi.GID))
	}
	return opts
}

// Linux mount(2) flags a mount frame may carry through to the kernel.
const passFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_SYNCHRONOUS |
	unix.MS_DIRSYNC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_LAZYTIME

// mountFlags: the frame's flags (perfuse.Init has already forced
// nosuid,nodev for a non-root owner), the Config's, and nosuid,nodev
// unless a root owner asked for suid or dev.
func (m *Mountpoint) mountFlags(mi perfuse.MountInfo) uintptr {
	f := uintptr(mi.Flags) & passFlags
	if mi.UID != 0 || !m.Suid {
		f |= unix.MS_NOSUID
	}
	if mi.UID != 0 || !m.Dev {
		f |= unix.MS_NODEV
	}
	if m.ReadOnly {
		f |= unix.MS_RDONLY
	}
	if m.NoExec {
		f |= unix.MS_NOEXEC
	}
	if f == 0 {
		// go-fuse takes 0 as "nosuid,nodev"; MS_SILENT changes nothing
		// else.
		f = unix.MS_SILENT
	}
	return f
}

// fusermountFlags spells mount flags as fusermount3 options.
func fusermountFlags(f uintptr) []string {
	var o []string
	for _, x := range []struct {
		bit  uintptr
		name string
	}{{unix.MS_RDONLY, "ro"}, {unix.MS_NOSUID, "nosuid"}, {unix.MS_NODEV, "nodev"}, {unix.MS_NOEXEC, "noexec"},
		{unix.MS_SYNCHRONOUS, "sync"}, {unix.MS_DIRSYNC, "dirsync"}, {unix.MS_NOATIME, "noatime"}} {
		if f&x.bit != 0 {
			o = append(o, x.name)
		}
	}
	return o
}

// watch ends whichever side outlives the other.
func (m *Mountpoint) watch() {
	select {
	case <-m.served:
		// The kernel connection ended: unmounted, or aborted. After an
		// unmount its fusectl entry goes at once; one that stays means an
		// abort with the mount still there (a dead mount: ENOTCONN for
		// everyone), which is removed here and is no clean end.
		wait := 10 * time.Second
		switch {
		case m.forced.Load():
			// Abort: the mount is gone already and the daemon may not read
			// any more: no DESTROY to wait for.
			wait = 0
		case m.aliveAfter(time.Second):
			m.setWhy(fmt.Errorf("kernel FUSE connection %d aborted from outside perfuse; %s unmounted: %w", m.conn, m.target, syscall.ECONNABORTED))
			m.unmount(true)
			wait = 0
		default:
			m.setWhy(nil)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		if err := m.u.Unmount(ctx); err != nil {
			m.Logger.Debug("perfuse: DESTROY after kernel unmount", "err", err)
		}
		cancel()
	case <-m.u.Done():
		// The daemon exited or died, or the session was ended: no request
		// can be answered any more, so the connection is aborted, while it
		// is surely still ours (before the mount goes), so nobody waits on
		// it, and the mount goes, lazily if busy.
		m.setWhy(fmt.Errorf("FUSE daemon gone: %w", syscall.ENOTCONN))
		m.abortOwn()
		m.unmount(true)
		select {
		case <-m.served:
		case <-time.After(10 * time.Second):
			m.Logger.Warn("perfuse: kernel connection still serving 10s after the daemon left", "target", m.target)
		}
	}
	m.closeDir()
	m.closeCtl()
	close(m.done)
}

func (m *Mountpoint) closeDir() {
	m.dirMu.Lock()
	defer m.dirMu.Unlock()
	if m.dirFd >= 0 {
		unix.Close(m.dirFd)
		m.dirFd = -1
	}
}

func (m *Mountpoint) setWhy(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.why == nil {
		m.why = err
	}
}

// Done is closed once both the kernel mount and the session have ended.
func (m *Mountpoint) Done() <-chan struct{} { return m.done }

// Err says why the mount ended: nil after an unmount, an error wrapping
// ENOTCONN when the daemon left first.
func (m *Mountpoint) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.why
}

// FS returns the binding.
func (m *Mountpoint) FS() *FS { return m.fs }

// Target returns the mountpoint.
func (m *Mountpoint) Target() string { return m.target }

// Unmount removes the kernel mount (lazily if it is busy) and waits for
// the session to end. It is safe to call more than once, and after the
// daemon has left.
func (m *Mountpoint) Unmount(ctx context.Context) error {
	m.setWhy(nil)
	err := m.unmount(false)
	select {
	case <-m.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Abort ends a mount whose requests are stuck (a daemon that stopped
// reading): it aborts the mount's own kernel connection, so every process
// waiting on it gets ENOTCONN, and removes the mount, lazily. Err then
// wraps ECONNABORTED. The session ends without waiting for the daemon's
// answer to DESTROY. It is safe to call more than once, and after the
// mount has ended.
func (m *Mountpoint) Abort() {
	m.forced.Store(true)
	m.setWhy(fmt.Errorf("kernel FUSE connection of %s aborted: requests were stuck: %w", m.Target(), syscall.ECONNABORTED))
	if !m.abortOwn() {
		m.Logger.Warn("perfuse: no fusectl entry of our own to abort the connection with", "target", m.Target())
	}
	m.unmount(true)
	// The relay's own exchanges with the daemon are stuck too, and the
	// kernel connection ends only once they return: the session goes now,
	// with no DESTROY awaited, which fails them.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.u.Unmount(ctx)
}

// unmount removes the kernel mount: a plain unmount first, a lazy one if
// that fails (busy), unless lazy is set, which goes straight to it.
func (m *Mountpoint) unmount(lazy bool) error {
	target := m.target
	if m.fusermount {
		return fusermountUnmount(target, lazy)
	}
	// As root, never by path: the owner may have swapped a directory on
	// the way for a symlink, and the path would name someone else's mount.
	// The descriptor of the directory checked at mount time names exactly
	// the mount stacked on it.
	// dirMu keeps the descriptor from being closed (and its number
	// reused) under the unmount.
	m.dirMu.Lock()
	defer m.dirMu.Unlock()
	path, flags := target, unix.UMOUNT_NOFOLLOW
	if m.dirFd >= 0 {
		path, flags = fmt.Sprintf("/proc/self/fd/%d", m.dirFd), 0
	}
	var err error
	if !lazy {
		err = unix.Unmount(path, flags)
		if err == nil || errors.Is(err, unix.EINVAL) {
			return nil
		}
	}
	err = unix.Unmount(path, unix.MNT_DETACH|flags)
	if errors.Is(err, unix.EINVAL) {
		// Not (or no longer) a mountpoint.
		return nil
	}
	return err
}

func fusermountUnmount(target string, lazy bool) error {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return err
		}
	}
	args := []string{"-u", "-q"}
	if lazy {
		args = append(args, "-z")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, append(args, target)...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if lazy {
			return fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(stderr.String()))
		}
		return fusermountUnmount(target, true)
	}
	return nil
}

// logWriter sends go-fuse's log lines to slog at debug level.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// readahead is the daemon's max_readahead, bounded by what one READ may
// carry; a daemon that answered 0 gets the read size.
func readahead(daemon uint32, maxRead int) int {
	if daemon == 0 {
		return maxRead
	}
	return min(int(daemon), maxRead)
}

// connection finds the fusectl id of the mount just made: the device minor
// of the newest fuse.perfuse mount stacked on the mountpoint. With the
// directory's descriptor the mountpoint's path comes from the same dentry
// as /proc/self/mountinfo's, so a path swapped meanwhile cannot name
// another mount; without it (fusermount mounts) the path is stat'ed.
func (m *Mountpoint) connection(target string) uint32 {
	m.dirMu.Lock()
	defer m.dirMu.Unlock()
	if m.dirFd < 0 {
		var st unix.Stat_t
		if unix.Stat(target, &st) != nil {
			return 0
		}
		return unix.Minor(st.Dev)
	}
	for try := 0; try < 3; try++ {
		dir := fmt.Sprintf("/proc/self/fd/%d", m.dirFd)
		where, err := os.Readlink(dir)
		if err != nil {
			return 0
		}
		info, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return 0
		}
		var conn uint32
		for _, line := range strings.Split(string(info), "\n") {
			// ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE ...
			f := strings.Fields(line)
			sep := slices.Index(f, "-")
			if len(f) < 5 || sep < 0 || sep+1 >= len(f) || f[4] != mountinfoEscape(where) || !strings.HasPrefix(f[sep+1], "fuse") {
				continue
			}
			var major, minor uint32
			if _, err := fmt.Sscanf(f[2], "%d:%d", &major, &minor); err == nil && major == 0 {
				conn = minor // later lines are mounted on top
			}
		}
		if again, _ := os.Readlink(dir); again == where && conn != 0 {
			return conn
		}
	}
	return 0
}

// mountinfoEscape escapes a path as /proc/self/mountinfo shows it.
func mountinfoEscape(p string) string {
	return strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`).Replace(p)
}

// MountLine returns dir's line of /proc/mounts, "" if nothing is mounted
// there.
func MountLine(dir string) string {
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) > 2 && string(f[1]) == dir {
			return string(line)
		}
	}
	return ""
}
