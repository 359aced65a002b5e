package nfsexport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse"
	"github.com/perfuse-go/perfuse/internal/gofusepeer"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// loopback serves dir with go-fuse's loopback filesystem, in process,
// and returns the session, unmounted at cleanup.
func loopback(t testing.TB, dir string) *perfuse.Usermount {
	t.Helper()
	u, err := perfuse.Attach(testCtx(t), gofusepeer.ServeLoopback(t, dir), nil)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { u.Unmount(context.Background()) })
	return u
}

// serve exports u on a loopback port until cleanup and returns the server
// and the port.
func serve(t testing.TB, u *perfuse.Usermount, o Options) (*Server, int) {
	t.Helper()
	s := New(u, o)
	l, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve still running 10 s after Close")
		}
	})
	return s, l.Addr().(*net.TCPAddr).Port
}

// dial mounts dir of the export at port with go-nfs-client.
func dial(t testing.TB, port int, dir string) *nfsc.Target {
	t.Helper()
	c, err := rpc.DialTCP("tcp", fmt.Sprintf("127.0.0.1:%d", port), false)
	if err != nil {
		t.Fatal(err)
	}
	m := &nfsc.Mount{Client: c}
	v, err := m.Mount(dir, rpc.AuthNull)
	if err != nil {
		c.Close()
		t.Fatalf("MOUNT %s: %v", dir, err)
	}
	t.Cleanup(func() { v.Close(); c.Close() })
	return v
}

// nfsStatus returns the NFS status a go-nfs-client error carries.
func nfsStatus(err error) string {
	var e *nfsc.Error
	switch {
	case err == nil:
		return "NFS3_OK"
	case errors.As(err, &e):
		return e.ErrorString
	case errors.Is(err, os.ErrNotExist):
		return "NFS3ERR_NOENT"
	case errors.Is(err, os.ErrExist):
		return "NFS3ERR_EXIST"
	case errors.Is(err, os.ErrPermission):
		return "NFS3ERR_PERM"
	}
	return err.Error()
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSum(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tree is the test tree: nested directories, an empty file, files of
// several READ and WRITE sizes.
func tree(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"top.txt":              []byte("top\n"),
		"empty":                {},
		"d1/one.txt":           []byte("one\n"),
		"d1/d2/two.bin":        randomBytes(t, 300<<10),
		"d1/d2/d3/three.bin":   randomBytes(t, 2<<20+17),
		"other dir/with space": []byte("spaces\n"),
	}
}

func dirsOf(files map[string][]byte) []string {
	seen := map[string]bool{}
	var out []string
	for p := range files {
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	// Parents first.
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if strings.Count(out[j], "/") < strings.Count(out[i], "/") {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func writeTree(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for p, b := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkTree compares dir with files: the same files with the same bytes,
// and nothing else.
func checkTree(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	found := map[string]bool{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		found[rel] = true
		want, ok := files[rel]
		if !ok {
			t.Errorf("%s: not expected", rel)
			return nil
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes (sha256 %s); want %d (%s)", rel, len(got), sum(got)[:12], len(want), sum(want)[:12])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range files {
		if !found[p] {
			t.Errorf("%s: missing", p)
		}
	}
}

// attachConn starts a session on a daemon's socket, unmounted at cleanup.
func attachConn(t testing.TB, conn *os.File) *perfuse.Usermount {
	t.Helper()
	u, err := perfuse.Attach(testCtx(t), conn, nil)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { u.Unmount(context.Background()) })
	return u
}

// balanced checks that s left no open in the daemon and, once closed, no
// lookup.
func balanced(t testing.TB, u *perfuse.Usermount, s *Server) {
	t.Helper()
	if n := u.OpenHandles(); n != 0 {
		t.Errorf("%d opens left in the daemon", n)
	}
	s.Close()
	if n := u.NodeCount(); n != 1 {
		t.Errorf("after Close %d nodes keep lookups; want the root only", n)
	}
}

// hd is s as go-nfs calls it.
func hd(s *Server) handler { return handler{s} }
