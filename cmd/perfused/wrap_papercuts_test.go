package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A mountpoint that is missing or not a directory is refused before the
// daemon starts, so only perfused's message is printed.
func TestWrapChecksMountpointBeforeDaemon(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, c := range []struct{ target, want string }{
		{filepath.Join(t.TempDir(), "missing"), "no such file or directory"},
		{file, "not a directory"},
	} {
		for _, mnt := range []string{"/dev/fd/3", c.target} {
			marker := filepath.Join(t.TempDir(), "started")
			pd := start(t, "perfused", nil, nil, c.target, "--", "sh", "-c", `touch "$0"; echo DAEMON SPEAKS >&2`, marker, mnt)
			err := pd.wait(t, 10*time.Second)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Errorf("%s (daemon given %s): exit %v, want status 1", c.target, mnt, err)
			}
			if _, err := os.Stat(marker); err == nil || strings.Contains(pd.out.String(), "DAEMON SPEAKS") {
				t.Errorf("%s (daemon given %s): the daemon was started:\n%s", c.target, mnt, pd.out)
			}
			if out := pd.out.String(); !strings.Contains(out, c.target) || !strings.Contains(out, c.want) {
				t.Errorf("%s (daemon given %s): message %q lacks the mountpoint or %q", c.target, mnt, out, c.want)
			}
		}
	}
}

// An unknown flag's error is printed once, with the hint, and exits 2.
func TestUnknownFlagPrintedOnce(t *testing.T) {
	pd := start(t, "perfused", nil, nil, "-bogus")
	err := pd.wait(t, 10*time.Second)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("exit %v, want status 2", err)
	}
	out := pd.out.String()
	if n := strings.Count(out, "-bogus"); n != 1 || !strings.Contains(out, "--help") {
		t.Errorf("output names -bogus %d times (want once, with the --help hint):\n%s", n, out)
	}
}

// A library error's trailing newline (go-fuse's "fusermount exited with
// code 256\n", printed when a user's fusermount3 fails) does not reach
// perfused's message, and the wait status reads as an exit status.
func TestTidyFusermountError(t *testing.T) {
	base := errors.New("fusermount exited with code 256\n")
	err := tidy(fmt.Errorf("kernel: mount /m: %w", base))
	if got := err.Error(); strings.HasSuffix(got, "\n") || strings.Contains(got, "\n\n") || !strings.Contains(got, "fusermount exited with status 1") {
		t.Errorf("tidy: %q", got)
	}
	if !errors.Is(err, base) {
		t.Error("tidy lost the error chain")
	}
}
