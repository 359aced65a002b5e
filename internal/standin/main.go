// Command standin is a test stand-in for perfused: run as "standin -i FD",
// it reads one mount frame from FD with perfuse.ReadMountFrame and writes
// the resulting MountInfo as JSON to the file named by $PERFUSE_STANDIN_OUT.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/perfuse-go/perfuse"
)

func main() {
	fd := flag.Int("i", -1, "socket descriptor to read the mount frame from")
	flag.Parse()
	if err := run(*fd, os.Getenv("PERFUSE_STANDIN_OUT")); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}

func run(fd int, out string) error {
	if fd < 0 || out == "" {
		return fmt.Errorf("need -i FD and PERFUSE_STANDIN_OUT")
	}
	mi, err := perfuse.ReadMountFrame(os.NewFile(uintptr(fd), "fuse"))
	if err != nil {
		return err
	}
	b, err := json.Marshal(mi)
	if err != nil {
		return err
	}
	// Rename, so the test never reads a half-written file.
	if err := os.WriteFile(out+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}
