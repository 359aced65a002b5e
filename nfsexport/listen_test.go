package nfsexport

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Any address but loopback gets the AUTH_SYS warning.
func TestListenWarnsBeyondLoopback(t *testing.T) {
	u := loopback(t, t.TempDir())
	var logs bytes.Buffer
	s := New(u, Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	defer s.Close()
	for _, tc := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		logs.Reset()
		l, err := s.Listen(tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		if got := strings.Contains(logs.String(), "AUTH_SYS trusts the client"); got != tc.warn {
			t.Errorf("Listen(%s) warned %v: %q", tc.addr, got, logs.String())
		}
	}
}

// The owner of a loopback client's socket is found for IPv4 and IPv6.
func TestSocketOwner(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("%s: %v", addr, err)
			continue
		}
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		uid, err := socketOwner(sc.RemoteAddr().(*net.TCPAddr), sc.LocalAddr().(*net.TCPAddr))
		if err != nil || fmt.Sprint(uid) != fmt.Sprint(uidSelf()) {
			t.Errorf("%s: owner %d, %v; want %d", addr, uid, err, uidSelf())
		}
		if ok, _ := allowedPeer(sc); !ok {
			t.Errorf("%s: our own connection refused", addr)
		}
		c.Close()
		sc.Close()
		l.Close()
	}
}

// Connections over MaxConns are closed at once; a slot freed is taken
// again.
func TestMaxConns(t *testing.T) {
	u := loopback(t, t.TempDir())
	var logs lockedLog
	s := New(u, Options{MaxConns: 1, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	l, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	defer func() { s.Close(); <-done }()
	port := l.Addr().(*net.TCPAddr).Port
	first := dial(t, port, "/")
	if _, err := first.FSInfo(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a second connection over MaxConns 1: read %d, %v; want it closed (EOF)", n, err)
	}
	c.Close()
	if !strings.Contains(logs.String(), "too many open") {
		t.Errorf("no warning: %q", logs.String())
	}
	first.Close()
	start := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for openConns(s) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("slot freed in %v", time.Since(start))
	if _, err := dial(t, port, "/").FSInfo(); err != nil {
		t.Errorf("after the first connection closed: %v", err)
	}
}

type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openConns(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
