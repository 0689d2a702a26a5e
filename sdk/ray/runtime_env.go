package ray

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/pkgstore"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// ErrRuntimeEnvSetup: the runtime env a task or actor asked for could not
// be set up on the node that would run it (its working dir could not be
// fetched or unpacked); the error says why.
var ErrRuntimeEnvSetup = errors.New("ray: runtime env setup failed")

// RuntimeEnv is what a job's, task's or actor's processes run in, as Ray's
// runtime_env: extra environment variables and a working directory. A
// task's is merged over its job's (`manta job submit --env
// --working-dir`): its variables win, its working dir replaces the job's.
// Workers are pooled per runtime env; one never serves two.
type RuntimeEnv struct {
	// EnvVars are set in the worker's environment.
	EnvVars map[string]string
	// WorkingDir is a local directory (zipped and uploaded into the
	// cluster once, content-addressed) or a package URI
	// ("gcs://_ray_pkg_<hash>.zip"); it is the worker's current directory.
	WorkingDir string
}

// WithRuntimeEnv runs a task or actor in env, merged over its job's.
//
// Not wired into the submit path yet: until it is, using it fails the call
// with ErrInvalidOption rather than running in the wrong environment.
func WithRuntimeEnv(env RuntimeEnv) CallOption {
	return func(o *callOptions) {
		if err := env.validate(); err != nil {
			o.err = err
			return
		}
		o.err = fmt.Errorf("%w: ray.WithRuntimeEnv is not wired into the task submitter yet", ErrInvalidOption)
	}
}

func (e RuntimeEnv) validate() error {
	if err := head.CheckEnvVars(e.EnvVars); err != nil {
		return fmt.Errorf("%w: runtime env: %v", ErrInvalidOption, err)
	}
	return nil
}

// isZero says whether the env adds nothing to the job's.
func (e RuntimeEnv) isZero() bool { return len(e.EnvVars) == 0 && e.WorkingDir == "" }

// key names the env in a lease queue's scheduling key: tasks of different
// envs must not share a lease (its worker runs in one env).
func (e RuntimeEnv) key() string {
	if e.isZero() {
		return ""
	}
	kv := make([]string, 0, len(e.EnvVars))
	for k, v := range e.EnvVars {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return "env{" + strings.Join(kv, ",") + ";wd=" + e.WorkingDir + "}"
}

// apply sets the env (resolved: its working dir a package URI) on a task
// spec and the lease request that runs it.
func (e RuntimeEnv) apply(spec *pb.TaskSpec, req *pb.LeaseRequest) {
	if e.isZero() {
		return
	}
	if spec != nil {
		spec.RuntimeEnvVars, spec.RuntimeEnvWorkingDir = e.EnvVars, e.WorkingDir
	}
	if req != nil {
		req.RuntimeEnvVars, req.RuntimeEnvWorkingDir = e.EnvVars, e.WorkingDir
	}
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

// runtimeEnvError turns a lease refused for its runtime env into the error
// the task fails with (nil for other errors).
func runtimeEnvError(err error) error {
	if errors.Is(err, raylet.ErrRuntimeEnvSetup) {
		return fmt.Errorf("%w: %v", ErrRuntimeEnvSetup, err)
	}
	return nil
}
