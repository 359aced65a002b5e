package check

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/perfuse-go/perfuse"
)

// Two lock owners, as two processes' files would be.
const (
	owner1 = 0x1111
	owner2 = 0x2222
)

func lock(typ uint32, start, end uint64) perfuse.FileLock {
	return perfuse.FileLock{Start: start, End: end, Typ: typ, Pid: 1}
}

// twoOpens creates name and opens it twice.
func (r *runner) twoOpens(name string) (e *perfuse.Entry, h1, h2 *perfuse.Handle, undo func(), err error) {
	e, h1, err = r.create(r.scratch, name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	h2, err = r.u.NodeOpen(r.ctx, nil, e.Node, syscall.O_RDWR)
	if err != nil {
		r.done(e, h1)
		r.unlink(r.scratch, name)
		return nil, nil, nil, nil, fmt.Errorf("OPEN: %w", err)
	}
	return e, h1, h2, func() {
		r.u.NodeClose(r.ctx, nil, h2, owner2)
		r.u.NodeClose(r.ctx, nil, h1, owner1)
		r.u.NodeReclaim(r.ctx, e.Node, 1)
		r.unlink(r.scratch, name)
	}, nil
}

// posixLocks: a write lock of one owner conflicts with another's, GETLK
// reports it, and unlocking frees it.
func (r *runner) posixLocks() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	if _, flags, _, _ := r.u.Negotiated(); flags&perfuse.CapPosixLocks == 0 {
		return skip("POSIX_LOCKS not taken at INIT")
	}
	_, h1, h2, undo, err := r.twoOpens("locks")
	if err != nil {
		return fail("%v", err)
	}
	defer undo()
	adv := func(h *perfuse.Handle, op perfuse.Opcode, owner uint64, lk perfuse.FileLock) (perfuse.FileLock, error) {
		return r.u.NodeAdvlock(r.ctx, nil, h, op, owner, lk, 0)
	}
	if _, err := adv(h1, perfuse.OpSetlk, owner1, lock(syscall.F_WRLCK, 100, 199)); err != nil {
		if unsupported(err) {
			return skip("SETLK answered %s", errName(err))
		}
		return fail("SETLK write lock: %v", err)
	}
	got, err := adv(h2, perfuse.OpGetlk, owner2, lock(syscall.F_WRLCK, 150, 150))
	if err != nil {
		return fail("GETLK: %v", err)
	}
	if got.Typ != syscall.F_WRLCK || got.Start > 150 || got.End < 150 {
		return fail("GETLK over another owner's write lock: %+v, want the lock", got)
	}
	if _, err := adv(h2, perfuse.OpSetlk, owner2, lock(syscall.F_RDLCK, 199, 300)); !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EACCES) {
		return fail("SETLK over another owner's write lock: %v, want EAGAIN", err)
	}
	if _, err := adv(h2, perfuse.OpSetlk, owner2, lock(syscall.F_WRLCK, 200, 300)); err != nil {
		return fail("SETLK of a range next to another owner's lock: %v", err)
	}
	if _, err := adv(h1, perfuse.OpSetlk, owner1, lock(syscall.F_UNLCK, 100, 199)); err != nil {
		return fail("SETLK unlock: %v", err)
	}
	if got, err := adv(h2, perfuse.OpGetlk, owner2, lock(syscall.F_WRLCK, 100, 199)); err != nil || got.Typ != syscall.F_UNLCK {
		return fail("GETLK after the unlock: %+v (%v), want no lock", got, err)
	}
	adv(h2, perfuse.OpSetlk, owner2, lock(syscall.F_UNLCK, 0, perfuse.OffsetMax))
	return pass("conflict seen by GETLK and SETLK (EAGAIN), adjacent range free, unlock frees")
}

// flockCase: an exclusive flock of one open conflicts with another open's.
func (r *runner) flockCase() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	if _, flags, _, _ := r.u.Negotiated(); flags&perfuse.CapFlockLocks == 0 {
		return skip("FLOCK_LOCKS not taken at INIT")
	}
	_, h1, h2, undo, err := r.twoOpens("flock")
	if err != nil {
		return fail("%v", err)
	}
	defer undo()
	whole := lock(syscall.F_WRLCK, 0, perfuse.OffsetMax)
	if _, err := r.u.NodeAdvlock(r.ctx, nil, h1, perfuse.OpSetlk, owner1, whole, perfuse.LkFlock); err != nil {
		if unsupported(err) {
			return skip("flock SETLK answered %s", errName(err))
		}
		return fail("flock LOCK_EX: %v", err)
	}
	if _, err := r.u.NodeAdvlock(r.ctx, nil, h2, perfuse.OpSetlk, owner2, whole, perfuse.LkFlock); !errors.Is(err, syscall.EAGAIN) {
		return fail("flock LOCK_EX|LOCK_NB over another open's: %v, want EAGAIN", err)
	}
	unlock := lock(syscall.F_UNLCK, 0, perfuse.OffsetMax)
	if _, err := r.u.NodeAdvlock(r.ctx, nil, h1, perfuse.OpSetlk, owner1, unlock, perfuse.LkFlock); err != nil {
		return fail("flock LOCK_UN: %v", err)
	}
	if _, err := r.u.NodeAdvlock(r.ctx, nil, h2, perfuse.OpSetlk, owner2, whole, perfuse.LkFlock); err != nil {
		return fail("flock LOCK_EX after the other's LOCK_UN: %v", err)
	}
	return pass("LOCK_EX conflicts between two opens (EAGAIN), free after LOCK_UN")
}

// interruptAfter is how long the blocked request runs before it is
// interrupted.
const interruptAfter = 100 * time.Millisecond

// interrupt blocks a SETLKW on another owner's lock, cancels it, and
// checks the daemon answers the INTERRUPT with EINTR. A daemon that does
// not (libfuse without -o intr, most daemons) is skipped: the op table
// gives up on the request after its grace, and the late reply is undone.
func (r *runner) interrupt() outcome {
	if o := r.needWrite(); o != nil {
		return *o
	}
	if _, flags, _, _ := r.u.Negotiated(); flags&perfuse.CapPosixLocks == 0 {
		return skip("no request known to be slow: POSIX_LOCKS (for a blocked SETLKW) not taken at INIT")
	}
	_, h1, h2, undo, err := r.twoOpens("intr")
	if err != nil {
		return fail("%v", err)
	}
	defer undo()
	whole := lock(syscall.F_WRLCK, 0, perfuse.OffsetMax)
	if _, err := r.u.NodeAdvlock(r.ctx, nil, h1, perfuse.OpSetlk, owner1, whole, 0); err != nil {
		if unsupported(err) {
			return skip("SETLK answered %s", errName(err))
		}
		return fail("SETLK: %v", err)
	}
	ctx, cancel := context.WithTimeout(r.ctx, interruptAfter)
	defer cancel()
	start := time.Now()
	_, err = r.u.NodeAdvlock(ctx, nil, h2, perfuse.OpSetlkw, owner2, whole, 0)
	took := time.Since(start)
	// Free the lock either way, so a daemon thread still blocked ends.
	r.u.NodeAdvlock(r.ctx, nil, h1, perfuse.OpSetlk, owner1, lock(syscall.F_UNLCK, 0, perfuse.OffsetMax), 0)
	switch {
	case err == nil:
		return fail("SETLKW over another owner's write lock succeeded while the lock was held")
	case errors.Is(err, syscall.EINTR):
		return pass("a SETLKW blocked on another owner's lock answered EINTR %v after INTERRUPT", (took - interruptAfter).Round(time.Millisecond))
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return skip("the daemon did not answer INTERRUPT of a blocked SETLKW within the grace (%v in all)", took.Round(time.Millisecond))
	case unsupported(err):
		return skip("SETLKW answered %s", errName(err))
	}
	return fail("SETLKW interrupted: %v, want EINTR", err)
}
