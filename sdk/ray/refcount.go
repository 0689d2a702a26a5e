package ray

import (
	"runtime"
	"sync/atomic"

	"github.com/manta-ray/manta/internal/ids"
)

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

// newHandle makes the handle of an owned object whose handle reference
// the object table counted (memstore.NewOwned).
func (c *core) newHandle(id ids.ObjectID) *refHandle {
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
// frees its copies (the object table does), then tells the lineage
// (released).
func (c *core) decRef(id ids.ObjectID) { c.mem.DecRef(id) }

// released is the object table's report that an owned object's last
// reference went: the task's spec may outlive the object (lineage.go),
// the bytes not.
func (c *core) released(id ids.ObjectID) {
	c.lin.mu.Lock()
	tell := c.releasedLocked(id)
	c.lin.mu.Unlock()
	if tell {
		c.releaseLineage([]ids.ObjectID{id})
	}
}

// pinArgs counts a submission's reference arguments that this process
// owns and returns them, for unpinArgs when the task finishes. The refs
// must be reachable until it returns (the caller keeps them alive).
func (c *core) pinArgs(keys []objectKey) []ids.ObjectID {
	var owned []ids.ObjectID
	for _, k := range keys {
		if k.owner == c.address {
			owned = append(owned, k.id)
		}
	}
	if len(owned) == 0 {
		return nil
	}
	return c.mem.AddRefs(owned)
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
