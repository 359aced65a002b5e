package fusermount

import (
	"slices"
	"strings"
	"testing"

	"github.com/perfuse-go/perfuse"
	"golang.org/x/sys/unix"
)

// The -o options on a daemon's command line, found as libfuse's fuse_opt
// finds them: separate and joined -o, escaped commas, -r, nothing after --.
func TestArgvOptions(t *testing.T) {
	argv := []string{"sshfs", "-f", "-p", "22", "-o", `ro,fsname=a\,b,ssh_command=x`, "host:/", "-oallow_other", "-r", "/dev/fd/3", "--", "-o", "rw"}
	want := []string{"ro", "fsname=a,b", "ssh_command=x", "allow_other", "ro"}
	if got := ArgvOptions(argv); !slices.Equal(got, want) {
		t.Errorf("ArgvOptions = %q, want %q", got, want)
	}
	if got := SplitOptions(`a\054b,c\\d,e`); !slices.Equal(got, []string{"a,b", `c\d`, "e"}) {
		t.Errorf("octal and backslash escapes: %q", got)
	}
}

// Every kernel option of the issue reaches the mount frame; the daemon's
// own options are left to it; the ones perfused cannot apply are refused
// with their name.
func TestKernelOptions(t *testing.T) {
	var k Kernel
	for _, o := range []string{"ro", "nosuid", "nodev", "noexec", "sync", "dirsync", "noatime", "allow_other",
		"default_permissions", "fsname=src", "subtype=mine", "max_read=65536", "auto_unmount", "x-gvfs-hide"} {
		if known, err := k.Set(o); !known || err != nil {
			t.Errorf("Set(%q) = %v, %v; want a kernel option", o, known, err)
		}
	}
	for _, o := range []string{"ssh_command=x", "lowerdir=/l", "use_ino", "idmap=user", "reconnect"} {
		if known, err := k.Set(o); known || err != nil {
			t.Errorf("Set(%q) = %v, %v; want the daemon's own", o, known, err)
		}
	}
	mi := &perfuse.MountInfo{Source: "sshfs", FSType: "fuse.sshfs"}
	k.Apply(mi)
	wantFlags := uint32(unix.MS_RDONLY | unix.MS_NOEXEC | unix.MS_SYNCHRONOUS | unix.MS_DIRSYNC | unix.MS_NOATIME)
	if mi.Flags != wantFlags || mi.Source != "src" || mi.FSType != "fuse.mine" ||
		mi.Data != "allow_other,default_permissions,subtype=mine,max_read=65536" {
		t.Errorf("mount frame %+v (flags %#x, want %#x)", mi, mi.Flags, wantFlags)
	}
	// Later options win, as in libfuse.
	k = Kernel{}
	for _, o := range []string{"ro", "rw", "suid", "dev"} {
		k.Set(o)
	}
	if k.Flags&unix.MS_RDONLY != 0 || !k.Suid || !k.Dev {
		t.Errorf("ro,rw,suid,dev: %+v", k)
	}
	for _, o := range []string{"blksize=4096", "blkdev", "context=system_u:object_r:fusefs_t", "max_read=x", "nosymfollow"} {
		known, err := k.Set(o)
		name, _, _ := strings.Cut(o, "=")
		if !known || err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Set(%q) = %v, %v; want a refusal naming %s", o, known, err, name)
		}
	}
}

// A daemon's own flags that read like kernel options, in the spellings Go
// daemons use.
func TestFlagOptions(t *testing.T) {
	argv := []string{"gocryptfs", "-ro", "-allow_other", "--read-only", "--allow-other=true", "-debug", "--ro=false", "-f", "cipher", "/dev/fd/3", "--", "-noexec"}
	got := FlagOptions(argv)
	want := []FlagOption{{"-ro", "ro"}, {"-allow_other", "allow_other"}, {"--read-only", "ro"}, {"--allow-other=true", "allow_other"}}
	if !slices.Equal(got, want) {
		t.Errorf("FlagOptions = %v, want %v", got, want)
	}
}
