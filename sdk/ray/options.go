package ray

import (
	"fmt"

	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// CallOption sets an option of one remote call.
type CallOption func(*core.CallOptions)

// DefaultMaxRetries is how often a task whose worker crashed is retried.
const DefaultMaxRetries = core.DefaultMaxRetries

func newCallOptions(opts []CallOption) core.CallOptions {
	return core.NewCallOptions(func(o *core.CallOptions) {
		for _, f := range opts {
			f(o)
		}
	})
}

// NumCPUs is the CPUs the task needs (default 1).
func NumCPUs(n float64) CallOption { return func(o *core.CallOptions) { o.SetRes(resources.CPU, n) } }

// NumGPUs is the GPUs the task needs (default 0).
func NumGPUs(n float64) CallOption { return func(o *core.CallOptions) { o.SetRes(resources.GPU, n) } }

// Memory is the memory the task needs, in bytes.
func Memory(bytes float64) CallOption {
	return func(o *core.CallOptions) { o.SetRes(resources.Memory, bytes) }
}

// Resources adds custom resources the task needs.
func Resources(r map[string]float64) CallOption {
	return func(o *core.CallOptions) {
		for k, v := range r {
			o.SetRes(k, v)
		}
	}
}

// MaxRetries is how often the task is retried when its worker dies
// (default 3; -1 is not supported and is refused).
func MaxRetries(n int) CallOption {
	return func(o *core.CallOptions) {
		if n < 0 {
			o.Err = fmt.Errorf("%w: MaxRetries(%d)", ErrInvalidOption, n)
		}
		o.MaxRetries = n
	}
}

// ReturnReplicas keeps each of the task's stored returns on n distinct
// alive nodes (the one it was made on and n-1 copies, pushed in parallel)
// before its refs are ready, and makes new copies while they are
// referenced when a holder dies, as Put's Replicas does: bandwidth for
// rebuild time. A return small enough to be inline lives in its owner and
// is not copied. Fewer alive nodes than n fail the task's returns with
// ErrInvalidOption.
func ReturnReplicas(n int) CallOption {
	return func(o *core.CallOptions) {
		if n < 1 {
			o.Err = fmt.Errorf("%w: ReturnReplicas(%d); want at least 1", ErrInvalidOption, n)
		}
		o.ReturnReplicas = n
	}
}

// RetryExceptions also retries the task (within MaxRetries) when it
// returns an error or panics.
func RetryExceptions(b bool) CallOption { return func(o *core.CallOptions) { o.RetryExceptions = b } }

// Name names an actor: GetActor finds it by name in its namespace while it
// lives. A taken name is refused (AlreadyExists).
func Name(name string) CallOption { return func(o *core.CallOptions) { o.Name = name } }

// Namespace is the namespace of an actor's name (default "").
func Namespace(ns string) CallOption { return func(o *core.CallOptions) { o.Namespace = ns } }

// LifetimeKind says what an actor's life is tied to.
type LifetimeKind int

const (
	// NonDetached actors die with their job (the default).
	NonDetached LifetimeKind = iota
	// Detached actors outlive their driver; find them by name.
	Detached
)

// Lifetime sets an actor's lifetime (Detached or NonDetached).
func Lifetime(l LifetimeKind) CallOption {
	return func(o *core.CallOptions) { o.Detached = l == Detached }
}

// MaxRestarts is how often an actor is restarted when its worker or node
// dies (default 0; -1 restarts forever). A restart resets its state.
func MaxRestarts(n int) CallOption {
	return func(o *core.CallOptions) {
		if n < -1 {
			o.Err = fmt.Errorf("%w: MaxRestarts(%d)", ErrInvalidOption, n)
		}
		o.MaxRestarts = n
	}
}

// MaxTaskRetries is how often a call to an actor is resent when the actor
// died while running it (default 0: at most once; -1 forever).
func MaxTaskRetries(n int) CallOption {
	return func(o *core.CallOptions) {
		if n < -1 {
			o.Err = fmt.Errorf("%w: MaxTaskRetries(%d)", ErrInvalidOption, n)
		}
		o.MaxTaskRetries = n
	}
}

// MaxConcurrency is how many calls an actor runs at once (default 1:
// one at a time, in order).
func MaxConcurrency(n int) CallOption {
	return func(o *core.CallOptions) {
		if n < 1 {
			o.Err = fmt.Errorf("%w: MaxConcurrency(%d)", ErrInvalidOption, n)
		}
		o.MaxConcurrency = n
	}
}
