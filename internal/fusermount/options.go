package fusermount

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/perfuse-go/perfuse"
	"golang.org/x/sys/unix"
)

// Kernel is what a wrapped daemon asked of its kernel mount: the options
// that libfuse (lib/mount.c, fuse_mount_opts) or fusermount pass to
// mount(2), as opposed to those the daemon or its library keep for
// themselves.
type Kernel struct {
	// Flags are the mount(2) flags asked for: MS_RDONLY, MS_NOEXEC,
	// MS_SYNCHRONOUS, MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME, MS_LAZYTIME.
	Flags uint32
	// Suid and Dev: asked for suid or dev (the policy decides).
	Suid, Dev                      bool
	AllowOther, DefaultPermissions bool
	FsName, Subtype                string
	MaxRead                        int
}

// flagOptions are the mount flags perfused's kernel mount carries, with
// whether the word sets (true) or clears the flag.
var flagOptions = map[string]struct {
	bit uint32
	on  bool
}{
	"ro": {unix.MS_RDONLY, true}, "rw": {unix.MS_RDONLY, false},
	"noexec": {unix.MS_NOEXEC, true}, "exec": {unix.MS_NOEXEC, false},
	"sync": {unix.MS_SYNCHRONOUS, true}, "async": {unix.MS_SYNCHRONOUS, false},
	"dirsync":    {unix.MS_DIRSYNC, true},
	"noatime":    {unix.MS_NOATIME, true},
	"nodiratime": {unix.MS_NODIRATIME, true},
	"lazytime":   {unix.MS_LAZYTIME, true}, "nolazytime": {unix.MS_LAZYTIME, false},
}

// Set applies one option as libfuse spells it. known is false for an
// option that is not a mount option at all: it is the daemon's own (or
// its library's, such as use_ino) and stays with it. An error names a
// mount option perfused cannot apply, and the mount must be refused.
func (k *Kernel) Set(opt string) (known bool, err error) {
	name, val, hasVal := strings.Cut(opt, "=")
	if f, ok := flagOptions[opt]; ok {
		if f.on {
			k.Flags |= f.bit
		} else {
			k.Flags &^= f.bit
		}
		return true, nil
	}
	switch opt {
	case "suid", "nosuid":
		k.Suid = opt == "suid"
		return true, nil
	case "dev", "nodev":
		k.Dev = opt == "dev"
		return true, nil
	case "allow_other", "allow_root":
		// libfuse turns allow_root into allow_other for the kernel and
		// lets only root and the owner in itself.
		k.AllowOther = true
		return true, nil
	case "default_permissions":
		k.DefaultPermissions = true
		return true, nil
	case "auto_unmount", "nonempty", "symfollow", "norelatime", "nostrictatime", "relatime", "strictatime", "atime", "diratime", "":
		// perfused removes the mount when the daemon ends, mounts over
		// a non-empty directory, and these are the kernel's defaults.
		return true, nil
	case "blkdev", "nosymfollow":
		return true, fmt.Errorf("mount option %s cannot be applied: perfused makes plain FUSE mounts (no fuseblk, no nosymfollow); drop -o %s", opt, opt)
	}
	switch name {
	case "fsname":
		k.FsName = val
		return true, nil
	case "subtype":
		k.Subtype = val
		return true, nil
	case "max_read":
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 {
			return true, fmt.Errorf("mount option %s: not a positive number", opt)
		}
		k.MaxRead = n
		return true, nil
	case "blksize":
		return true, fmt.Errorf("mount option %s cannot be applied: the kernel takes blksize= only for fuseblk mounts, and perfused makes plain FUSE mounts; drop -o %s", opt, opt)
	case "context", "fscontext", "defcontext", "rootcontext":
		return true, fmt.Errorf("mount option %s cannot be applied: perfused passes no SELinux contexts to the kernel; drop -o %s=", opt, name)
	case "user", "fd", "rootmode", "user_id", "group_id":
		// Bookkeeping for mtab, or set by whoever mounts: perfused.
		return hasVal, nil
	}
	if strings.HasPrefix(opt, "x-") {
		return true, nil // third-party options for mtab
	}
	return false, nil
}

// Apply writes k into mi, the mount perfused makes: the flags, the source
// (fsname), and the options the policy decides on (allow_other,
// default_permissions, suid, dev, subtype, max_read) as mi.Data.
func (k *Kernel) Apply(mi *perfuse.MountInfo) {
	mi.Flags |= k.Flags
	if k.FsName != "" {
		mi.Source = k.FsName
	}
	var data []string
	for _, o := range []struct {
		on   bool
		word string
	}{{k.AllowOther, "allow_other"}, {k.DefaultPermissions, "default_permissions"}, {k.Suid, "suid"}, {k.Dev, "dev"}} {
		if o.on {
			data = append(data, o.word)
		}
	}
	if k.Subtype != "" {
		data = append(data, "subtype="+k.Subtype)
		mi.FSType = "fuse." + k.Subtype
	}
	if k.MaxRead > 0 {
		data = append(data, "max_read="+strconv.Itoa(k.MaxRead))
	}
	mi.Data = strings.Join(data, ",")
}

// SplitOptions splits one -o group as libfuse's fuse_opt does: at commas,
// with a backslash escaping the next character (or starting a three-digit
// octal escape).
func SplitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ',':
			out = append(out, cur.String())
			cur.Reset()
		case c == '\\' && i+1 < len(s):
			i++
			if i+2 < len(s) && s[i] >= '0' && s[i] <= '3' && isOctal(s[i+1]) && isOctal(s[i+2]) {
				cur.WriteByte((s[i]-'0')<<6 | (s[i+1]-'0')<<3 | (s[i+2] - '0'))
				i += 2
			} else {
				cur.WriteByte(s[i])
			}
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// ArgvOptions returns the -o options on a daemon's command line (argv[0]
// is the program), as libfuse's fuse_opt_parse finds them: "-o LIST" or
// "-oLIST" anywhere before a "--". libfuse's "-r" is "ro".
func ArgvOptions(argv []string) []string {
	var out []string
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "--":
			return out
		case a == "-o" && i+1 < len(argv):
			i++
			out = append(out, SplitOptions(argv[i])...)
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			out = append(out, SplitOptions(a[2:])...)
		case a == "-r":
			out = append(out, "ro")
		}
	}
	return out
}

// FlagOption is a daemon's own command-line flag that reads like a kernel
// mount option, such as gocryptfs's -ro or rclone's --allow-other.
type FlagOption struct {
	Arg    string // as given, e.g. "--read-only"
	Option string // the mount option it reads like, e.g. "ro"
}

// flagWords maps a flag's name (dashes made underscores) to the mount
// option it reads like.
var flagWords = map[string]string{
	"ro": "ro", "read_only": "ro", "readonly": "ro",
	"allow_other": "allow_other", "allowother": "allow_other", "allow_root": "allow_other",
	"default_permissions": "default_permissions",
	"noexec":              "noexec", "suid": "suid", "dev": "dev",
	"sync": "sync", "dirsync": "dirsync", "noatime": "noatime",
}

// FlagOptions lists the flags on a daemon's command line (before a "--")
// that read like kernel mount options. A daemon given /dev/fd/3 mounts
// nothing, so such a flag of its own never reaches the kernel, and
// perfused cannot tell from the outside what the daemon makes of it. A
// flag set to false ("--ro=false") asks nothing.
func FlagOptions(argv []string) []FlagOption {
	var out []FlagOption
	for _, a := range argv[1:] {
		if a == "--" {
			break
		}
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			if name, ok = strings.CutPrefix(a, "-"); !ok {
				continue
			}
		}
		name, val, _ := strings.Cut(name, "=")
		opt, ok := flagWords[strings.ReplaceAll(strings.ToLower(name), "-", "_")]
		if !ok || val == "false" || val == "0" {
			continue
		}
		out = append(out, FlagOption{Arg: a, Option: opt})
	}
	return out
}
