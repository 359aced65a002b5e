package transport

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/perfuse-go/perfuse/internal/wire"
	"golang.org/x/sys/unix"
)

// A daemon that answers only after it has written more than the socket
// holds (notifications, say) while perfuse's request is still waiting for
// room in the daemon's full socket: the records must be read although
// nobody waits for an answer yet, or both ends wait for each other.
func TestRecordsAreReadWhileTheRequesterWaitsForRoom(t *testing.T) {
	var got atomic.Int64
	c, peer := pair(t, Options{Unsolicited: func([]byte) { got.Add(1) }})
	// Fill the daemon's end: it reads nothing yet.
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := c.Send(ctx, request(wire.OpForget, uint64(1000+2*i), 1, make([]byte, 1<<16)))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := exchange(c, ctx, request(wire.OpGetattr, 2, 1, nil))
	// The daemon writes 4 MiB of notifications before it reads anything:
	// more than perfuse's end holds, so each write waits for perfuse.
	const notes = 64
	for i := 0; i < notes; i++ {
		if _, err := unix.Write(peer, reply(0, 1, make([]byte, 1<<16))); err != nil {
			t.Fatal(err)
		}
	}
	// Now it reads its requests and answers the GETATTR.
	buf := make([]byte, 1<<17)
	for {
		n, err := unix.Read(peer, buf)
		if err != nil {
			t.Fatal(err)
		}
		if wire.OpcodeOf(buf[:n]) == wire.OpGetattr {
			break
		}
	}
	if _, err := unix.Write(peer, reply(2, 0, make([]byte, 104))); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, ch, 10*time.Second)
	if r.err != nil {
		t.Fatalf("GETATTR: %v", r.err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < notes && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got.Load() != notes {
		t.Fatalf("%d of %d notifications delivered", got.Load(), notes)
	}
}

// With nothing in flight the socket is still read: a notification and
// the daemon closing its end are seen without a request to wait on.
func TestIdleConnectionIsRead(t *testing.T) {
	notes := make(chan struct{}, 1)
	c, peer := pair(t, Options{Unsolicited: func([]byte) { notes <- struct{}{} }})
	time.Sleep(50 * time.Millisecond) // long past any lead
	if _, err := unix.Write(peer, reply(0, 1, nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notes:
	case <-time.After(5 * time.Second):
		t.Fatal("notification on an idle connection not read")
	}
	unix.Close(peer)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon's end closing went unseen")
	}
}

// Requests in flight together, answered out of order: every requester
// gets its own answer.
func TestAnswersOutOfOrderReachTheirRequesters(t *testing.T) {
	c, peer := pair(t, Options{})
	const batch, rounds = 8, 20
	go func() {
		buf := make([]byte, 1<<16)
		for {
			var uniques []uint64
			for len(uniques) < batch {
				n, err := unix.Read(peer, buf)
				if err != nil || n == 0 {
					return
				}
				uniques = append(uniques, wire.Unique(buf[:n]))
			}
			for i := len(uniques) - 1; i >= 0; i-- { // last asked, first answered
				payload := make([]byte, 104)
				le.PutUint64(payload, uniques[i])
				unix.Write(peer, reply(uniques[i], 0, payload))
			}
		}
	}()
	errs := make(chan error, batch)
	for g := 0; g < batch; g++ {
		go func() {
			for r := 0; r < rounds; r++ {
				u := uint64(2 + 2*(r*batch+g))
				f, err := c.Exchange(context.Background(), request(wire.OpGetattr, u, 1, nil))
				if err == nil && (wire.Unique(f) != u || le.Uint64(f[outHeaderSize:]) != u) {
					err = errors.New("answer of another request")
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < batch; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
