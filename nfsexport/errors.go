package nfsexport

import (
	"errors"
	"os"
	"syscall"

	nfs "github.com/willscott/go-nfs"
)

// statuses maps the daemon's errnos to NFSv3 statuses (RFC 1813 2.6).
var statuses = map[syscall.Errno]nfs.NFSStatus{
	syscall.EPERM:        nfs.NFSStatusPerm,
	syscall.ENOENT:       nfs.NFSStatusNoEnt,
	syscall.EIO:          nfs.NFSStatusIO,
	syscall.ENXIO:        nfs.NFSStatusNXIO,
	syscall.EACCES:       nfs.NFSStatusAccess,
	syscall.EEXIST:       nfs.NFSStatusExist,
	syscall.EXDEV:        nfs.NFSStatusXDev,
	syscall.ENODEV:       nfs.NFSStatusNoDev,
	syscall.ENOTDIR:      nfs.NFSStatusNotDir,
	syscall.EISDIR:       nfs.NFSStatusIsDir,
	syscall.EINVAL:       nfs.NFSStatusInval,
	syscall.EFBIG:        nfs.NFSStatusFBig,
	syscall.ENOSPC:       nfs.NFSStatusNoSPC,
	syscall.EROFS:        nfs.NFSStatusROFS,
	syscall.EMLINK:       nfs.NFSStatusMlink,
	syscall.ENAMETOOLONG: nfs.NFSStatusNameTooLong,
	syscall.ENOTEMPTY:    nfs.NFSStatusNotEmpty,
	syscall.EDQUOT:       nfs.NFSStatusDQuot,
	syscall.ESTALE:       nfs.NFSStatusStale,
	syscall.ENOTSUP:      nfs.NFSStatusNotSupp,
	syscall.ENOSYS:       nfs.NFSStatusNotSupp,
}

// status returns the NFSv3 status for err: the one its errno maps to,
// NFS3ERR_IO for any other error, NFS3_OK for nil.
func status(err error) nfs.NFSStatus {
	if err == nil {
		return nfs.NFSStatusOk
	}
	var st *nfs.NFSStatusError
	if errors.As(err, &st) {
		return st.NFSStatus
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if s, ok := statuses[e]; ok {
			return s
		}
	}
	return nfs.NFSStatusIO
}

// statusError is err as go-nfs sends it on unchanged: where go-nfs passes
// a procedure's error through (SETATTR's changes and truncation), this
// keeps the errno's own status.
func statusError(err error) error {
	if err == nil {
		return nil
	}
	return &nfs.NFSStatusError{NFSStatus: status(err), WrappedErr: err}
}

// pathError is an error for go-nfs's os.IsNotExist and os.IsPermission
// checks, which unwrap *os.PathError only.
func pathError(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		err = e
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}
