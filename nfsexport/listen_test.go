package nfsexport

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
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
