package main

import (
	"os"

	"github.com/perfuse-go/perfuse/internal/fusermount"
)

// In a wrapped daemon's namespace the stand-in fusermount is perfused's
// executable, here this test binary, run under fusermount's name with
// whatever environment the daemon gives it (go-fuse: none, so no
// PERFUSED_TEST_ROLE): it must play its part before TestMain runs tests.
func init() {
	if fusermount.IsStandin(os.Args[0]) {
		status, _ := fusermount.Run(os.Args)
		os.Exit(status)
	}
}
