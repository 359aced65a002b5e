package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/daemonpeer"
)

// readmeCommands are the command lines of README.md's "Mount-free tool"
// section.
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Mount-free tool\n")
	if !ok {
		t.Fatal(`README.md has no "Mount-free tool" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var cmds [][]string
	for _, line := range strings.Split(sec, "\n") {
		if rest, ok := strings.CutPrefix(line, "    perfuse "); ok {
			cmds = append(cmds, strings.Fields(rest))
		}
	}
	return cmds
}

// Each command of the README runs, as uid 65534, on the daemon it names:
// squashfuse on image.sqfs, or go-fuse's loopback on /srv/data.
func TestReadmeCommands(t *testing.T) {
	cmds := readmeCommands(t)
	if len(cmds) < 9 {
		t.Fatalf("README lists %d commands", len(cmds))
	}
	sq := squashfuse(t)
	img := sq[2]
	seen := map[string]bool{}
	for _, args := range cmds {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := shared(t)
			writeTree(t, dir, map[string]string{"site/index.html": "<p>hi</p>\n"})
			chownTree(t, dir)
			served, lb := loopback(t)
			for i, a := range args {
				switch {
				case a == "image.sqfs":
					args[i] = img
				case a == "/srv/data":
					args[i] = served
				case a == "loopback":
					args[i] = lb[0]
				case a == "127.0.0.1:8080":
					args[i] = "127.0.0.1:0"
				}
			}
			seen[args[0]] = true
			switch args[0] {
			case "serve":
				readmeServe(t, dir, args)
			case "shell":
				r := ok(t, dir, "ls\ncd docs\ncat a.txt\n", args...)
				wantLines(t, "shell", r.stdout, "hello.txt\n", "alpha\n")
			default:
				r := ok(t, dir, "", args...)
				if r.stdout == "" && args[0] != "cp" {
					t.Errorf("printed nothing")
				}
				t.Logf("%s", r.stdout)
			}
		})
	}
	for _, c := range []string{"ls", "stat", "cat", "cp", "tree", "serve", "shell", "check"} {
		if !seen[c] {
			t.Errorf("README shows no perfuse %s", c)
		}
	}
}

func readmeServe(t *testing.T, dir string, args []string) {
	bin := filepath.Join(tools(t), "perfuse")
	cmd := exec.Command(bin, args...)
	if os.Getuid() == 0 {
		cmd = exec.Command(daemonpeer.Need(t, "setpriv"), append([]string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", bin}, args...)...)
	}
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "serving "); ok {
				got <- a
			}
		}
	}()
	var addr string
	select {
	case addr = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("serve printed no address")
	}
	resp, err := http.Get(addr + "hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello, world\n" {
		t.Errorf("GET /hello.txt: %s %q", resp.Status, body)
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve after SIGINT: %v", err)
	}
}
