package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
	"golang.org/x/sys/unix"
)

// openPty returns a pseudo-terminal's master and slave.
func openPty(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// cp draws its progress bar when stderr is a terminal (TestReadingCommands
// checks it draws nothing when it is not).
func TestCpProgressOnATerminal(t *testing.T) {
	master, slave := openPty(t)
	d := squashfuse(t)
	dir := shared(t)
	bin := filepath.Join(tools(t), "perfuse")
	args := with(d, "cp", "-r", ":/docs", "out")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if os.Getuid() == 0 {
		cmd = exec.CommandContext(ctx, daemonpeer.Need(t, "setpriv"), append([]string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", bin}, args...)...)
	}
	cmd.Dir = dir
	cmd.Stderr = slave
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("cp: %v, stdout %q", err, out.String())
	}
	slave.Close()
	var bar []byte
	buf := make([]byte, 4096)
	for {
		master.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := master.Read(buf)
		bar = append(bar, buf[:n]...)
		if err != nil {
			break
		}
	}
	s := string(bar)
	for _, want := range []string{"488.3 KiB / 488.3 KiB", "2/2 files", "/s", "ETA 0s"} {
		if !strings.Contains(s, want) {
			t.Errorf("progress bar %q lacks %q", s, want)
		}
	}
	if out.Len() != 0 {
		t.Errorf("cp wrote %q on stdout", out.String())
	}
}
