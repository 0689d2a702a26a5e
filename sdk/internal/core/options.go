package core

// The options of one call (a task, an actor creation or an actor call) in
// the form the runtime reads them; sdk/ray's CallOption functions set
// them, and RuntimeEnv's working dir is uploaded here once per process.

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/pkgstore"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// DefaultMaxRetries is how often a task whose worker crashed is retried.
const DefaultMaxRetries = 3

// CallOptions are one call's options; the zero value is not usable, start
// from NewCallOptions.
type CallOptions struct {
	RuntimeEnv      RuntimeEnv
	Res             resources.Set
	MaxRetries      int
	RetryExceptions bool
	// ReturnReplicas keeps each stored return on this many nodes before
	// the task's refs are ready (0 or 1: where it was made).
	ReturnReplicas int
	// Err is the first invalid option; the call fails with it.
	Err error
	// Backpressure (set by GeneratorBackpressure, generators only) holds
	// a generator's yield while this many items are unconsumed.
	Backpressure    int
	BackpressureSet bool
	// Strategy is where the task or actor may run (nil: the default
	// hybrid policy).
	Strategy *cpb.SchedulingStrategy

	// Actor options (ignored by tasks).
	CPUSet         bool
	Name           string
	Namespace      string
	Detached       bool
	MaxRestarts    int
	MaxTaskRetries int
	MaxConcurrency int

	// resOwned says Res is this call's own map, not the shared default
	// (SetRes copies it first).
	resOwned bool
}

// defaultRes is the resources of every call that sets none, shared:
// a task keeps its set until it ends, and a map of its own per queued
// task was 170 bytes of each of a million. Never modified.
var defaultRes = resources.Set{resources.CPU: 1}

// NewCallOptions returns the defaults (1 CPU, DefaultMaxRetries) with
// apply run on them; their resources are validated.
func NewCallOptions(apply func(*CallOptions)) CallOptions {
	o := CallOptions{Res: defaultRes, MaxRetries: DefaultMaxRetries}
	apply(&o)
	if o.Err == nil {
		if err := resources.Validate(o.Res); err != nil {
			o.Err = fmt.Errorf("%w: %v", ErrInvalidOption, err)
		}
	}
	return o
}

// SetRes sets a resource quantity, refusing a negative or non-finite one.
func (o *CallOptions) SetRes(name string, q float64) {
	if q < 0 || math.IsNaN(q) || math.IsInf(q, 0) {
		o.Err = fmt.Errorf("%w: %s=%v", ErrInvalidOption, name, q)
		return
	}
	if !o.resOwned {
		o.Res, o.resOwned = o.Res.Clone(), true
	}
	o.Res[name] = q
	if name == resources.CPU {
		o.CPUSet = true
	}
}

// RuntimeEnv is what a job's, task's or actor's processes run in (sdk/ray
// documents it): extra environment variables and a working directory.
type RuntimeEnv struct {
	// EnvVars are set in the worker's environment.
	EnvVars map[string]string
	// WorkingDir is a local directory (zipped and uploaded into the
	// cluster once, content-addressed) or a package URI
	// ("gcs://_ray_pkg_<hash>.zip"); it is the worker's current directory.
	WorkingDir string
}

// Validate refuses environment variables the control plane would.
func (e RuntimeEnv) Validate() error {
	if err := head.CheckEnvVars(e.EnvVars); err != nil {
		return fmt.Errorf("%w: runtime env: %v", ErrInvalidOption, err)
	}
	return nil
}

// isZero says whether the env adds nothing to the job's.
func (e RuntimeEnv) isZero() bool { return len(e.EnvVars) == 0 && e.WorkingDir == "" }

// apply sets the env (resolved: its working dir a package URI) on a task
// spec; the submitter puts it on the lease requests of the spec's shape.
func (e RuntimeEnv) apply(spec *pb.TaskSpec) {
	if e.isZero() {
		return
	}
	spec.RuntimeEnvVars, spec.RuntimeEnvWorkingDir = e.EnvVars, e.WorkingDir
}

// resolveEnv uploads a runtime env's local working dir (once per process).
func (c *Worker) resolveEnv(ctx context.Context, e RuntimeEnv) (RuntimeEnv, error) {
	if e.WorkingDir == "" || strings.HasPrefix(e.WorkingDir, "gcs://") {
		return e, nil
	}
	cp, err := c.controlPlane()
	if err != nil {
		return e, err
	}
	return c.envs.resolve(ctx, cp, e)
}

// envUploads uploads local working dirs once per process.
type envUploads struct {
	mu   sync.Mutex
	uris map[string]string // local dir → package URI
}

// resolve returns the env with a local working dir replaced by the URI of
// its package in the cluster, uploading it the first time.
func (u *envUploads) resolve(ctx context.Context, cp *cpclient.Client, e RuntimeEnv) (RuntimeEnv, error) {
	if e.WorkingDir == "" || strings.HasPrefix(e.WorkingDir, "gcs://") {
		return e, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if uri, ok := u.uris[e.WorkingDir]; ok {
		e.WorkingDir = uri
		return e, nil
	}
	data, err := pkgstore.Zip(e.WorkingDir, pkgstore.MaxPackageBytes)
	if err != nil {
		return e, fmt.Errorf("%w: working dir %s: %v", ErrRuntimeEnvSetup, e.WorkingDir, err)
	}
	name := pkgstore.NameFor(data)
	if err := pkgstore.Upload(ctx, cp, name, data); err != nil {
		return e, fmt.Errorf("%w: upload working dir %s: %v", ErrRuntimeEnvSetup, e.WorkingDir, err)
	}
	if u.uris == nil {
		u.uris = map[string]string{}
	}
	u.uris[e.WorkingDir] = pkgstore.URI(name)
	e.WorkingDir = pkgstore.URI(name)
	return e, nil
}
