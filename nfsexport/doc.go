// Package nfsexport exports a perfuse session, any FUSE daemon driven
// mount-free, over NFSv3: another machine mounts the daemon's tree with its
// own kernel NFS client, and no FUSE, /dev/fuse or privilege is needed on
// the serving side.
//
//	d, err := perfuse.Start(ctx, exec.Command("squashfuse", "-f", "image.sqfs", "/dev/fd/3"))
//	s := nfsexport.New(d.Usermount, nfsexport.Options{ReadOnly: true})
//	err = s.ListenAndServe("127.0.0.1:2049") // NFS and MOUNT on one TCP port
//
// The NFS and MOUNT protocols are github.com/willscott/go-nfs's, which
// serves a go-billy filesystem; this package is the filesystem (the
// daemon's operation table as billy.Filesystem and billy.Change) and the
// go-nfs handler that turns file handles into nodes.
//
// # File handles
//
// A file handle is the FUSE nodeid with the daemon's generation for it and
// a verifier of the Server instance. Each node a client was given a handle
// for keeps one FUSE lookup, so the daemon cannot forget the nodeid or
// give it to another file while the handle may still be used; a handle
// goes on naming its file through renames. The lookups are bounded: at
// most Options.MaxHandles nodes, least recently used first, and each
// dropped once unused for Options.HandleTTL. As with the kernel's inodes,
// a directory is not forgotten while a node found in it is held, nor a node
// while the daemon has it open (the cap may be passed by those). A dropped handle answers NFS3ERR_STALE, as does one
// whose node the daemon reports gone (ENOENT or ESTALE to GETATTR), and
// the client looks the name up again. After a restart of the server (a
// new Server, a new perfuse process, a restarted daemon) every handle from
// before is stale: clients see ESTALE on files they had open, and a
// kernel client mounted from before must remount (umount -f, mount).
//
// # What NFS gets
//
// Every request acts in the daemon as Options.Cred (nil: the serving
// process), whatever AUTH_SYS identity the client sends: go-nfs passes none
// on. Writes are answered FILE_SYNC by go-nfs, so each WRITE is followed by
// FUSE FSYNC before the reply, and COMMIT, which no FILE_SYNC client needs
// and which reaches no handler here, has nothing left to do. READDIRPLUS is
// served from FUSE READDIRPLUS when the daemon took it at INIT (the
// entries' lookups become their handles' lookups), else from READDIR and a
// LOOKUP per entry. Names and attributes from the daemon are used for its
// entry and attribute timeouts, but for at least a second (the span of one
// NFS procedure, which resolves a path several times); a change made
// through the export drops them at once, and one made behind it, in the
// daemon's own backing store, shows within that second, well within the
// seconds NFS clients cache attributes for. Options.ReadOnly refuses changes on the server side
// with NFS3ERR_ROFS. Locks (NLM) and extended attributes are not served.
//
// # Errors
//
// The daemon's errnos map to NFSv3 statuses (RFC 1813). go-nfs v0.0.4 keeps
// those statuses where it passes a procedure's error on: GETATTR, LOOKUP
// and READ of a missing file (NFS3ERR_NOENT), SETATTR (chmod, chown,
// utimes, truncation: every errno keeps its status), stale handles, and
// WRITE's ENOSPC, EDQUOT and EFBIG. Elsewhere it reports its own choice:
// REMOVE, RMDIR and RENAME give NFS3ERR_NOENT, NFS3ERR_ACCES (EACCES and
// EPERM) or else NFS3ERR_IO (so ENOTEMPTY, EEXIST, EISDIR and EXDEV come
// as NFS3ERR_IO); CREATE, MKDIR, SYMLINK and an open for WRITE give
// NFS3ERR_ACCES for any failure. Its own checks before a call give
// NFS3ERR_EXIST, NFS3ERR_NOTDIR and NFS3ERR_ROFS where they apply.
//
// go-nfs v0.0.4 also offers reads of up to 1 GiB in FSINFO but answers at
// most 16 MiB per READ, marked as the end of the file when the request
// reached it: a client asking more than 16 MiB in one READ would see the
// file end early. Kernel clients and libnfs ask 1 MiB at most.
//
// # Security
//
// NFSv3 with AUTH_SYS has no authentication: the server believes the
// client. Here every client acts as the export's user, so anyone who can
// connect reads the whole tree and, unless read-only, changes it. The
// default address is loopback (DefaultAddr), and Listen warns for any
// other. On loopback the kernel knows the client's user: only connections
// from root and from the serving user are taken, so that other users of
// the machine do not act as the export's user. Mounting a subdirectory
// is no boundary: its ".." leads on up the tree.
package nfsexport
