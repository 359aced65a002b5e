package kernel

import (
	"context"
	"time"

	"github.com/perfuse-go/perfuse"
)

// retrieveTimeout bounds a NOTIFY_RETRIEVE round trip to the kernel.
const retrieveTimeout = 10 * time.Second

// retrievesInFlight bounds the NOTIFY_RETRIEVEs served at once, and so
// the memory a daemon can make the relay hold (each up to max_write). A
// daemon that asks for more while that many are pending, and so is not
// reading its socket, has the others dropped: the kernel would answer
// them, but a daemon that floods retrieves without reading gets no more.
const retrievesInFlight = 8

// notify relays a daemon notification to the kernel through go-fuse's
// notify calls. Before the kernel mount exists there is no cache to
// invalidate, and the notification is dropped.
func (k *FS) notify(n *perfuse.Notification) {
	srv := k.server()
	if srv == nil {
		k.log.Debug("perfuse: notification before the kernel mount dropped", "code", n.Code)
		return
	}
	var st interface{ Ok() bool }
	switch n.Code {
	case perfuse.NotifyInvalInode:
		st = srv.InodeNotify(n.Nodeid, n.Off, n.Len)
	case perfuse.NotifyInvalEntry:
		st = srv.EntryNotify(n.Parent, n.Name)
	case perfuse.NotifyDelete:
		st = srv.DeleteNotify(n.Parent, n.Child, n.Name)
	case perfuse.NotifyStore:
		st = srv.InodeNotifyStoreCache(n.Nodeid, n.Off, n.Data)
	case perfuse.NotifyPrune:
		st = srv.PruneNotify(n.Nodeids)
	case perfuse.NotifyRetrieve:
		// The kernel answers through go-fuse's read loop; do not hold up
		// the notifications behind this one.
		select {
		case k.retrieves <- struct{}{}:
			go func() {
				defer func() { <-k.retrieves }()
				k.retrieve(n)
			}()
		default:
			k.retrievesDropped.Add(1)
			k.warn.Warn("retrieve", "perfuse: NOTIFY_RETRIEVE dropped: too many in flight", "max", retrievesInFlight, "nodeid", n.Nodeid)
		}
		return
	default:
		// POLL wakeups need kernel poll handles, which go-fuse does not
		// relay; RESEND and INC_EPOCH have no go-fuse call.
		k.log.Debug("perfuse: notification not relayed", "code", n.Code)
		return
	}
	if !st.Ok() {
		k.log.Debug("perfuse: kernel refused notification", "code", n.Code, "status", st)
	}
}

// RetrievesDropped returns how many NOTIFY_RETRIEVEs were dropped because
// too many were in flight.
func (k *FS) RetrievesDropped() int64 { return k.retrievesDropped.Load() }

// retrieve asks the kernel for cached data and hands it to the daemon in a
// NOTIFY_REPLY.
func (k *FS) retrieve(n *perfuse.Notification) {
	// The daemon chooses the size; the kernel caps a retrieve at
	// max_write, and so does the relay.
	_, _, maxWrite, _ := k.u.Negotiated()
	buf := make([]byte, min(int(n.Size), maxWrite))
	got, st := k.server().InodeRetrieveCache(n.Nodeid, n.Off, buf)
	if !st.Ok() {
		got = 0
	}
	node := k.u.NodeByID(n.Nodeid)
	if node == nil {
		node = k.u.Root()
	}
	ctx, cancel := context.WithTimeout(context.Background(), retrieveTimeout)
	defer cancel()
	if err := k.u.NotifyReply(ctx, n.NotifyUnique, node, uint64(n.Off), buf[:got]); err != nil {
		k.log.Debug("perfuse: NOTIFY_REPLY", "err", err)
	}
}
