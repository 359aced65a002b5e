package perfuse

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
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

	// nlookup is the number of entries the daemon has returned for this
	// nodeid and we have not forgotten yet. Guarded by Usermount.nodesMu.
	nlookup uint64
}

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

func (n *Node) setAttr(a *fuse.Attr) {
	if a.Mode&syscall.S_IFMT != 0 {
		n.mode.Store(a.Mode & syscall.S_IFMT)
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
	mounter  Mounter
}

// Usermount is one perfuse session with one FUSE daemon: libperfuse's
// struct puffs_usermount with its perfuse_state. Its methods are the
// relay-side API and the operation table; they are safe for concurrent use.
//
// Lock order: nodesMu, then trace.mu. Neither is held across an exchange.
type Usermount struct {
	cb   *Callbacks
	mi   MountInfo
	conf config
	log  *slog.Logger
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

	xchgCount atomic.Int64 // exchanges so far
	inFlight  atomic.Int64 // exchanges waiting for their reply now

	notify atomic.Pointer[func(*Notification)]

	trace tracer

	unmounting atomic.Bool // Unmount has begun: the daemon's leaving is expected
	doneOnce   sync.Once
	done       chan struct{}
	doneErr    error
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
func (u *Usermount) lookedUp(e *fuse.EntryOut, name string) *Node {
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
