package nfsexport

import (
	"container/list"
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/perfuse-go/perfuse"
)

// A ref is one node an NFS client may hold a file handle for. It keeps
// exactly one FUSE lookup on the node, so the daemon cannot forget the
// nodeid (and hand it to another file) while the handle is in use.
type ref struct {
	node *perfuse.Node
	gen  uint64 // the daemon's generation for the nodeid
	// parent and name are where the node was last found, for "..": the
	// parent's nodeid (0 when unknown) and the name in it.
	parent uint64
	name   string
	// entryUntil is how long parent/name may be taken for the node without
	// asking the daemon again, and attrUntil the same for attr: the
	// daemon's own entry and attribute timeouts, as the kernel uses them,
	// but at least minValid.
	entryUntil time.Time
	attr       perfuse.Attr
	attrUntil  time.Time
	used       time.Time
	elem       *list.Element // nil for the root, which is never evicted
	// opens counts the daemon's opens of the node in use here: while
	// there is one the lookup is kept, for the kernel never forgets an
	// open inode and daemons (go-fuse) rely on it. gone is set when the
	// ref was dropped meanwhile: the last close gives the lookup back.
	opens int
	gone  bool
	// kids counts the refs whose parent this is: a directory is not
	// forgotten before what was found in it, as the kernel's dentries
	// hold their parents.
	kids int
	up   *ref // the ref counting this one in kids, or nil
}

func (r *ref) id() uint64 { return r.node.ID() }

type nameKey struct {
	dir  uint64
	name string
}

// table maps nodeids to refs: at most max of them, each dropped (its
// lookup given back with FORGET) once unused for ttl. Least recently used
// refs go first; using a ref uses its parents too, so a directory never
// goes before what was found in it.
type table struct {
	u   *perfuse.Usermount
	max int
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	refs  map[uint64]*ref
	names map[nameKey]*ref
	lru   list.List // front: most recently used
	root  *ref
}

func newTable(u *perfuse.Usermount, max int, ttl time.Duration) *table {
	t := &table{u: u, max: max, ttl: ttl, now: time.Now,
		refs: map[uint64]*ref{}, names: map[nameKey]*ref{}}
	t.root = &ref{node: u.Root()}
	t.refs[perfuse.RootID] = t.root
	return t
}

// minValid is the least time a name or attributes from the daemon are
// used for: the span of one NFS procedure, in which go-nfs resolves the
// same path several times (and a READDIRPLUS reply asks a handle for each
// entry just listed), so that a daemon with timeouts of 0 gets one LOOKUP
// or GETATTR per procedure, not three. NFS clients cache attributes for
// seconds themselves; changes made through the export drop the cache.
const minValid = time.Second

// valid returns when something the daemon gave at now with timeout d
// stops being used.
func valid(now time.Time, d time.Duration) time.Time { return now.Add(max(d, minValid)) }

// maxDepth bounds the walk up the parents when a ref is used: a loop of
// parents (after renames) must not spin.
const maxDepth = 256

// hold records e, found as name in dir, and takes over its lookup. It
// returns the node's ref.
func (t *table) hold(e *perfuse.Entry, dir *ref, name string) *ref {
	now := t.now()
	t.mu.Lock()
	r := t.refs[e.NodeId]
	// The session counts no lookups of the root; any other entry brought
	// one, which a ref already holding the node does not need.
	extra := r != nil && r != t.root
	if r == nil {
		r = &ref{node: e.Node}
		r.elem = t.lru.PushFront(r)
		t.refs[e.NodeId] = r
	}
	r.gen = e.Generation
	r.attr, r.attrUntil = e.Attr, valid(now, e.AttrTimeout())
	if r != t.root {
		t.place(r, dir.id(), name, valid(now, e.EntryTimeout()))
	}
	t.touch(r, now)
	victims := t.evict(now)
	t.mu.Unlock()
	if extra {
		t.reclaim(e.Node)
	}
	t.reclaim(victims...)
	return r
}

// place records that r is name in dir. Called with mu held.
func (t *table) place(r *ref, dir uint64, name string, until time.Time) {
	if old := (nameKey{r.parent, r.name}); t.names[old] == r {
		delete(t.names, old)
	}
	t.unparent(r)
	r.parent, r.name, r.entryUntil = dir, name, until
	t.names[nameKey{dir, name}] = r
	if r.up = t.refs[dir]; r.up != nil {
		r.up.kids++
	}
}

// unparent takes r off its parent's count. Called with mu held.
func (t *table) unparent(r *ref) {
	if r.up != nil {
		r.up.kids--
		r.up = nil
	}
}

// moved records a rename of r to name in dir, as fresh as it was.
func (t *table) moved(r *ref, dir *ref, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r != t.root && t.refs[r.id()] == r {
		t.place(r, dir.id(), name, r.entryUntil)
	}
}

// child returns the ref that name in dir still names, by the daemon's
// entry timeout, or nil.
func (t *table) child(dir *ref, name string) *ref {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.names[nameKey{dir.id(), name}]
	if r == nil || !now.Before(r.entryUntil) {
		return nil
	}
	t.touch(r, now)
	return r
}

// unname forgets what name in dir was: it was removed or renamed.
func (t *table) unname(dir *ref, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.names, nameKey{dir.id(), name})
}

// get returns the ref of nodeid id with generation gen, or nil: never
// held, or dropped since.
func (t *table) get(id, gen uint64) *ref {
	now := t.now()
	t.mu.Lock()
	r := t.refs[id]
	if r != nil && r.gen != gen {
		r = nil
	}
	if r != nil {
		t.touch(r, now)
	}
	victims := t.evict(now)
	t.mu.Unlock()
	t.reclaim(victims...)
	return r
}

// byID returns the ref of nodeid id, or nil, for a token: its handle
// was checked already.
func (t *table) byID(id uint64) *ref {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.refs[id]
	if r != nil {
		t.touch(r, now)
	}
	return r
}

// cachedAttr returns r's attributes while the daemon's timeout allows.
func (t *table) cachedAttr(r *ref) (perfuse.Attr, bool) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	return r.attr, now.Before(r.attrUntil)
}

func (t *table) setAttr(r *ref, out *perfuse.AttrOut) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	r.attr, r.attrUntil = out.Attr, valid(now, out.Timeout())
}

// stale makes r's attributes be fetched again: it was written to.
func (t *table) stale(r *ref) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.attrUntil = time.Time{}
}

// drop gives r's lookup back (after its last close): its node is gone.
func (t *table) drop(r *ref) {
	t.mu.Lock()
	ok := r != t.root && t.refs[r.id()] == r
	if ok {
		t.remove(r)
	}
	ok = ok && t.release(r)
	t.mu.Unlock()
	if ok {
		t.reclaim(r.node)
	}
}

// release reports whether r's lookup may be given back now that it left
// the table, or marks it for its last close. Called with mu held.
func (t *table) release(r *ref) bool {
	if r.opens > 0 {
		r.gone = true
		return false
	}
	return true
}

// pin keeps r's lookup while the daemon has it open.
func (t *table) pin(r *ref) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.opens++
}

// unpin ends an open of r, and gives its lookup back if r was dropped
// meanwhile.
func (t *table) unpin(r *ref) {
	t.mu.Lock()
	r.opens--
	last := r.opens == 0 && r.gone
	if last {
		r.gone = false
	}
	t.mu.Unlock()
	if last {
		t.reclaim(r.node)
	}
}

// touch marks r and its parents used. Called with mu held.
func (t *table) touch(r *ref, now time.Time) {
	for range maxDepth {
		if r == nil || r == t.root {
			return
		}
		r.used = now
		t.lru.MoveToFront(r.elem)
		r = t.refs[r.parent]
	}
}

// evict removes the refs over the cap and those unused for ttl, and
// returns their nodes for reclaim. Called with mu held.
func (t *table) evict(now time.Time) []*perfuse.Node {
	var out []*perfuse.Node
	for e := t.lru.Back(); e != nil; {
		r := e.Value.(*ref)
		if t.lru.Len() <= t.max && now.Sub(r.used) < t.ttl {
			break
		}
		prev := e.Prev()
		// An open node stays: it is let go at its last close. So does one
		// this very call used (the entry just held, its parents): the
		// caller is about to use it.
		if r.opens == 0 && r.kids == 0 && !r.used.Equal(now) {
			t.remove(r)
			out = append(out, r.node)
		}
		e = prev
	}
	return out
}

// sweep drops the refs unused for ttl.
func (t *table) sweep() {
	t.mu.Lock()
	victims := t.evict(t.now())
	t.mu.Unlock()
	t.reclaim(victims...)
}

func (t *table) remove(r *ref) {
	t.lru.Remove(r.elem)
	delete(t.refs, r.id())
	t.unparent(r)
	if k := (nameKey{r.parent, r.name}); t.names[k] == r {
		delete(t.names, k)
	}
}

// clear gives every lookup back.
func (t *table) clear() {
	t.mu.Lock()
	var victims []*perfuse.Node
	for e := t.lru.Front(); e != nil; e = t.lru.Front() {
		r := e.Value.(*ref)
		t.remove(r)
		if t.release(r) {
			victims = append(victims, r.node)
		}
	}
	t.mu.Unlock()
	t.reclaim(victims...)
}

// len returns how many refs hold a lookup.
func (t *table) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

func (t *table) reclaim(nodes ...*perfuse.Node) {
	for _, n := range nodes {
		// FORGET has no reply; a daemon gone already needs none.
		_ = t.u.NodeReclaim(context.Background(), n, 1)
	}
}

// A file handle is the server's instance verifier, the nodeid and the
// daemon's generation for it: 24 bytes of NFSv3's 64.
const handleSize = 24

func (t *table) handle(boot [8]byte, r *ref) []byte {
	b := make([]byte, handleSize)
	copy(b, boot[:])
	binary.BigEndian.PutUint64(b[8:], r.id())
	t.mu.Lock()
	binary.BigEndian.PutUint64(b[16:], r.gen)
	t.mu.Unlock()
	return b
}

// parseHandle returns the nodeid and generation of a handle this
// instance made, and false for any other.
func parseHandle(boot [8]byte, b []byte) (id, gen uint64, ok bool) {
	if len(b) != handleSize || [8]byte(b[:8]) != boot {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:]), true
}
