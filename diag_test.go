package perfuse

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/peerutil"
)

// Every class perfused's -d accepts does something: each is enabled alone
// on a session against go-fuse's loopback, an operation that concerns it
// is run, and its message must be in the log (and no other class's).
func TestEveryDiagClassIsConsulted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), bytes.Repeat([]byte("x"), 64*pageSize), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[Diag]struct {
		want string
		run  func(t *testing.T, u *Usermount)
	}{
		DiagFuse:     {"perfuse: exchange", func(t *testing.T, u *Usermount) { lookup(t, u, "f") }},
		DiagDump:     {"perfuse: frames", func(t *testing.T, u *Usermount) { lookup(t, u, "f") }},
		DiagFilename: {"names=[f]", func(t *testing.T, u *Usermount) { lookup(t, u, "f") }},
		DiagFH: {"perfuse: created", func(t *testing.T, u *Usermount) {
			_, h, err := u.NodeCreate(testCtx(t), nil, u.Root(), "new", syscall.O_RDWR|syscall.O_CREAT, 0o644, 0)
			if err != nil {
				t.Fatal(err)
			}
			u.NodeRelease(testCtx(t), h)
		}},
		DiagReaddir: {"perfuse: directory read", func(t *testing.T, u *Usermount) {
			h, err := u.NodeOpen(testCtx(t), nil, u.Root(), syscall.O_RDONLY|syscall.O_DIRECTORY)
			if err != nil {
				t.Fatal(err)
			}
			defer u.NodeRelease(testCtx(t), h)
			if err := u.NodeReaddir(testCtx(t), nil, h, 0, func(Dirent) bool { return true }); err != nil {
				t.Fatal(err)
			}
		}},
		DiagSync: {"perfuse: sync", func(t *testing.T, u *Usermount) {
			h := open(t, u, "f", syscall.O_RDWR)
			defer u.NodeRelease(testCtx(t), h)
			if err := u.NodeFsync(testCtx(t), nil, h, false); err != nil {
				t.Fatal(err)
			}
		}},
		DiagResize: {"perfuse: read split", func(t *testing.T, u *Usermount) {
			h := open(t, u, "f", syscall.O_RDONLY)
			defer u.NodeRelease(testCtx(t), h)
			if _, err := u.NodeRead(testCtx(t), nil, h, make([]byte, 64*pageSize), 0); err != nil {
				t.Fatal(err)
			}
		}},
		DiagRequeue: {"perfuse: waiting behind a write", func(t *testing.T, u *Usermount) {
			h := open(t, u, "f", syscall.O_RDWR)
			defer u.NodeRelease(testCtx(t), h)
			// Hold the node's write lock as a write in progress would.
			if err := u.lockWrites(testCtx(t), h.node); err != nil {
				t.Fatal(err)
			}
			wrote := make(chan error, 1)
			go func() {
				_, err := u.NodeWrite(testCtx(t), nil, h, []byte("y"), 0, 0, 0)
				wrote <- err
			}()
			time.Sleep(50 * time.Millisecond)
			h.node.unlockWrites()
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
		}},
	}
	// Consulted outside this package's requests: puffs turns on go-fuse's
	// request log in a relay (cmd/perfused), trace keeps TraceDump's
	// records (TestTrace*), reclaim logs late replies undone
	// (TestLateRepliesAreUndone), misc a daemon lacking CREATE.
	elsewhere := DiagPuffs | DiagTrace | DiagReclaim | DiagMisc
	for _, n := range diagNames {
		if n.d&elsewhere != 0 {
			continue
		}
		c, ok := cases[n.d]
		if !ok {
			t.Errorf("class %s has no case here", n.name)
			continue
		}
		t.Run(n.name, func(t *testing.T) {
			var log peerutil.LockedBuffer
			u := attach(t, serveLoopbackLocks(t, dir), WithDiag(n.d), WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
			c.run(t, u)
			got := log.String()
			if !strings.Contains(got, c.want) {
				t.Fatalf("with -d %s, no %q in the log:\n%s", n.name, c.want, got)
			}
			for d, other := range cases {
				if d != n.d && other.want != c.want && strings.Contains(got, other.want) {
					t.Errorf("with -d %s alone, the log has %q of another class", n.name, other.want)
				}
			}
		})
	}
}

func lookup(t *testing.T, u *Usermount, name string) *Node {
	t.Helper()
	e, err := u.NodeLookup(testCtx(t), nil, u.Root(), name)
	if err != nil {
		t.Fatal(err)
	}
	return e.Node
}

func open(t *testing.T, u *Usermount, name string, flags int) *Handle {
	t.Helper()
	h, err := u.NodeOpen(testCtx(t), nil, lookup(t, u, name), flags)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
