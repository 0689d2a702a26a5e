package ray

import "github.com/manta-ray/manta/sdk/internal/core"

// RuntimeEnv is what a job's, task's or actor's processes run in, as Ray's
// runtime_env: extra environment variables (EnvVars, set in the worker's
// environment) and a working directory (WorkingDir: a local directory,
// zipped and uploaded into the cluster once, content-addressed, or a
// package URI "gcs://_ray_pkg_<hash>.zip"; it is the worker's current
// directory). A task's is merged over its job's (`manta job submit --env
// --working-dir`): its variables win, its working dir replaces the job's.
// Workers are pooled per runtime env; one never serves two.
type RuntimeEnv = core.RuntimeEnv

// WithRuntimeEnv runs a task or actor in env, merged over its job's. A
// local working dir is zipped and uploaded once per process; a setup that
// fails on the node fails the task with ErrRuntimeEnvSetup.
func WithRuntimeEnv(env RuntimeEnv) CallOption {
	return func(o *core.CallOptions) {
		if err := env.Validate(); err != nil {
			o.Err = err
			return
		}
		o.RuntimeEnv = env
	}
}
