package ray

import (
	"context"

	"github.com/manta-ray/manta/sdk/internal/core"
)

// CancelOption configures Cancel.
type CancelOption func(*core.CancelOptions)

// Force kills the worker process running the task (the task cannot
// ignore it). Not for actor calls: the actor would die with its state.
func Force() CancelOption { return func(o *core.CancelOptions) { o.Force = true } }

// Recursive says whether the tasks the cancelled task submitted are
// cancelled too (default true, as in Ray).
func Recursive(on bool) CancelOption { return func(o *core.CancelOptions) { o.Recursive = on } }

// Cancel cancels the task (or actor call) that makes ref. A task still
// queued is removed and never runs; a running one has its context
// cancelled (Go code sees ctx.Done()), or with Force its worker process is
// killed. Either way Get of its results returns ErrTaskCancelled; a
// cancelled task is neither retried nor rebuilt from lineage. A queued
// actor call is removed and a running one's context cancelled; the actor
// lives on. Cancelling a task that already finished does nothing and
// returns nil (its value stays). Cancel works from any process holding
// the ref: it reaches the ref's owner.
func Cancel[T any](ctx context.Context, ref ObjectRef[T], opts ...CancelOption) error {
	o := cancelOptions(opts)
	if ref.err != nil {
		return ref.err
	}
	if err := ref.released(); err != nil {
		return err
	}
	c, err := core.Current()
	if err != nil {
		return err
	}
	return c.Cancel(ctx, ref.id, ref.owner, o)
}

// cancelOptions applies opts to the defaults (recursive).
func cancelOptions(opts []CancelOption) core.CancelOptions {
	o := core.CancelOptions{Recursive: true}
	for _, f := range opts {
		f(&o)
	}
	return o
}
