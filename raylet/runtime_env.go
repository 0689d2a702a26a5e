package raylet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// jobEnvs caches each job's own runtime env: that of the submission whose
// entrypoint started its driver (`manta job submit --env/--working-dir`),
// read from the job table once per job.
type jobEnvs struct {
	mu   sync.Mutex
	envs map[string]*cpb.RuntimeEnv // nil value: the job has none
}

// jobEnv returns the runtime env of a driver job, nil when it has none.
func (r *Raylet) jobEnv(ctx context.Context, jobID string) (*cpb.RuntimeEnv, error) {
	r.jenv.mu.Lock()
	env, ok := r.jenv.envs[jobID]
	r.jenv.mu.Unlock()
	if ok {
		return env, nil
	}
	var found *cpb.JobInfo
	// A stale read first (any head); a job this head has not seen yet is
	// read again from the leader before it counts as unknown.
	for _, stale := range []bool{true, false} {
		jobs, err := r.cp.ListJobs(ctx, stale)
		if err != nil {
			return nil, err
		}
		for _, j := range jobs {
			if j.JobId == jobID {
				found = j
				break
			}
		}
		if found != nil {
			break
		}
	}
	// A job unknown to the leader has no env (drivers register before they
	// lease): that is cached too.
	if sid := found.GetMetadata()[fsm.SubmissionDriverKey]; sid != "" {
		s, err := r.cp.GetSubmission(ctx, sid, false)
		if err != nil && !errors.Is(err, fsm.ErrJobNotFound) {
			return nil, err
		}
		env = s.GetRuntimeEnv()
	}
	r.jenv.mu.Lock()
	if r.jenv.envs == nil {
		r.jenv.envs = map[string]*cpb.RuntimeEnv{}
	}
	r.jenv.envs[jobID] = env
	r.jenv.mu.Unlock()
	return env, nil
}

// leaseEnv is the runtime env a lease's worker runs in: the job's, with
// the request's (a task's ray.WithRuntimeEnv) merged over it as Ray merges
// them (its variables win; its working dir replaces the job's), and the
// working dir fetched and unpacked on this node.
func (r *Raylet) leaseEnv(ctx context.Context, req *pb.LeaseRequest) (workerpool.RuntimeEnv, error) {
	job, err := r.jobEnv(ctx, req.JobId)
	if err != nil {
		return workerpool.RuntimeEnv{}, fmt.Errorf("look up the job's runtime env: %w", err)
	}
	vars := map[string]string{}
	for k, v := range job.GetEnvVars() {
		vars[k] = v
	}
	for k, v := range req.RuntimeEnvVars {
		vars[k] = v
	}
	uri := job.GetWorkingDir()
	if req.RuntimeEnvWorkingDir != "" {
		uri = req.RuntimeEnvWorkingDir
	}
	env := workerpool.RuntimeEnv{}
	if len(vars) > 0 {
		env.EnvVars = vars
	}
	if uri != "" {
		start := time.Now()
		dir, err := r.pkgs.WorkingDir(ctx, uri)
		r.metrics.observeEnvSetup(start, err)
		if err != nil {
			return env, rpcerr.Wrapf(ErrRuntimeEnvSetup, "working_dir %s: %v", uri, err)
		}
		env.Dir = dir
	}
	return env, nil
}
