package ray

import (
	"context"

	"github.com/manta-ray/manta/lineage"
)

// CallByName submits a call of a function by name with untyped value
// arguments, as a binary that registered other types (or none) would.
func CallByName[R any](ctx context.Context, name string, args ...any) ObjectRef[R] {
	as := make([]argumenter, len(args))
	for i, a := range args {
		as[i] = Val(a)
	}
	keys, err := submit(ctx, &function{name: name, nargs: len(args), nret: 1}, as, nil)
	return refsOf[R](keys, err)
}

// MappedReads is how many stored objects this process read in place.
func MappedReads() int64 { return mappedReadCount() }

// EmbeddedRaylet is the embedded cluster's raylet address and token.
func EmbeddedRaylet() (addr, token string) {
	state.Lock()
	defer state.Unlock()
	if state.raylet == nil || state.head == nil {
		return "", ""
	}
	return state.raylet.Address(), state.head.Token()
}

// LineageRebuilds is how many tasks this process resubmitted to rebuild
// lost objects.
func LineageRebuilds() int64 { return lineageRebuilds() }

// RetainedTasks is how many task specs this process retains for lineage.
func RetainedTasks() int { return retainedTasks() }

// LineageRecorderStats is this process's lineage recorder's counters.
func LineageRecorderStats() lineage.Stats { return recorderStats() }

// InArena says whether b is a view of a node arena this process mapped
// (an argument read in place) rather than a copy.
func InArena(b []byte) bool {
	c, err := current()
	if err != nil {
		return false
	}
	return c.objs.Holds(b)
}

// CancelThroughOwner cancels ref as a process that does not own it would:
// through the owner's CancelTask RPC, over gRPC.
func CancelThroughOwner[T any](ctx context.Context, ref ObjectRef[T], opts ...CancelOption) error {
	c, err := current()
	if err != nil {
		return err
	}
	o := cancelOptions{recursive: true}
	for _, f := range opts {
		f(&o)
	}
	return c.cancelRemote(ctx, ref.owner, ref.id, o)
}

// OwnerAddress is this process's CoreWorker address.
func OwnerAddress() string {
	c, err := current()
	if err != nil {
		return ""
	}
	return c.address
}
