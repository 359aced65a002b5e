package kernel_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	"github.com/perfuse-go/perfuse/internal/kernel"
	"github.com/perfuse-go/perfuse/internal/kerneltest"
	"golang.org/x/sys/unix"
)

// posixKnown lists the posixtest cases the relay may fail or skip while a
// direct mount passes them, each with the reason.
var posixKnown = map[string]string{
	"Tmpfile": "perfuse's op table has no FUSE_TMPFILE (opcode 51): the relay answers ENOSYS, the kernel then " +
		"fails O_TMPFILE with EOPNOTSUPP, and the case skips itself",
}

// loopbackRaw is the daemon both mounts serve: go-fuse's loopback over a
// fresh directory, as go-fuse's own posix tests use it.
func loopbackRaw(t *testing.T) fuse.RawFileSystem {
	t.Helper()
	root, err := gofs.NewLoopbackRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return gofs.NewNodeFS(root, &gofs.Options{})
}

// TestPosixHelper runs posixtest.All on one kind of mount, chosen by
// PERFUSE_POSIX_MODE ("direct": go-fuse mounted by itself; "relay": the
// same daemon over a socket, mounted through perfuse). It is run by
// TestPosixRelayVsDirect in child processes, so that a failing case is a
// result to compare, not a failure of the run.
func TestPosixHelper(t *testing.T) {
	mode := os.Getenv("PERFUSE_POSIX_MODE")
	if mode == "" {
		t.Skip("run by TestPosixRelayVsDirect")
	}
	kerneltest.NeedMount(t)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range posixtest.All {
			if !yield(k) {
				return
			}
		}
	}) {
		t.Run(name, func(t *testing.T) {
			var mnt string
			switch mode {
			case "direct":
				mnt = t.TempDir()
				srv, err := fuse.NewServer(loopbackRaw(t), mnt, &fuse.MountOptions{DirectMountStrict: true, EnableLocks: true})
				if err != nil {
					t.Fatal(err)
				}
				go srv.Serve()
				if err := srv.WaitMount(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if srv.Unmount() != nil {
						unix.Unmount(mnt, unix.MNT_DETACH)
					}
				})
			case "relay":
				client := gofusepeer.ServeRawOptions(t, loopbackRaw(t), fuse.MountOptions{EnableLocks: true})
				mnt = kerneltest.Mount(t, client, kernel.Config{}).Dir
			}
			posixtest.All[name](t, mnt)
		})
	}
}

var resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): TestPosixHelper/(\S+)`)

func posixResults(t *testing.T, mode string) map[string]string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestPosixHelper$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "PERFUSE_POSIX_MODE="+mode)
	cmd.WaitDelay = 5 * time.Second
	out, _ := cmd.CombinedOutput()
	res := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := resultLine.FindStringSubmatch(sc.Text()); m != nil {
			res[m[2]] = m[1]
		}
	}
	if len(res) != len(posixtest.All) {
		t.Fatalf("%s: %d results for %d tests:\n%s", mode, len(res), len(posixtest.All), out)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("%s run:\n%s", mode, out)
	}
	return res
}

// go-fuse's posixtest suite passes through the relay wherever it passes on
// a direct go-fuse mount of the same daemon (posixKnown lists exceptions
// with their reasons).
func TestPosixRelayVsDirect(t *testing.T) {
	kerneltest.NeedMount(t)
	if testing.Short() {
		t.Skip("-short")
	}
	direct := posixResults(t, "direct")
	relay := posixResults(t, "relay")
	passed := 0
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range direct {
			if !yield(k) {
				return
			}
		}
	}) {
		d, r := direct[name], relay[name]
		switch {
		case r == "PASS":
			passed++
			if d != "PASS" {
				t.Logf("%s: relay passes, direct %s", name, d)
			}
		case d == "PASS" && posixKnown[name] != "":
			t.Logf("%s: relay %s, direct PASS (known: %s)", name, r, posixKnown[name])
		case d == "PASS":
			t.Errorf("%s: relay %s, direct PASS", name, r)
		default:
			t.Logf("%s: relay %s, direct %s", name, r, d)
		}
	}
	t.Logf("relay passes %d of %d posixtest cases", passed, len(direct))
}
