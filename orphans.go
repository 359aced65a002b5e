package perfuse

import (
	"context"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/perfuse-go/perfuse/internal/wire"
)

// Late replies. A caller whose context ends waits a bounded grace after
// INTERRUPT and then leaves; the daemon may still complete the request.
// What such a late reply created is undone, as the kernel does for a
// request whose caller was killed: an entry is forgotten, an open released.
// Only the requests that create something are tracked.

// orphanMax bounds the requests tracked at once; past it the oldest is
// dropped (its late reply, if any, is then only logged).
const orphanMax = 4096

// orphanUndoTimeout bounds the RELEASE sent for a late open.
const orphanUndoTimeout = 5 * time.Second

// orphan is what undoing a request's late reply needs.
type orphan struct {
	op     Opcode
	nodeid uint64 // the request's node
	flags  uint32 // open flags, for RELEASE
}

// orphanage tracks the in-flight requests whose reply would create an
// entry or an open. Its own lock is a leaf: nothing is called under it.
type orphanage struct {
	mu     sync.Mutex
	byU    map[uint64]orphan
	order  []uint64 // uniques in the order tracked, for eviction
	undone int64    // late replies undone
}

func (o *orphanage) init() { o.byU = make(map[uint64]orphan) }

// createsSomething lists the opcodes whose reply hands the caller a lookup
// or a file handle.
var createsSomething = map[Opcode]bool{
	OpLookup: true, OpMknod: true, OpMkdir: true, OpSymlink: true, OpLink: true,
	OpCreate: true, OpOpen: true, OpOpendir: true, OpReaddirplus: true,
}

// track records m before it is sent, if its reply would need undoing.
func (o *orphanage) track(op Opcode, m *Message) bool {
	if !createsSomething[op] {
		return false
	}
	h := m.InHeader()
	rec := orphan{op: op, nodeid: h.NodeId}
	if op == OpOpen || op == OpOpendir || op == OpCreate {
		// OpenIn and CreateIn both start with the open flags.
		rec.flags = nativeEndian.Uint32(m.InPayload())
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.byU) >= orphanMax {
		o.evictLocked()
	}
	o.byU[h.Unique] = rec
	o.order = append(o.order, h.Unique)
	return true
}

// evictLocked drops the oldest tracked request still present.
func (o *orphanage) evictLocked() {
	for len(o.order) > 0 {
		u := o.order[0]
		o.order = o.order[1:]
		if _, ok := o.byU[u]; ok {
			delete(o.byU, u)
			return
		}
	}
}

// untrack forgets m: it was answered, or no reply can come.
func (o *orphanage) untrack(m *Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.byU, m.InHeader().Unique)
	if len(o.order) > 2*len(o.byU)+64 {
		// Compact, so order does not grow with every request.
		kept := o.order[:0]
		for _, u := range o.order {
			if _, ok := o.byU[u]; ok {
				kept = append(kept, u)
			}
		}
		o.order = kept
	}
}

// lateReply undoes what a reply to an abandoned request created. It
// reports whether the frame answered a tracked request.
func (o *orphanage) lateReply(u *Usermount, h OutHeader, m *Message) bool {
	o.mu.Lock()
	rec, ok := o.byU[h.Unique]
	delete(o.byU, h.Unique)
	o.mu.Unlock()
	if !ok {
		return false
	}
	if h.Status != 0 || int(h.Length) != len(m.Reply()) {
		return true // an error created nothing
	}
	o.mu.Lock()
	o.undone++
	o.mu.Unlock()
	p := m.OutPayload()
	ctx, cancel := context.WithTimeout(context.Background(), orphanUndoTimeout)
	defer cancel()
	var forget []forgetOne
	entry := func(b []byte) {
		if e, err := decodeExact[EntryOut](rec.op, b); err == nil && e.NodeId != 0 {
			forget = append(forget, forgetOne{nodeid: e.NodeId, nlookup: 1})
		}
	}
	release := func(b []byte, nodeid uint64, dir bool) {
		if out, err := decodeExact[fuse.OpenOut](rec.op, b); err == nil {
			u.sendRelease(ctx, &Handle{node: &Node{id: nodeid}, fh: out.Fh, dir: dir, flags: rec.flags})
		}
	}
	switch rec.op {
	case OpLookup, OpMknod, OpMkdir, OpSymlink, OpLink:
		entry(p)
	case OpOpen, OpOpendir:
		release(p, rec.nodeid, rec.op == OpOpendir)
	case OpCreate:
		// CREATE answers an entry and then an open.
		if es := wire.OutSize[EntryOut](); len(p) > es {
			if e, err := decodeExact[EntryOut](rec.op, p[:es]); err == nil {
				release(p[es:], e.NodeId, false)
			}
			entry(p[:es])
		}
	case OpReaddirplus:
		ParseDirentsPlus(p, func(d DirentPlus) bool {
			if lookupCounted(d) {
				forget = append(forget, forgetOne{nodeid: d.Entry.NodeId, nlookup: 1})
			}
			return true
		})
	}
	if len(forget) > 0 {
		u.sendForgets(ctx, forget)
	}
	u.debug(DiagReclaim, "perfuse: late reply undone", "unique", h.Unique, "op", rec.op, "forgets", len(forget))
	return true
}

// lateUndone returns how many late replies were undone.
func (o *orphanage) lateUndone() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.undone
}
