package perfuse

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
)

// ".." of the root is the root, as the kernel resolves it without asking
// the daemon: squashfuse and sshfs end their connection when asked.
func TestLookupDotDotOfTheRootIsTheRoot(t *testing.T) {
	src := t.TempDir()
	if err := os.Mkdir(filepath.Join(src, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, argv := range map[string]func() []string{
		"squashfuse": func() []string { return daemonpeer.SquashfuseArgs(t, src) },
		"sshfs":      func() []string { return daemonpeer.SshfsArgs(t, src) },
	} {
		t.Run(name, func(t *testing.T) {
			d := daemonpeer.Start(t, argv()...)
			u := attach(t, d.Conn)
			e, err := u.NodeLookup(testCtx(t), nil, u.Root(), "..")
			if err != nil {
				t.Fatalf(`lookup ".." of the root: %v`, err)
			}
			if e.Node != u.Root() || e.NodeId != RootID || e.Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
				t.Fatalf(`lookup ".." of the root: node %d mode %#o, want the root directory`, e.NodeId, e.Attr.Mode)
			}
			a, err := u.NodeLookup(testCtx(t), nil, u.Root(), "a")
			if err != nil {
				t.Fatalf("the daemon is gone after it: %v", err)
			}
			up, err := u.NodeLookup(testCtx(t), nil, a.Node, "..")
			if err != nil || up.NodeId != RootID {
				t.Fatalf(`lookup ".." of a: %v, nodeid %v`, err, up)
			}
			u.NodeReclaim(testCtx(t), a.Node, 1)
			requireBalanced(t, u)
		})
	}
}
