package perfuse

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Directory reading. Entries are streamed: each reply is handed to the
// caller and dropped, and reading resumes from the `off` cookie of the
// last entry consumed, never from a count. Inode numbers are passed on as
// the daemon sent them, 0xffffffff ("unknown", from libfuse without
// use_ino) included, as the kernel does.

// readdirSize is the most a READDIR asks for at once.
const readdirSize = 32 * pageSize

// NodeReaddir reads the open directory h from cookie off (0: the start),
// calling fn for each entry until fn returns false or the directory ends.
// To resume later, pass the Off of the last entry fn accepted. A daemon
// that answers READDIR with ENOSYS after taking READDIRPLUS (pyfuse3
// does) is read with READDIRPLUS from then on, and every lookup those
// entries carry is given back at once.
func (u *Usermount) NodeReaddir(ctx context.Context, cred *Cred, h *Handle, off uint64, fn func(Dirent) bool) error {
	if err := usable(h); err != nil {
		return err
	}
	if !h.dir {
		return syscall.ENOTDIR
	}
	if !u.unsupported[OpReaddir].Load() {
		err := u.readdirLoop(ctx, cred, h, &off, OpReaddir, func(data []byte) (uint64, int, bool, error) {
			last, n, stopped := off, 0, false
			err := ParseDirents(data, func(d Dirent) bool {
				n++
				if !fn(d) {
					stopped = true
					return false
				}
				last = d.Off
				return true
			})
			return last, n, stopped, err
		})
		if !isENOSYS(err) || !u.plusNegotiated() {
			return err
		}
		u.noLonger(OpReaddir)
	}
	return u.readdirplus(ctx, cred, h, off, false, func(d DirentPlus) bool { return fn(d.Dirent) })
}

func (u *Usermount) plusNegotiated() bool { return u.limits().flags&CapReaddirplus != 0 }

// NodeReaddirplus reads the open directory h as NodeReaddir does, with
// each entry's lookup (FUSE_READDIRPLUS). The daemon counted a lookup for
// every entry it sent with a nodeid, but for "." and ".." (which the
// kernel ignores, and libfuse and go-fuse do not count). Each entry fn
// accepts keeps that lookup, on DirentPlus.Node, for the caller to
// reclaim; the entry fn refuses and those after it in the same reply are
// forgotten again (BATCH_FORGET), so counts stay exact. A daemon that did
// not take READDIRPLUS in INIT is not asked: ENOSYS.
func (u *Usermount) NodeReaddirplus(ctx context.Context, cred *Cred, h *Handle, off uint64, fn func(DirentPlus) bool) error {
	if err := usable(h); err != nil {
		return err
	}
	if !h.dir {
		return syscall.ENOTDIR
	}
	if !u.plusNegotiated() {
		return syscall.ENOSYS
	}
	return u.readdirplus(ctx, cred, h, off, true, fn)
}

// lookupCounted reports whether the daemon counted a lookup for d: every
// entry with a nodeid but the root, "." and "..".
func lookupCounted(d DirentPlus) bool {
	return d.Entry.NodeId != 0 && d.Entry.NodeId != RootID && d.Name != "." && d.Name != ".."
}

// readdirplus reads with READDIRPLUS; keep says whether lookups of
// accepted entries stay with the caller or are all given back.
func (u *Usermount) readdirplus(ctx context.Context, cred *Cred, h *Handle, off uint64, keep bool, fn func(DirentPlus) bool) error {
	return u.readdirLoop(ctx, cred, h, &off, OpReaddirplus, func(data []byte) (uint64, int, bool, error) {
		last, n, stopped := off, 0, false
		var forget []forgetOne
		err := ParseDirentsPlus(data, func(d DirentPlus) bool {
			n++
			counted := lookupCounted(d)
			switch {
			case counted && (stopped || !keep):
				forget = append(forget, forgetOne{nodeid: d.Entry.NodeId, nlookup: 1})
			case counted:
				d.Node = u.lookedUp(&d.Entry, d.Name)
			}
			if stopped {
				return true // on, to give back the lookups of the rest
			}
			if !fn(d) {
				stopped = true
				if d.Node != nil {
					if c := u.forgotten(d.Node, 1); c > 0 {
						forget = append(forget, forgetOne{node: d.Node, nodeid: d.Node.id, nlookup: c})
					}
				}
				return true
			}
			last = d.Off
			return true
		})
		return last, n, stopped, errors.Join(err, u.sendForgets(ctx, forget))
	})
}

// readdirLoop sends op (READDIR or READDIRPLUS) from *off until a reply
// is empty or each says to stop; each gets one reply's payload and
// returns the cookie of the last entry consumed, how many records it
// saw, and whether it stopped. A reply with no whole record is a protocol
// error, and a cookie that repeats one already read from (a daemon whose
// cookies stand still or cycle) is EIO: reading on would never end.
func (u *Usermount) readdirLoop(ctx context.Context, cred *Cred, h *Handle, off *uint64, op Opcode, each func([]byte) (uint64, int, bool, error)) error {
	seen := map[uint64]bool{}
	for {
		seen[*off] = true
		size := min(u.limits().maxRead, readdirSize)
		in := fuse.ReadIn{Fh: h.fh, Offset: *off, Size: uint32(size), Flags: h.flags}
		var last uint64
		var n int
		var stopped, empty bool
		err := u.do(ctx, request{op: op, node: h.node, cred: cred, in: fixed(op, &in)}, func(data []byte) (err error) {
			switch {
			case len(data) > size:
				return errProto(op, "%d bytes for a read of %d", len(data), size)
			case len(data) == 0:
				empty = true
				return nil
			}
			last, n, stopped, err = each(data)
			if u.diagOn(DiagReaddir) {
				u.debug(DiagReaddir, "perfuse: directory read", "opcode", op, "nodeid", h.node.id, "from", *off, "to", last, "entries", n, "bytes", len(data))
			}
			return err
		})
		switch {
		case err != nil:
			return err
		case empty, stopped:
			return nil
		case n == 0:
			return errProto(op, "no entry from offset %d", *off)
		case seen[last]:
			return fmt.Errorf("perfuse: %s: cookie %d after offset %d was read from before: the daemon's cookies cycle: %w", OpName(op), last, *off, syscall.EIO)
		}
		*off = last
	}
}
