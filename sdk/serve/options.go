package serve

import (
	"fmt"
	"time"

	"github.com/manta-ray/manta/raylet/resources"
)

// Option sets an option of a deployment (at registration, or per Bind).
type Option interface{ apply(*deploymentOptions) }

type optionFunc func(*deploymentOptions)

func (f optionFunc) apply(o *deploymentOptions) { f(o) }

type deploymentOptions struct {
	numReplicas   int
	maxOngoing    int
	maxQueued     int
	autoscaling   *Autoscaling
	resources     map[string]float64
	version       string
	healthPeriod  time.Duration
	healthTimeout time.Duration
	envVars       map[string]string
	err           error
}

func defaultOptions() deploymentOptions {
	return deploymentOptions{numReplicas: 1, maxOngoing: 5, maxQueued: 100, healthPeriod: 2 * time.Second,
		healthTimeout: 5 * time.Second}
}

func (o deploymentOptions) with(opts []Option) deploymentOptions {
	if o.resources != nil {
		r := make(map[string]float64, len(o.resources))
		for k, v := range o.resources {
			r[k] = v
		}
		o.resources = r
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

func bad(o *deploymentOptions, format string, args ...any) {
	if o.err == nil {
		o.err = fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, args...)...)
	}
}

// NumReplicas is the number of replicas (default 1; ignored with
// Autoscaling).
func NumReplicas(n int) Option {
	return optionFunc(func(o *deploymentOptions) {
		if n < 0 {
			bad(o, "num_replicas %d", n)
		}
		o.numReplicas = n
	})
}

// MaxOngoingRequests is how many requests one replica handles at once
// (default 5, as in Ray): proxies and handles send no more.
func MaxOngoingRequests(n int) Option {
	return optionFunc(func(o *deploymentOptions) {
		if n < 1 {
			bad(o, "max_ongoing_requests %d; want at least 1", n)
		}
		o.maxOngoing = n
	})
}

// MaxQueuedRequests is how many requests a proxy holds for the deployment
// while every replica is full (default 100); more get 503.
func MaxQueuedRequests(n int) Option {
	return optionFunc(func(o *deploymentOptions) {
		if n < 0 {
			bad(o, "max_queued_requests %d", n)
		}
		o.maxQueued = n
	})
}

// Version names the deployment's code version: a redeploy with another
// version (or another argument or options) rolls the replicas over.
func Version(v string) Option { return optionFunc(func(o *deploymentOptions) { o.version = v }) }

// NumCPUs is the CPUs each replica holds (default 0, as an actor).
func NumCPUs(n float64) Option { return resource(resources.CPU, n) }

// NumGPUs is the GPUs each replica holds.
func NumGPUs(n float64) Option { return resource(resources.GPU, n) }

// Resources adds custom resources each replica holds.
func Resources(r map[string]float64) Option {
	return optionFunc(func(o *deploymentOptions) {
		for k, v := range r {
			resource(k, v).apply(o)
		}
	})
}

func resource(name string, n float64) Option {
	return optionFunc(func(o *deploymentOptions) {
		if n < 0 {
			bad(o, "resource %s: %v", name, n)
		}
		if o.resources == nil {
			o.resources = map[string]float64{}
		}
		o.resources[name] = n
	})
}

// EnvVars sets environment variables in the replicas' worker processes
// (their runtime env).
func EnvVars(vars map[string]string) Option {
	return optionFunc(func(o *deploymentOptions) {
		m := make(map[string]string, len(o.envVars)+len(vars))
		for k, v := range o.envVars {
			m[k] = v
		}
		for k, v := range vars {
			m[k] = v
		}
		o.envVars = m
	})
}

// HealthCheck sets how often a replica runs its CheckHealth method and
// how long one check may take (defaults 2 s and 5 s).
func HealthCheck(period, timeout time.Duration) Option {
	return optionFunc(func(o *deploymentOptions) {
		if period <= 0 || timeout <= 0 {
			bad(o, "health check period and timeout must be positive")
		}
		o.healthPeriod, o.healthTimeout = period, timeout
	})
}

// Autoscaling sizes a deployment by load: the controller aims at
// TargetOngoingRequests per replica, between Min and Max replicas, once
// the wish held for UpscaleDelay (to grow) or DownscaleDelay (to shrink).
// Load is the replicas' ongoing requests and the requests proxies queue.
type Autoscaling struct {
	Min, Max              int
	TargetOngoingRequests float64
	UpscaleDelay          time.Duration
	DownscaleDelay        time.Duration
}

func (a Autoscaling) apply(o *deploymentOptions) {
	if a.Min < 0 || a.Max < a.Min || a.Max < 1 || !(a.TargetOngoingRequests > 0) || a.UpscaleDelay < 0 || a.DownscaleDelay < 0 {
		bad(o, "autoscaling %+v: want 0 <= Min <= Max, Max >= 1, TargetOngoingRequests > 0", a)
	}
	o.autoscaling = &a
}
