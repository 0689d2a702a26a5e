package ray

import (
	"fmt"
	"math"

	"github.com/manta-ray/manta/raylet/resources"
)

// CallOption sets an option of one remote call.
type CallOption func(*callOptions)

type callOptions struct {
	runtimeEnv      RuntimeEnv
	res             resources.Set
	maxRetries      int
	retryExceptions bool
	err             error

	// Actor options (ignored by tasks).
	cpuSet         bool
	name           string
	namespace      string
	detached       bool
	maxRestarts    int
	maxTaskRetries int
	maxConcurrency int
}

// DefaultMaxRetries is how often a task whose worker crashed is retried.
const DefaultMaxRetries = 3

func newCallOptions(opts []CallOption) callOptions {
	o := callOptions{res: resources.Set{resources.CPU: 1}, maxRetries: DefaultMaxRetries}
	for _, f := range opts {
		f(&o)
	}
	if o.err == nil {
		if err := resources.Validate(o.res); err != nil {
			o.err = fmt.Errorf("%w: %v", ErrInvalidOption, err)
		}
	}
	return o
}

func (o *callOptions) setRes(name string, q float64) {
	if q < 0 || math.IsNaN(q) || math.IsInf(q, 0) {
		o.err = fmt.Errorf("%w: %s=%v", ErrInvalidOption, name, q)
		return
	}
	o.res[name] = q
	if name == resources.CPU {
		o.cpuSet = true
	}
}

// NumCPUs is the CPUs the task needs (default 1).
func NumCPUs(n float64) CallOption { return func(o *callOptions) { o.setRes(resources.CPU, n) } }

// NumGPUs is the GPUs the task needs (default 0).
func NumGPUs(n float64) CallOption { return func(o *callOptions) { o.setRes(resources.GPU, n) } }

// Memory is the memory the task needs, in bytes.
func Memory(bytes float64) CallOption {
	return func(o *callOptions) { o.setRes(resources.Memory, bytes) }
}

// Resources adds custom resources the task needs.
func Resources(r map[string]float64) CallOption {
	return func(o *callOptions) {
		for k, v := range r {
			o.setRes(k, v)
		}
	}
}

// MaxRetries is how often the task is retried when its worker dies
// (default 3; -1 is not supported and is refused).
func MaxRetries(n int) CallOption {
	return func(o *callOptions) {
		if n < 0 {
			o.err = fmt.Errorf("%w: MaxRetries(%d)", ErrInvalidOption, n)
		}
		o.maxRetries = n
	}
}

// RetryExceptions also retries the task (within MaxRetries) when it
// returns an error or panics.
func RetryExceptions(b bool) CallOption { return func(o *callOptions) { o.retryExceptions = b } }

// Name names an actor: GetActor finds it by name in its namespace while it
// lives. A taken name is refused (AlreadyExists).
func Name(name string) CallOption { return func(o *callOptions) { o.name = name } }

// Namespace is the namespace of an actor's name (default "").
func Namespace(ns string) CallOption { return func(o *callOptions) { o.namespace = ns } }

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
	return func(o *callOptions) { o.detached = l == Detached }
}

// MaxRestarts is how often an actor is restarted when its worker or node
// dies (default 0; -1 restarts forever). A restart resets its state.
func MaxRestarts(n int) CallOption {
	return func(o *callOptions) {
		if n < -1 {
			o.err = fmt.Errorf("%w: MaxRestarts(%d)", ErrInvalidOption, n)
		}
		o.maxRestarts = n
	}
}

// MaxTaskRetries is how often a call to an actor is resent when the actor
// died while running it (default 0: at most once; -1 forever).
func MaxTaskRetries(n int) CallOption {
	return func(o *callOptions) {
		if n < -1 {
			o.err = fmt.Errorf("%w: MaxTaskRetries(%d)", ErrInvalidOption, n)
		}
		o.maxTaskRetries = n
	}
}

// MaxConcurrency is how many calls an actor runs at once (default 1:
// one at a time, in order).
func MaxConcurrency(n int) CallOption {
	return func(o *callOptions) {
		if n < 1 {
			o.err = fmt.Errorf("%w: MaxConcurrency(%d)", ErrInvalidOption, n)
		}
		o.maxConcurrency = n
	}
}
