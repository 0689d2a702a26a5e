package ray

import (
	"runtime"
	"sync/atomic"

	"github.com/manta-ray/manta/internal/ids"
)

// Reference counting in the owner. An owned object is kept (its value in
// c.objects, its bytes on every node that holds a copy) while its count is
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
// An ObjectRef cannot leave its owner's process today (its fields are not
// serialised inside values, and reference arguments reach tasks resolved
// to their values), so there are no borrowers to count. At zero the owner
// forgets the object (a borrower asking for it gets ERROR_OBJECT_NOT_FOUND)
// and frees its node copies (freeLoop).

// refHandle is shared by every copy of one ObjectRef value made in its
// owner's process.
type refHandle struct {
	released atomic.Bool
	cleanup  runtime.Cleanup
	drop     refDrop
}

// refDrop is what a handle's cleanup needs: it must not point at the
// handle, or the handle would never become unreachable.
type refDrop struct {
	c  *core
	id ids.ObjectID
}

func (d refDrop) run() { d.c.decRef(d.id) }

// newHandleLocked gives an owned object its handle reference. c.mu is held.
func (c *core) newHandleLocked(o *object, id ids.ObjectID) *refHandle {
	o.owned = true
	o.refs++
	h := &refHandle{drop: refDrop{c, id}}
	h.cleanup = runtime.AddCleanup(h, refDrop.run, h.drop)
	return h
}

// release drops the handle's reference once, whoever comes first.
func (h *refHandle) release() {
	if h != nil && h.released.CompareAndSwap(false, true) {
		h.cleanup.Stop()
		h.drop.run()
	}
}

// decRef drops one reference to an owned object; the last forgets it and
// frees its copies.
func (c *core) decRef(id ids.ObjectID) {
	c.mu.Lock()
	o := c.objects[id]
	if o == nil || !o.owned {
		c.mu.Unlock()
		return
	}
	if o.refs--; o.refs > 0 {
		c.mu.Unlock()
		return
	}
	delete(c.objects, id)
	if isReady(o) {
		c.freeLaterLocked(id, o.val, o.copies)
	}
	// Not ready: completeLocked frees the result when it arrives.
	// The task's spec may outlive the object (lineage.go), the bytes not.
	tell := c.releasedLocked(id)
	c.mu.Unlock()
	if tell {
		c.releaseLineage([]ids.ObjectID{id})
	}
}

// pinArgs counts a submission's reference arguments that this process
// owns and returns them, for unpinArgs when the task finishes. The refs
// must be reachable until it returns (the caller keeps them alive).
func (c *core) pinArgs(keys []objectKey) []ids.ObjectID {
	var pinned []ids.ObjectID
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if k.owner != c.address {
			continue
		}
		if o := c.objects[k.id]; o != nil && o.owned {
			o.refs++
			pinned = append(pinned, k.id)
		}
	}
	return pinned
}

// unpinArgs drops the references pinArgs took.
func (c *core) unpinArgs(pinned []ids.ObjectID) {
	for _, id := range pinned {
		c.decRef(id)
	}
}

// mappedReadCount is how many stored objects this process read in place
// from its node's shared arena (rather than through a stream): tests use
// it to see that a worker mapped an object.
func mappedReadCount() int64 {
	c, err := current()
	if err != nil {
		return 0
	}
	return c.objs.MappedReads()
}
