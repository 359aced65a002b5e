package policy

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse"
)

// TestMain lets the test binary be the mountpoint lookup helper too.
func TestMain(m *testing.M) {
	if status, ok := RunHelper(os.Args); ok {
		os.Exit(status)
	}
	os.Exit(m.Run())
}

// reachableTempDir is a t.TempDir that other users can search.
func reachableTempDir(t *testing.T) string {
	base := t.TempDir()
	os.Chmod(filepath.Dir(base), 0o755)
	os.Chmod(base, 0o755)
	return base
}

func TestOpenMountpoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give directories to another owner")
	}
	base := reachableTempDir(t)
	mine, theirs, ro, file := filepath.Join(base, "mine"), filepath.Join(base, "theirs"), filepath.Join(base, "ro"), filepath.Join(base, "file")
	for _, d := range []string{mine, theirs, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chown(mine, 1000, 1000)
	os.Chown(ro, 1000, 1000)
	os.Chmod(ro, 0o555)
	os.WriteFile(file, nil, 0o644)
	os.Symlink(mine, filepath.Join(base, "link"))
	for _, c := range []struct {
		name   string
		target string
		uid    uint32
		ro     bool
		want   error
	}{
		{"owner's directory", mine, 1000, false, nil},
		{"someone else's directory", theirs, 1000, false, syscall.EPERM},
		{"root anywhere", theirs, 0, false, nil},
		{"read-only directory, rw mount", ro, 1000, false, syscall.EPERM},
		{"read-only directory, ro mount", ro, 1000, true, nil},
		{"symlink to the owner's directory", filepath.Join(base, "link"), 1000, false, syscall.ENOTDIR},
		{"symlink, even for root", filepath.Join(base, "link"), 0, false, syscall.ENOTDIR},
		{"a file", file, 1000, false, syscall.ENOTDIR},
		{"relative path", "mine", 1000, false, syscall.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := OpenMountpoint(c.target, c.uid, c.ro)
			if f != nil {
				f.Close()
			}
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("OpenMountpoint(%s, %d, ro=%v) = %v, want %v", c.target, c.uid, c.ro, err, c.want)
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	var o Options
	unk := o.Parse("fd=3,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,ro,fsname=src,subtype=x,max_read=8192,noexec,bogus,max_read=zz")
	if !o.AllowOther || !o.DefaultPermissions || !o.ReadOnly || o.FsName != "src" || o.Subtype != "x" || o.MaxRead != 8192 || !o.NoExec {
		t.Errorf("options %+v", o)
	}
	if len(unk) != 2 || unk[0] != "bogus" || unk[1] != "max_read=zz" {
		t.Errorf("unknown %q", unk)
	}
}

// A user's allow_other needs user_allow_other in fuse.conf; a user's suid
// and dev are dropped.
func TestDecideUserPolicy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another owner")
	}
	dir := reachableTempDir(t)
	os.Chown(dir, 1000, 1000)
	conf := filepath.Join(t.TempDir(), "fuse.conf")
	FuseConf = conf
	t.Cleanup(func() { FuseConf = "/etc/fuse.conf" })
	mi := &perfuse.MountInfo{Target: dir, UID: 1000, GID: 1000, Data: "allow_other,suid,dev"}
	if _, _, err := Decide(context.Background(), mi, nil, Options{}, nil); !errors.Is(err, syscall.EPERM) {
		t.Errorf("allow_other without user_allow_other: %v, want EPERM", err)
	}
	os.WriteFile(conf, []byte("# comment\nuser_allow_other\n"), 0o644)
	cfg, f, err := Decide(context.Background(), mi, nil, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !cfg.AllowOther || cfg.Suid || cfg.Dev {
		t.Errorf("config %+v", cfg)
	}
	mi.UID = 0
	cfg, f, err = Decide(context.Background(), mi, nil, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !cfg.Suid || !cfg.Dev {
		t.Errorf("root asked suid,dev: %+v", cfg)
	}
}

// The type a daemon asks for in perfuse.Mount ("fuse.mine") shows as the
// mount's subtype unless its options name one; anything but a plain name
// (it goes into the kernel's option string) is ignored.
func TestSubtypeFromRequestedType(t *testing.T) {
	for _, c := range []struct{ opt, fstype, want string }{
		{"", "fuse.mine", "mine"},
		{"given", "fuse.mine", "given"},
		{"", "fuse", ""},
		{"", "fuseblk", ""},
		{"", "fuse.a,allow_other", ""},
		{"x,y", "fuse.mine", ""},
		{"", "", ""},
	} {
		if got := subtype(c.opt, c.fstype, nil); got != c.want {
			t.Errorf("subtype(%q, %q) = %q, want %q", c.opt, c.fstype, got, c.want)
		}
	}
}

// A client's mount options reach the log rate-limited and cut short: a
// flood of frames with 64 KiB of unknown options writes a line or two,
// not megabytes.
func TestOptionWarningsAreBounded(t *testing.T) {
	var out strings.Builder
	log := slog.New(slog.NewTextHandler(&out, nil))
	junk := strings.Repeat("x", 60000)
	start := time.Now()
	for range 200 {
		mi := &perfuse.MountInfo{Target: filepath.Join(t.TempDir(), "none"), UID: 65534, GID: 65534, Data: junk}
		Decide(context.Background(), mi, nil, Options{}, log)
	}
	// One line a second at most, each of a few hundred bytes.
	most := int(time.Since(start)/time.Second) + 2
	if lines := strings.Count(out.String(), "\n"); lines > most || out.Len() > most*1024 {
		t.Fatalf("%d lines, %d bytes logged for 200 frames in %v", lines, out.Len(), time.Since(start))
	}
}
