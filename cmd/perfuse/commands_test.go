package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/check"
	"github.com/perfuse-go/perfuse/internal/daemonpeer"
)

// daemons are the two the commands are tested against.
func daemons(t *testing.T) map[string][]string {
	_, lb := loopback(t)
	return map[string][]string{"squashfuse": squashfuse(t), "go-fuse loopback": lb}
}

func TestReadingCommands(t *testing.T) {
	for name, d := range daemons(t) {
		t.Run(name, func(t *testing.T) {
			dir := shared(t)
			r := ok(t, dir, "", with(d, "ls")...)
			if !strings.HasPrefix(r.stdout, "docs\nhello.txt\nlink\n") {
				t.Errorf("ls /:\n%s", r.stdout)
			}
			r = ok(t, dir, "", with(d, "ls", "-l", "-R", "/docs")...)
			wantLines(t, "ls -l -R /docs", r.stdout, "/docs:\n", "a.txt\n", "/docs/deep:\n", " 500000 ", "b.txt\n", "drwx")
			r = ok(t, dir, "", with(d, "ls", "-l")...)
			wantLines(t, "ls -l", r.stdout, "link -> docs/a.txt", "-rw-")
			r = ok(t, dir, "", with(d, "stat", "hello.txt", "/link")...)
			wantLines(t, "stat", r.stdout, "File: /hello.txt", "Size: 13 ", "regular file", "File: /link", "symbolic link")
			r = ok(t, dir, "", with(d, "cat", "hello.txt", "link")...)
			if r.stdout != "hello, world\nalpha\n" {
				t.Errorf("cat: %q", r.stdout)
			}
			r = ok(t, dir, "", with(d, "tree")...)
			wantLines(t, "tree", r.stdout, "/\n├── docs\n│   ├── a.txt\n│   └── deep\n│       └── b.txt\n├── hello.txt\n└── link -> docs/a.txt\n", "2 directories, 4 files")
			// cp out, recursive with times and modes kept.
			r = ok(t, dir, "", with(d, "cp", "-r", "-p", ":/docs", "out")...)
			if r.stderr != "" {
				t.Errorf("cp printed on a stderr that is no terminal: %q", r.stderr)
			}
			b, err := os.ReadFile(filepath.Join(dir, "out", "deep", "b.txt"))
			if err != nil || string(b) != treeFiles["docs/deep/b.txt"] {
				t.Errorf("cp -r: out/deep/b.txt: %d bytes, %v", len(b), err)
			}
			r = ok(t, dir, "", with(d, "stat", "docs/a.txt")...)
			st, err := os.Stat(filepath.Join(dir, "out", "a.txt"))
			if err != nil || !strings.Contains(r.stdout, "Modify: "+st.ModTime().UTC().Format("2006-01-02 15:04:05.000000000")) {
				t.Errorf("cp -p: local mtime %v (%v), daemon's:\n%s", st.ModTime().UTC(), err, r.stdout)
			}
			ok(t, dir, "", with(d, "cp", "hello.txt", ".")...)
			if b, err := os.ReadFile(filepath.Join(dir, "hello.txt")); err != nil || string(b) != "hello, world\n" {
				t.Errorf("cp into .: %q, %v", b, err)
			}
			// --trace and -v go to stderr, not into the output.
			r = ok(t, dir, "", with(d, "--trace", "-v", "--timeout", "10s", "cat", "hello.txt")...)
			if r.stdout != "hello, world\n" {
				t.Errorf("cat with --trace -v: %q", r.stdout)
			}
			wantLines(t, "--trace -v stderr", r.stderr, "opcode=LOOKUP", "operation  count", "\nREAD ", "\nLOOKUP ")
		})
	}
}

func TestShell(t *testing.T) {
	for name, d := range daemons(t) {
		t.Run(name, func(t *testing.T) {
			dir := shared(t)
			r := ok(t, dir, "ls\ncd docs\npwd\nls -l deep\ncat a.txt\nstat a.txt\ndf\nget deep\nhelp\n", with(d, "shell")...)
			wantLines(t, "shell", r.stdout, "docs\nhello.txt\nlink\n", "/docs\n", "b.txt\n", "alpha\n", "File: /docs/a.txt", "Inodes", "put LOCAL [PATH]")
			if b, err := os.ReadFile(filepath.Join(dir, "deep", "b.txt")); err != nil || len(b) != 500000 {
				t.Errorf("get deep: %d bytes, %v", len(b), err)
			}
			r = runTool(t, dir, "cat nope\nls\n", with(d, "shell")...)
			if r.code != 1 || !strings.Contains(r.stderr, "nope: no such file or directory (ENOENT)") || !strings.Contains(r.stdout, "hello.txt") {
				t.Errorf("a failing command: exit %d, stderr %q, stdout %q; want 1, the error, and the next command run", r.code, r.stderr, r.stdout)
			}
		})
	}
}

func TestWritingCommands(t *testing.T) {
	served, d := loopback(t)
	dir := shared(t)
	writeTree(t, dir, map[string]string{"site/index.html": "<h1>hi</h1>\n", "site/css/s.css": "body{}\n", "one": "1\n"})
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "site", "index.html"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "site", "index.html"), 0o640); err != nil {
		t.Fatal(err)
	}
	chownTree(t, dir)
	ok(t, dir, "", with(d, "cp", "-r", "-p", "site", ":/www")...)
	st, err := os.Stat(filepath.Join(served, "www", "index.html"))
	if err != nil || !st.ModTime().Equal(old) || st.Mode().Perm() != 0o640 {
		t.Fatalf("cp -r -p in: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(served, "www", "css", "s.css")); err != nil || string(b) != "body{}\n" {
		t.Errorf("cp -r in: css/s.css %q, %v", b, err)
	}
	ok(t, dir, "", with(d, "cp", "one", ":/docs")...)
	if b, err := os.ReadFile(filepath.Join(served, "docs", "one")); err != nil || string(b) != "1\n" {
		t.Errorf("cp into a directory: %q, %v", b, err)
	}
	ok(t, dir, "mkdir new\nput one new/uno\nmv new/uno new/dos\nmv hello.txt new\nrm docs/a.txt\nrm www/css/s.css\nrm www/css\nls new\n", with(d, "shell")...)
	for p, want := range map[string]bool{"new/dos": true, "new/uno": false, "new/hello.txt": true, "hello.txt": false, "docs/a.txt": false, "www/css": false} {
		if _, err := os.Lstat(filepath.Join(served, p)); (err == nil) != want {
			t.Errorf("after the shell: %s exists: %v, want %v", p, err == nil, want)
		}
	}
}

// serve answers whole files, ranges and directory listings over HTTP.
func TestServe(t *testing.T) {
	for name, d := range daemons(t) {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(tools(t), "perfuse")
			args := with(d, "serve", "-addr", "127.0.0.1:0")
			cmd := exec.Command(bin, args...)
			if os.Getuid() == 0 {
				cmd = exec.Command(daemonpeer.Need(t, "setpriv"), append([]string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", bin}, args...)...)
			}
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := bufio.NewScanner(stderr)
			addr := ""
			got := make(chan string, 1)
			go func() {
				for lines.Scan() {
					if a, ok := strings.CutPrefix(lines.Text(), "serving "); ok {
						got <- a
						break
					}
				}
				io.Copy(io.Discard, stderr)
			}()
			select {
			case addr = <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("serve printed no address")
			}
			get := func(path, rng string) (int, string) {
				req, _ := http.NewRequest("GET", addr+path, nil)
				if rng != "" {
					req.Header.Set("Range", rng)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			if code, body := get("hello.txt", ""); code != 200 || body != "hello, world\n" {
				t.Errorf("GET hello.txt: %d %q", code, body)
			}
			if code, body := get("docs/deep/b.txt", "bytes=250000-250009"); code != 206 || body != "beta beta " {
				t.Errorf("GET a range: %d %q", code, body)
			}
			if code, body := get("hello.txt", "bytes=7-"); code != 206 || body != "world\n" {
				t.Errorf("GET a range after a read: %d %q", code, body)
			}
			if code, body := get("docs/", ""); code != 200 || !strings.Contains(body, `<a href="a.txt">a.txt</a>`) {
				t.Errorf("GET a directory: %d %q", code, body)
			}
			if code, _ := get("nope", ""); code != 404 {
				t.Errorf("GET a missing file: %d", code)
			}
			cmd.Process.Signal(os.Interrupt)
			if err := cmd.Wait(); err != nil {
				t.Errorf("serve after SIGINT: %v", err)
			}
		})
	}
}

// serve ends, with status 1, when its daemon does, instead of answering
// every request with a 500.
func TestServeEndsWithItsDaemon(t *testing.T) {
	d := append([]string{daemonpeer.Need(t, "timeout"), "-s", "KILL", "2"}, squashfuse(t)...)
	r := runTool(t, shared(t), "", with(d, "serve", "-addr", "127.0.0.1:0")...)
	if r.code != 1 || !strings.Contains(r.stderr, "session ended") {
		t.Fatalf("serve after its daemon was killed: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

// check passes on the go-fuse loopback and fuse-overlayfs, and gives
// only read-only results on squashfuse.
func TestCheck(t *testing.T) {
	_, lb := loopback(t)
	lower, upper, work := shared(t), shared(t), shared(t)
	chownTree(t, upper)
	chownTree(t, work)
	daemonpeer.Need(t, "fuse-overlayfs")
	for name, d := range map[string][]string{
		"go-fuse loopback": lb,
		"fuse-overlayfs":   daemonpeer.FuseOverlayfsArgs(lower, upper, work),
		"squashfuse":       squashfuse(t),
	} {
		t.Run(name, func(t *testing.T) {
			r := runTool(t, shared(t), "", with(d, "check")...)
			t.Logf("perfuse check on %s:\n%s%s", name, r.stdout, r.stderr)
			if r.code != 0 || !strings.Contains(r.stdout, "\ncheck: ") || !strings.Contains(r.stdout, " 0 failed,") {
				t.Fatalf("exit %d", r.code)
			}
			wantLines(t, "check", r.stdout, "fsx random ops", "readdirplus", "lookup counts         passed")
			if name != "squashfuse" {
				wantLines(t, "check", r.stdout, "resumed from", "10000 ops")
				for _, c := range []string{"fsx random ops", "readdir ", "rename ", "concurrency"} {
					if !strings.Contains(r.stdout, c) || strings.Contains(r.stdout, c+"  skipped") {
						t.Errorf("%s skipped", c)
					}
				}
			}
		})
	}
	r := runTool(t, shared(t), "", with(squashfuse(t), "check", "--json")...)
	wantLines(t, "check --json", r.stdout, `"case": "readdir"`, `"result": "passed"`, `"failed": 0`)
	var rep check.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Errorf("check --json: standard output is not one JSON object: %v", err)
	}
	wantLines(t, "check --json", r.stderr, "check: ")
}
