package nfsexport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	nfs "github.com/willscott/go-nfs"
	nfsc "github.com/willscott/go-nfs-client/nfs"
)

func TestStatus(t *testing.T) {
	for errno, want := range map[syscall.Errno]nfs.NFSStatus{
		syscall.ENOENT:    nfs.NFSStatusNoEnt,
		syscall.EACCES:    nfs.NFSStatusAccess,
		syscall.EPERM:     nfs.NFSStatusPerm,
		syscall.EEXIST:    nfs.NFSStatusExist,
		syscall.ENOTDIR:   nfs.NFSStatusNotDir,
		syscall.EISDIR:    nfs.NFSStatusIsDir,
		syscall.ENOTEMPTY: nfs.NFSStatusNotEmpty,
		syscall.EROFS:     nfs.NFSStatusROFS,
		syscall.ENOSPC:    nfs.NFSStatusNoSPC,
		syscall.EDQUOT:    nfs.NFSStatusDQuot,
		syscall.EINVAL:    nfs.NFSStatusInval,
		syscall.ESTALE:    nfs.NFSStatusStale,
		syscall.EFBIG:     nfs.NFSStatusFBig,
		syscall.EXDEV:     nfs.NFSStatusXDev,
		syscall.EMLINK:    nfs.NFSStatusMlink,
		syscall.ENOSYS:    nfs.NFSStatusNotSupp,
		syscall.ENOTCONN:  nfs.NFSStatusIO, // the daemon is gone
		syscall.EBUSY:     nfs.NFSStatusIO, // NFSv3 has no EBUSY
	} {
		wrapped := &os.PathError{Op: "x", Path: "y", Err: fmt.Errorf("perfuse: %w", errno)}
		if got := status(wrapped); got != want {
			t.Errorf("status(%v) = %v; want %v", errno, got, want)
		}
	}
	if status(nil) != nfs.NFSStatusOk || status(errors.New("other")) != nfs.NFSStatusIO {
		t.Errorf("Status of nil or a plain error is wrong")
	}
}

// The statuses a client sees, where go-nfs passes the daemon's on: LOOKUP
// of a missing name, SETATTR (errors from the daemon's SETATTR and from
// the open for truncation), a handle gone stale, a read-only export.
func TestStatusesOverTheWire(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"d/f": []byte("x")})
	u := loopback(t, dir)
	s, port := serve(t, u, Options{})
	v := dial(t, port, "/")
	if _, _, err := v.Lookup("missing"); nfsStatus(err) != "NFS3ERR_NOENT" {
		t.Errorf("LOOKUP of a missing name: %v; want NFS3ERR_NOENT", err)
	}
	if err := v.Setattr("d", nfsc.Sattr3{Size: nfsc.SetSize{SetIt: true, Size: 0}}); nfsStatus(err) != "NFS3ERR_ISDIR" {
		t.Errorf("truncating a directory: %v; want NFS3ERR_ISDIR", err)
	}
	_, fh, err := v.Lookup("d/f")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "d/f")); err != nil {
		t.Fatal(err)
	}
	s.table.stale(s.table.byID(idOf(t, fh)))
	if _, err := v.GetAttr(fh); nfsStatus(err) != "NFS3ERR_STALE" {
		t.Errorf("GETATTR of a removed file's handle: %v; want NFS3ERR_STALE", err)
	}

	ro, roPort := serve(t, u, Options{ReadOnly: true})
	defer func() { s.Close(); balanced(t, u, ro) }()
	r := dial(t, roPort, "/")
	for what, err := range map[string]error{
		"create":   func() error { _, err := r.Create("new", 0o644); return err }(),
		"mkdir":    func() error { _, err := r.Mkdir("newdir", 0o755); return err }(),
		"chmod":    r.Setattr("d", nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: 0o700}}),
		"rmdir":    r.RmDir("d"),
		"rename":   r.Rename("d", "e"),
		"symlink":  r.Symlink("target", "link"),
		"truncate": r.Setattr("d", nfsc.Sattr3{Size: nfsc.SetSize{SetIt: true}}),
	} {
		if nfsStatus(err) != "NFS3ERR_ROFS" {
			t.Errorf("%s on a read-only export: %v; want NFS3ERR_ROFS", what, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "d")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("d after refused changes: %v %v", fi.Mode(), err)
	}
}
