package nfsexport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// On a loopback address the kernel knows who the client is: the client
// end of the connection is a socket of this machine, with an owner. Only
// connections from root and from the serving user are taken there, so that
// other users of the machine do not act as the export's user.

// allowedPeer reports whether the client of c may use the export: any
// client of a non-loopback listener (see Listen's warning), and on
// loopback one whose socket belongs to root or to this process's user.
func allowedPeer(c net.Conn) (bool, uint32) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 || !local.IP.IsLoopback() {
		return true, 0
	}
	uid, err := socketOwner(remote, local)
	if err != nil {
		return false, 0
	}
	return uid == 0 || uid == uidSelf(), uid
}

// socketOwner finds the uid owning the TCP socket bound to local and
// connected to remote, in /proc/net/tcp and /proc/net/tcp6.
func socketOwner(local, remote *net.TCPAddr) (uint32, error) {
	want := procAddr(local) + " " + procAddr(remote)
	want6 := procAddr6(local) + " " + procAddr6(remote)
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local rem st queues tr retrnsmt uid ...
			fields := strings.Fields(sc.Text())
			if len(fields) < 8 {
				continue
			}
			if pair := fields[1] + " " + fields[2]; pair == want || pair == want6 {
				f.Close()
				uid, err := strconv.ParseUint(fields[7], 10, 32)
				return uint32(uid), err
			}
		}
		f.Close()
	}
	return 0, fmt.Errorf("nfsexport: no socket %v→%v: %w", local, remote, syscall.ENOENT)
}

// procAddr is an IPv4 address as /proc/net/tcp writes it: the address as a
// host-order word in hex, then the port.
func procAddr(a *net.TCPAddr) string {
	ip4 := a.IP.To4()
	if ip4 == nil {
		return ""
	}
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ip4), a.Port)
}

// procAddr6 is an address as /proc/net/tcp6 writes it: four host-order
// words, an IPv4 address mapped.
func procAddr6(a *net.TCPAddr) string {
	ip := a.IP.To16()
	var b strings.Builder
	for i := 0; i < 16; i += 4 {
		fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(ip[i:i+4]))
	}
	fmt.Fprintf(&b, ":%04X", a.Port)
	return b.String()
}

func uidSelf() uint32 { return uint32(os.Geteuid()) }
