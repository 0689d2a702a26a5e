package ray

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/pkgstore"
	pb "github.com/manta-ray/manta/proto/rayletpb"
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

// WithRuntimeEnv runs a task or actor in env, merged over its job's. A
// local working dir is zipped and uploaded once per process; a setup that
// fails on the node fails the task with ErrRuntimeEnvSetup.
func WithRuntimeEnv(env RuntimeEnv) CallOption {
	return func(o *callOptions) {
		if err := env.validate(); err != nil {
			o.err = err
			return
		}
		o.runtimeEnv = env
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

// apply sets the env (resolved: its working dir a package URI) on a task
// spec; the submitter puts it on the lease requests of the spec's shape.
func (e RuntimeEnv) apply(spec *pb.TaskSpec) {
	if e.isZero() {
		return
	}
	spec.RuntimeEnvVars, spec.RuntimeEnvWorkingDir = e.EnvVars, e.WorkingDir
}

// resolveEnv uploads a runtime env's local working dir (once per process).
func (c *core) resolveEnv(ctx context.Context, e RuntimeEnv) (RuntimeEnv, error) {
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
