// Package policy is perfused's fixed mount policy (libperfuse-behavior
// §2.1, §5.3), made race-free:
//
//   - a mount owned by anyone but root is nosuid,nodev (perfuse.Init forces
//     the flags; the kernel mount honours them);
//   - the mountpoint must be a directory owned by the owner and readable and
//     writable by them (readable only for a read-only mount), on a file
//     system type fusermount3 allows (fstype.go). It is looked up with the
//     owner's rights (resolve.go), opened with O_DIRECTORY|O_NOFOLLOW and
//     checked with fstat and fstatfs, and the mount is made on that very
//     directory (/proc/self/fd/N), so nothing can be swapped in between the
//     check and mount(2) (upstream used stat(2) as root, which follows
//     symlinks and races);
//   - allow_other only when asked for, and for a user other than root only
//     when /etc/fuse.conf says user_allow_other, as fusermount3 decides.
package policy

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/ratelog"
	"golang.org/x/sys/unix"
)

// FuseConf is the file that may grant user_allow_other.
var FuseConf = "/etc/fuse.conf"

// Owner is whom a mount is for: the credentials of the client that asked.
type Owner struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
}

// OpenMountpoint is OpenMountpointAs for uid, with gid uid and no
// supplementary groups.
func OpenMountpoint(target string, uid uint32, ro bool) (*os.File, error) {
	return OpenMountpointAs(context.Background(), target, Owner{UID: uid, GID: uid}, ro)
}

// OpenMountpointAs opens target for a mount owned by o and checks it: a
// directory, reached without following a symlink in its last component,
// owned by o.UID and with owner read (and write unless ro) permission, on a
// file system type fusermount3 allows. For a user other than root the path
// is looked up with that user's rights, in a helper bounded by
// ResolveTimeout (resolve.go), so a target the user cannot reach is refused
// as the user would be, and a hung file system on the way costs a timeout
// (or less: ctx ends the wait). Root may mount anywhere. The caller mounts on the returned directory and
// closes it afterwards.
func OpenMountpointAs(ctx context.Context, target string, o Owner, ro bool) (*os.File, error) {
	if !strings.HasPrefix(target, "/") {
		return nil, fmt.Errorf("mountpoint %q is not an absolute path: %w", target, syscall.EINVAL)
	}
	if o.UID == 0 || os.Geteuid() != 0 {
		// Root's own mount, or a perfused that is not root (perfused -i
		// started by the user): our rights are the owner's or more trusted.
		fd, err := unix.Open(target, openFlags, 0)
		if err != nil {
			return nil, fmt.Errorf("mountpoint %s: %w", target, err)
		}
		f := os.NewFile(uintptr(fd), target)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			f.Close()
			return nil, fmt.Errorf("mountpoint %s: %w", target, err)
		}
		if o.UID != 0 {
			if err := checkUserDir(f, target, o.UID, ro); err != nil {
				f.Close()
				return nil, err
			}
		}
		return f, nil
	}
	f, err := openAs(ctx, target, o)
	if err != nil {
		return nil, err
	}
	// The helper's descriptor is checked here, by us, and within the bound:
	// fstat and fstatfs on a FUSE directory ask its daemon.
	return checkBounded(ctx, f, target, o.UID, ro)
}

// checkUserDir checks the directory f against the policy for uid.
func checkUserDir(f *os.File, target string, uid uint32, ro bool) error {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("mountpoint %s: %w", target, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("mountpoint %s: %w", target, syscall.ENOTDIR)
	}
	need := uint32(unix.S_IRUSR | unix.S_IWUSR)
	if ro {
		need = unix.S_IRUSR
	}
	if st.Uid != uid || st.Mode&need != need {
		return fmt.Errorf("insufficient privileges to mount on %s (owner %d, mode %o; uid %d must own it with %s): %w",
			target, st.Uid, st.Mode&0o7777, uid, map[bool]string{true: "r", false: "rw"}[ro], syscall.EPERM)
	}
	return checkFSType(fd, target)
}

// UserAllowOther reports whether FuseConf has user_allow_other.
func UserAllowOther() bool {
	f, err := os.Open(FuseConf)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "user_allow_other" {
			return true
		}
	}
	return false
}

// Options are mount options as mount(8) and libfuse take them.
type Options struct {
	AllowOther, DefaultPermissions, ReadOnly bool
	Suid, Dev, NoExec                        bool
	FsName, Subtype                          string
	MaxRead                                  int
}

// ParseOptions applies a comma-separated option list to o. Options a FUSE
// daemon passes to mount(2) for the kernel (fd=, rootmode=, user_id=,
// group_id=, blksize=, max_read is kept) are accepted and ignored where the
// relay decides; unknown ones are returned.
func (o *Options) Parse(s string) (unknown []string) {
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "":
		case "allow_other":
			o.AllowOther = true
		case "default_permissions":
			o.DefaultPermissions = true
		case "ro":
			o.ReadOnly = true
		case "rw":
			o.ReadOnly = false
		case "suid":
			o.Suid = true
		case "nosuid":
			o.Suid = false
		case "dev":
			o.Dev = true
		case "nodev":
			o.Dev = false
		case "exec":
			o.NoExec = false
		case "noexec":
			o.NoExec = true
		case "fsname":
			o.FsName = v
		case "subtype":
			o.Subtype = v
		case "max_read":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				o.MaxRead = n
			} else {
				unknown = append(unknown, w)
			}
		case "fd", "rootmode", "user_id", "group_id", "blksize", "default", "defaults", "auto", "noauto", "user", "nouser", "async", "atime", "noatime":
			// Set by the relay, or meaningless here.
		default:
			unknown = append(unknown, w)
		}
	}
	return unknown
}

// Decide turns what the client asked for (its mount frame: flags and
// option string) and what the administrator set on perfused's command line
// (admin, applied last) into the kernel mount's configuration, and opens
// the mountpoint, as the owner (mi's credentials, with groups as its
// supplementary groups); ctx cuts the lookup short. An error refuses the
// mount.
func Decide(ctx context.Context, mi *perfuse.MountInfo, groups []uint32, admin Options, log *slog.Logger) (kernel.Config, *os.File, error) {
	var o Options
	if unk := o.Parse(mi.Data); len(unk) > 0 && log != nil {
		warnings(log).Warn("options", "perfused: mount options ignored", "uid", mi.UID, "target", Clip(mi.Target), "options", Clip(strings.Join(unk, ",")))
	}
	if mi.Flags&unix.MS_RDONLY != 0 {
		o.ReadOnly = true
	}
	// The administrator's options win.
	o.AllowOther = o.AllowOther || admin.AllowOther
	o.DefaultPermissions = o.DefaultPermissions || admin.DefaultPermissions
	o.ReadOnly = o.ReadOnly || admin.ReadOnly
	o.NoExec = o.NoExec || admin.NoExec
	o.Suid = o.Suid || admin.Suid
	o.Dev = o.Dev || admin.Dev
	if admin.FsName != "" {
		o.FsName = admin.FsName
	}
	if admin.Subtype != "" {
		o.Subtype = admin.Subtype
	}
	o.Subtype = subtype(o.Subtype, mi.FSType, log)
	if admin.MaxRead > 0 && (o.MaxRead == 0 || admin.MaxRead < o.MaxRead) {
		o.MaxRead = admin.MaxRead
	}
	if mi.UID != 0 {
		// A user's mount never honours setuid bits or devices.
		o.Suid, o.Dev = false, false
		if o.AllowOther && !admin.AllowOther && !UserAllowOther() {
			return kernel.Config{}, nil, fmt.Errorf("allow_other asked by uid %d, but %s lacks user_allow_other: %w", mi.UID, FuseConf, syscall.EPERM)
		}
	}
	dir, err := OpenMountpointAs(ctx, mi.Target, Owner{UID: mi.UID, GID: mi.GID, Groups: groups}, o.ReadOnly)
	if err != nil {
		return kernel.Config{}, nil, err
	}
	return kernel.Config{
		AllowOther:         o.AllowOther,
		DefaultPermissions: o.DefaultPermissions,
		ReadOnly:           o.ReadOnly,
		Suid:               o.Suid,
		Dev:                o.Dev,
		NoExec:             o.NoExec,
		FsName:             o.FsName,
		Subtype:            o.Subtype,
		MaxRead:            o.MaxRead,
		Dir:                dir,
	}, dir, nil
}

// subtype is the mount's subtype: the one the options name, else the one
// in the type the daemon asked for ("fuse.mine" for perfuse.Mount's
// "fuse.mine"), else none (the kernel binding's "perfuse"). It goes into
// the kernel's option string, so only a plain name is taken.
func subtype(opt, fstype string, log *slog.Logger) string {
	st := opt
	if st == "" {
		st, _ = strings.CutPrefix(fstype, "fuse.")
		if st == fstype {
			st = "" // "fuse", "fuseblk" or junk: no subtype of its own
		}
	}
	if st != "" && !plainName.MatchString(st) {
		if log != nil {
			warnings(log).Warn("subtype", "perfused: subtype ignored: not a plain name", "subtype", Clip(st))
		}
		return ""
	}
	return st
}

var plainName = regexp.MustCompile(`^[A-Za-z0-9_.+-]{1,64}$`)

// What any client can make the policy log is rate-limited, and its own
// strings cut short: a mount frame carries up to 64 KiB of options.
var (
	warnOnce sync.Once
	warnLog  *ratelog.Logger
)

func warnings(log *slog.Logger) *ratelog.Logger {
	warnOnce.Do(func() { warnLog = ratelog.New(log, time.Second) })
	return warnLog
}

// Clip cuts a client's string for a log line.
func Clip(s string) string {
	const most = 256
	if len(s) <= most {
		return s
	}
	return s[:most] + "…"
}

// MountMax returns mount_max from FuseConf ("mount_max = N", as fusermount3
// reads it), and whether it is set there.
func MountMax() (int, bool) {
	f, err := os.Open(FuseConf)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.TrimSpace(k) != "mount_max" {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
			return n, true
		}
	}
	return 0, false
}
