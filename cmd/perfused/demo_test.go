package main

import (
	"bytes"
	"strings"
	"testing"
)

// The mount-free demo runs its daemon as a child process through
// perfuse.Start (this test binary, with demoDaemonEnv set), reads every
// byte back, and the daemon exits 0 at Unmount.
func TestMountFreeDemoThroughStart(t *testing.T) {
	var out bytes.Buffer
	if err := runMountFreeDemo(&out); err != nil {
		t.Fatalf("mount-free demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"run as a child process", "bytes, every byte equal to the source", "the daemon ended with exit status 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
