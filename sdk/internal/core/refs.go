package core

// Reference counting in the owner. An owned object is kept (its value in
// the object table, sdk/internal/memstore, its bytes on every node that holds a copy) while its count is
// above zero. The count is:
//
//   - one for the ObjectRef handle that Put or a task submission made: all
//     copies of that ref value share the handle, and the handle's count is
//     dropped by ObjectRef.Release or, failing that, by a cleanup the Go
//     runtime runs once no copy is reachable;
//   - one per task or actor call submitted with the ref as an argument,
//     until the task finishes (its retries included);
//   - one, never dropped, per actor creation with the ref as an argument
//     (a restarted actor reruns its constructor with the same arguments).
//
//   - one per ref decoded from a value in the owner's own process.
//
// Other processes that hold refs borrow the object (borrowers.go); the
// owner keeps it while any does. Once the count is zero and no borrower
// is left the owner forgets the object (a borrower asking for it gets
// ERROR_OBJECT_NOT_FOUND) and frees its node copies (freeLoop).

import (
	"runtime"
	"sync/atomic"

	"github.com/manta-ray/manta/internal/ids"
)

// Handle is shared by every copy of one ObjectRef value made in its
// owner's process.
type Handle struct {
	released atomic.Bool
	cleanup  runtime.Cleanup
	drop     refDrop
	// producer is the task that returns the object, when its lineage is
	// recorded: a task that takes the ref as an argument finds it here
	// (recovery.go). Nothing the task holds points back at the handle.
	producer *task
}

// refDrop is what a handle's cleanup needs: it must not point at the
// handle, or the handle would never become unreachable.
type refDrop struct {
	c        *Worker
	id       ids.ObjectID
	borrowed bool // a borrower's handle: drops a borrow, not the count
}

func (d refDrop) run() {
	if d.borrowed {
		d.c.borrows.release(d.id)
		return
	}
	d.c.mem.DecRef(d.id)
}

// newHandle makes the handle of an owned object whose handle reference
// the object table counted (memstore.NewOwned).
func (c *Worker) newHandle(id ids.ObjectID) *Handle {
	h := &Handle{drop: refDrop{c: c, id: id}}
	h.cleanup = runtime.AddCleanup(h, refDrop.run, h.drop)
	return h
}

// newBorrowHandle makes the handle of a borrowed object whose borrow the
// borrow table counted (borrowTable.acquire).
func (c *Worker) newBorrowHandle(id ids.ObjectID) *Handle {
	h := &Handle{drop: refDrop{c, id, true}}
	h.cleanup = runtime.AddCleanup(h, refDrop.run, h.drop)
	return h
}

// Release drops the handle's reference once, whoever comes first.
func (h *Handle) Release() {
	if h != nil && h.released.CompareAndSwap(false, true) {
		h.cleanup.Stop()
		h.drop.run()
	}
}

// Released says whether Release was called (a nil handle never is).
func (h *Handle) Released() bool { return h != nil && h.released.Load() }

// pinArgs counts a submission's reference arguments, and the refs inside
// its value arguments, until the task finishes: owned ones in the object
// table, borrowed ones in the borrow table (the borrow lasts until then).
// It returns them for unpin and unborrow. The refs must be reachable until
// it returns (the caller keeps them alive).
func (c *Worker) pinArgs(keys []ObjectKey, args []Arg) (owned, borrowed []ids.ObjectID) {
	pin := func(id ids.ObjectID, owner string) {
		if owner == c.address {
			owned = append(owned, id)
		} else if c.borrows.hold(id) {
			borrowed = append(borrowed, id)
		}
	}
	for _, k := range keys {
		pin(k.ID, k.Owner)
	}
	for _, a := range args {
		if a.Value == nil {
			continue
		}
		for _, r := range a.Value.Contained {
			if id, err := ids.ObjectFromBytes(r.ObjectId); err == nil {
				pin(id, r.Owner)
			}
		}
	}
	if len(owned) > 0 {
		owned = c.mem.AddRefs(owned)
	}
	return owned, borrowed
}

// unborrow drops the borrows pinArgs took.
func (c *Worker) unborrow(borrowed []ids.ObjectID) {
	for _, id := range borrowed {
		c.borrows.release(id)
	}
}
