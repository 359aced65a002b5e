package nfsexport

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"syscall"

	"github.com/perfuse-go/perfuse"
)

// readDir lists the directory r with its entries' attributes: from FUSE
// READDIRPLUS when the daemon took it at INIT, whose lookups become the
// entries' refs (go-nfs's READDIRPLUS asks a handle for each entry next),
// else READDIR and a LOOKUP for each entry.
func (s *Server) readDir(r *ref) ([]os.FileInfo, error) {
	s.table.pin(r)
	defer s.table.unpin(r)
	h, err := s.u.NodeOpen(s.ctx, s.cred, r.node, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer s.u.NodeRelease(context.WithoutCancel(s.ctx), h)
	var out []os.FileInfo
	var ferr error
	err = s.u.NodeReaddirplus(s.ctx, s.cred, h, 0, func(d perfuse.DirentPlus) bool {
		if d.Name == "." || d.Name == ".." {
			return true
		}
		if d.Node == nil {
			var c *ref
			if c, ferr = s.lookupFresh(r, d.Name); ferr != nil {
				return isGone(ferr) // removed since: left out
			}
			a, _ := s.table.cachedAttr(c)
			out = append(out, newInfo(d.Name, c, a))
			return true
		}
		c := s.table.hold(&perfuse.Entry{Node: d.Node, EntryOut: d.Entry}, r, d.Name)
		out = append(out, newInfo(d.Name, c, d.Entry.Attr))
		return true
	})
	if ferr != nil && !isGone(ferr) {
		return nil, ferr
	}
	if err == nil || !isENOSYS(err) {
		return out, err
	}
	out = out[:0]
	err = s.u.NodeReaddir(s.ctx, s.cred, h, 0, func(d perfuse.Dirent) bool {
		if d.Name == "." || d.Name == ".." {
			return true
		}
		var c *ref
		if c, ferr = s.lookupFresh(r, d.Name); ferr != nil {
			return isGone(ferr)
		}
		a, err := s.attr(c)
		if ferr = err; err != nil {
			return isGone(err)
		}
		out = append(out, newInfo(d.Name, c, a))
		return true
	})
	if err == nil && ferr != nil && !isGone(ferr) {
		err = ferr
	}
	return out, err
}

// lookupFresh looks name up in dir from the daemon, past the cache.
func (s *Server) lookupFresh(dir *ref, name string) (*ref, error) {
	e, err := s.u.NodeLookup(s.ctx, s.cred, dir.node, name)
	if err != nil {
		return nil, err
	}
	return s.table.hold(e, dir, name), nil
}

// isGone reports an entry removed between the listing and its lookup:
// it is left out.
func isGone(err error) bool { return err != nil && errors.Is(err, syscall.ENOENT) }

func isENOSYS(err error) bool { return errors.Is(err, syscall.ENOSYS) }

// listingsMax bounds the directory listings kept for READDIR cookies.
const listingsMax = 64

// listings keeps recent directory listings by cookie verifier, so that a
// client reading a directory in several READDIR calls reads one listing
// (go-nfs's cookies are indexes into it) instead of one per call.
type listings struct {
	mu    sync.Mutex
	max   int
	byVer map[uint64]listing
	order []uint64
}

type listing struct {
	path  string
	infos []os.FileInfo
}

func (l *listings) init(max int) { l.max, l.byVer = max, map[uint64]listing{} }

// VerifierFor returns a cookie verifier for a fresh listing of path, and
// keeps the listing under it.
func (s handler) VerifierFor(path string, contents []os.FileInfo) uint64 {
	h := sha256.New()
	h.Write([]byte(path))
	h.Write(s.boot[:])
	var n [8]byte
	s.listings.mu.Lock()
	defer s.listings.mu.Unlock()
	binary.BigEndian.PutUint64(n[:], uint64(len(s.listings.order))+uint64(len(contents)))
	h.Write(n[:])
	for _, c := range contents {
		h.Write([]byte(c.Name()))
		h.Write([]byte{0})
	}
	v := binary.BigEndian.Uint64(h.Sum(nil))
	l := &s.listings
	if _, ok := l.byVer[v]; !ok {
		l.order = append(l.order, v)
	}
	l.byVer[v] = listing{path: path, infos: contents}
	for len(l.order) > l.max {
		delete(l.byVer, l.order[0])
		l.order = l.order[1:]
	}
	return v
}

// DataForVerifier returns the listing kept under verifier, or nil.
func (s handler) DataForVerifier(path string, verifier uint64) []os.FileInfo {
	s.listings.mu.Lock()
	defer s.listings.mu.Unlock()
	if l, ok := s.listings.byVer[verifier]; ok && l.path == path {
		return l.infos
	}
	return nil
}
