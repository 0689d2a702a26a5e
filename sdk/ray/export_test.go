package ray

import (
	"context"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/lineage"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// CallByName submits a call of a function by name with untyped value
// arguments, as a binary that registered other types (or none) would.
func CallByName[R any](ctx context.Context, name string, args ...any) ObjectRef[R] {
	as := make([]argumenter, len(args))
	for i, a := range args {
		as[i] = Val(a)
	}
	keys, err := call(ctx, &core.Function{Name: name, NArgs: len(args), NRet: 1}, as, nil)
	return refsOf[R](keys, err)
}

// worker is the process's runtime, nil before Init.
func worker() *core.Worker {
	c, _ := core.Current()
	return c
}

// MappedReads is how many stored objects this process read in place.
func MappedReads() int64 {
	if c := worker(); c != nil {
		return c.MappedReads()
	}
	return 0
}

// EmbeddedRaylet is the embedded cluster's raylet address and token.
func EmbeddedRaylet() (addr, token string) { return core.EmbeddedRaylet() }

// LineageRebuilds is how many tasks this process resubmitted to rebuild
// lost objects.
func LineageRebuilds() int64 {
	if c := worker(); c != nil {
		return c.LineageRebuilds()
	}
	return 0
}

// RetainedTasks is how many task specs this process indexes for lineage
// (those something may need).
func RetainedTasks() int {
	if c := worker(); c != nil {
		return c.RetainedTasks()
	}
	return 0
}

// LineageRecorderStats is this process's lineage recorder's counters.
func LineageRecorderStats() lineage.Stats {
	if c := worker(); c != nil {
		return c.RecorderStats()
	}
	return lineage.Stats{}
}

// CancelThroughOwner cancels ref as a process that does not own it would:
// through the owner's CancelTask RPC, over gRPC.
func CancelThroughOwner[T any](ctx context.Context, ref ObjectRef[T], opts ...CancelOption) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	return c.CancelRemote(ctx, ref.owner, ref.id, cancelOptions(opts))
}

// OwnerAddress is this process's CoreWorker address.
func OwnerAddress() string {
	if c := worker(); c != nil {
		return c.Address()
	}
	return ""
}

// ControlPlane is the driver's control-plane client.
func ControlPlane() (*cpclient.Client, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	return c.ControlPlane()
}
