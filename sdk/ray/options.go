package ray

import (
	"fmt"
	"math"

	"github.com/manta-ray/manta/raylet/resources"
)

// CallOption sets an option of one remote call.
type CallOption func(*callOptions)

type callOptions struct {
	res             resources.Set
	maxRetries      int
	retryExceptions bool
	err             error
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
