package perfuse

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse/internal/ratelog"
	"github.com/perfuse-go/perfuse/internal/transport"
)

// RootID is the nodeid of the filesystem root (FUSE_ROOT_ID).
const RootID = 1

// Cred is the caller of an operation. Its values go into the FUSE request
// header. A nil *Cred is the kernel or root acting for itself: 0/0, pid 0.
type Cred struct {
	Uid, Gid, Pid uint32
}

// Node is one FUSE node, known by its nodeid. There is one Node per nodeid
// while the daemon holds lookups on it.
type Node struct {
	id   uint64
	mode atomic.Uint32 // file type bits from the last attributes seen
	name atomic.Value  // string: the last name it was looked up by, for traces

	// attr is a copy of the last attributes the daemon sent (any entry,
	// GETATTR, SETATTR): what access emulation checks. nil until then.
	attr atomic.Pointer[Attr]

	// wsem serialises writes to the node, as the kernel's inode lock
	// does (O_APPEND reads the size first); a channel, so that a writer
	// waiting behind another leaves on its own context. Made once.
	wsem  chan struct{}
	wonce sync.Once

	// nlookup is the number of entries the daemon has returned for this
	// nodeid and we have not forgotten yet. Guarded by Usermount.nodesMu.
	nlookup uint64
	// deferred are lookups reclaimed while the node was open: the kernel
	// never forgets an open node, and daemons rely on it (go-fuse panics
	// on the RELEASE that follows, fuse-overlayfs frees the node twice).
	// They are forgotten after the last RELEASE. Guarded by nodesMu.
	deferred uint64
	// opens counts the opens of the node not yet released. Guarded by
	// Usermount.handlesMu.
	opens int
}

// lockWrites takes n's write lock, or gives up when ctx ends.
func (u *Usermount) lockWrites(ctx context.Context, n *Node) error {
	n.wonce.Do(func() { n.wsem = make(chan struct{}, 1) })
	select {
	case n.wsem <- struct{}{}:
		return nil
	default:
	}
	u.debug(DiagRequeue, "perfuse: waiting behind a write", "nodeid", n.id)
	done := ctx.Done()
	if transport.IsInterruptOnly(ctx) {
		done = nil // a kernel request waits its turn, as under the inode lock
	}
	select {
	case n.wsem <- struct{}{}:
		return nil
	case <-done:
		return fmt.Errorf("perfuse: waiting behind a write on node %d: %w", n.id, ctxErrno(ctx))
	}
}

// unlockWrites releases n's write lock.
func (n *Node) unlockWrites() { <-n.wsem }

// ID returns the node's FUSE nodeid.
func (n *Node) ID() uint64 { return n.id }

// IsDir reports whether the node's last known type is a directory.
func (n *Node) IsDir() bool { return n.mode.Load()&syscall.S_IFMT == syscall.S_IFDIR }

// Name returns the last path component the node was looked up by, "" for
// the root.
func (n *Node) Name() string {
	s, _ := n.name.Load().(string)
	return s
}

// Attr returns the node's cached attributes, and false when none were
// seen yet.
func (n *Node) Attr() (Attr, bool) {
	if a := n.attr.Load(); a != nil {
		return *a, true
	}
	return Attr{}, false
}

func (n *Node) setAttr(a *Attr) {
	if a.Mode&syscall.S_IFMT != 0 {
		n.mode.Store(a.Mode & syscall.S_IFMT)
	}
	c := *a
	n.attr.Store(&c)
}

// grew records that a write reached end, for the cached size.
func (n *Node) grew(end uint64) {
	for {
		old := n.attr.Load()
		if old == nil || old.Size >= end {
			return
		}
		c := *old
		c.Size = end
		if n.attr.CompareAndSwap(old, &c) {
			return
		}
	}
}

// limits are what INIT negotiated.
type limits struct {
	major, minor uint32
	flags        uint64
	maxWrite     int // payload bytes per WRITE
	maxRead      int // payload bytes per READ/READDIR
	maxReadahead uint32
	maxPages     uint16
	timeGran     uint32
}

// config is what options and PERFUSE_OPTIONS set.
type config struct {
	log      *slog.Logger
	diag     Diag
	noAccess bool
	noCreat  bool
	bufSize  int
	// interruptGrace and requestTimeout: see WithInterruptGrace and
	// WithRequestTimeout.
	interruptGrace time.Duration
	requestTimeout time.Duration
}

// Usermount is one perfuse session with one FUSE daemon: libperfuse's
// struct puffs_usermount with its perfuse_state. Its methods are the
// relay-side API and the operation table; they are safe for concurrent use.
//
// Lock order: nodesMu, then handlesMu, then trace.mu. Neither is held across an exchange.
type Usermount struct {
	cb   *Callbacks
	mi   MountInfo
	conf config
	log  *slog.Logger
	warn *ratelog.Logger // what a peer can make us log
	diag atomic.Uint32

	unique   atomic.Uint64
	inLoop   atomic.Bool
	specific atomic.Value
	lim      atomic.Pointer[limits]
	noAccess atomic.Bool
	noCreat  atomic.Bool

	nodesMu sync.Mutex
	nodes   map[uint64]*Node
	root    *Node

	// handles are the opens not yet released, for HandleFor and for the
	// releases at unmount. Guarded by handlesMu (taken after nodesMu).
	handlesMu sync.Mutex
	handles   map[handleKey][]*Handle

	// unsupported[op] is set once the daemon answered op with ENOSYS, so
	// it is not sent again (the kernel's fc->no_* flags).
	unsupported [maxOpcode + 1]atomic.Bool

	xchgCount atomic.Int64 // exchanges so far

	// orphans are the requests whose caller left before their reply
	// came, for which a late reply must be undone (orphans.go).
	orphans orphanage
	// self is the credentials of a request made with a nil *Cred: this
	// process's.
	self Cred

	notify atomic.Pointer[func(*Notification)]

	trace tracer

	kernelWrites atomic.Bool // the kernel computes write offsets, O_APPEND included
	unmounting   atomic.Bool // Unmount has begun: the daemon's leaving is expected
	doneOnce     sync.Once
	done         chan struct{}
	doneErr      error
}

func (u *Usermount) limits() *limits {
	if l := u.lim.Load(); l != nil {
		return l
	}
	return &preInitLimits
}

// preInitLimits apply before INIT: nothing but INIT is sized by them.
var preInitLimits = limits{maxWrite: 4096, maxRead: 4096}

// node returns the Node for nodeid, adding one lookup to its count: the
// daemon has just returned an entry for it.
func (u *Usermount) lookedUp(e *EntryOut, name string) *Node {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	n := u.nodes[e.NodeId]
	if n == nil {
		n = &Node{id: e.NodeId}
		u.nodes[e.NodeId] = n
	}
	if n != u.root {
		n.nlookup++
	}
	if name != ".." {
		n.name.Store(name)
	}
	n.setAttr(&e.Attr)
	return n
}

// forgotten takes up to count lookups off n and returns how many to send
// in FORGET. The node leaves the table when none remain. The root is never
// forgotten.
func (u *Usermount) forgotten(n *Node, count uint64) uint64 {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	if n == u.root || count == 0 {
		return 0
	}
	count = min(count, n.nlookup)
	n.nlookup -= count
	if n.nlookup == 0 && u.nodes[n.id] == n {
		delete(u.nodes, n.id)
	}
	return count
}

// deferForget keeps count lookups of n for after its last release, if n
// is open, and reports whether it did. nodesMu orders it with takeDeferred.
func (u *Usermount) deferForget(n *Node, count uint64) bool {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	if !u.isOpen(n) {
		return false
	}
	n.deferred += count
	return true
}

// takeDeferred returns, once n has no open left, the lookups kept for
// after its last release.
func (u *Usermount) takeDeferred(n *Node) uint64 {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	if n.deferred == 0 || u.isOpen(n) {
		return 0
	}
	count := n.deferred
	n.deferred = 0
	return count
}

// isOpen reports whether n has opens not yet released.
func (u *Usermount) isOpen(n *Node) bool {
	u.handlesMu.Lock()
	defer u.handlesMu.Unlock()
	return n.opens > 0
}

// NodeCount returns the number of nodes known, the root included.
func (u *Usermount) NodeCount() int {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	return len(u.nodes)
}

// NodeByID returns the known node with that nodeid, or nil.
func (u *Usermount) NodeByID(id uint64) *Node {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	return u.nodes[id]
}

// forgetOne is one nodeid and the lookups to return for it.
type forgetOne struct {
	node    *Node
	nodeid  uint64
	nlookup uint64
}

// forgetEverything empties the node table but for the root and returns
// every count still held, for the FORGETs at unmount.
func (u *Usermount) forgetEverything() []forgetOne {
	u.nodesMu.Lock()
	defer u.nodesMu.Unlock()
	var out []forgetOne
	for id, n := range u.nodes {
		if n == u.root {
			continue
		}
		if n.nlookup > 0 {
			out = append(out, forgetOne{node: n, nodeid: id, nlookup: n.nlookup})
		}
		n.nlookup = 0
		delete(u.nodes, id)
	}
	return out
}

// handleKey finds the opens of a node by the daemon's file handle.
type handleKey struct {
	nodeid uint64
	fh     uint64
	dir    bool
}

func (h *Handle) key() handleKey { return handleKey{h.node.id, h.fh, h.dir} }

// opened records a new open.
func (u *Usermount) opened(h *Handle) *Handle {
	u.handlesMu.Lock()
	defer u.handlesMu.Unlock()
	if u.handles == nil {
		u.handles = make(map[handleKey][]*Handle)
	}
	u.handles[h.key()] = append(u.handles[h.key()], h)
	h.node.opens++
	return h
}

// closed forgets h as an open.
func (u *Usermount) closed(h *Handle) {
	u.handlesMu.Lock()
	defer u.handlesMu.Unlock()
	k := h.key()
	hs := u.handles[k]
	for i, o := range hs {
		if o == h {
			hs = append(hs[:i:i], hs[i+1:]...)
			h.node.opens--
			break
		}
	}
	if len(hs) == 0 {
		delete(u.handles, k)
	} else {
		u.handles[k] = hs
	}
}

// openHandles returns the opens not yet released, of node n (nil: all).
func (u *Usermount) openHandles(n *Node) []*Handle {
	u.handlesMu.Lock()
	defer u.handlesMu.Unlock()
	var out []*Handle
	for _, hs := range u.handles {
		for _, h := range hs {
			if n == nil || h.node == n {
				out = append(out, h)
			}
		}
	}
	return out
}

// OpenHandles returns how many opens are not yet released.
func (u *Usermount) OpenHandles() int { return len(u.openHandles(nil)) }
