package raylet_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/pkgstore"
	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// procEnv reads a process's environment and working directory from /proc.
func procEnv(t *testing.T, pid int32) (map[string]string, string) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/cwd")
	if err != nil {
		t.Fatal(err)
	}
	return env, cwd
}

// TestWorkersPooledPerRuntimeEnv: a job's workers run in its submission's
// runtime env (env vars, working dir as cwd); a lease's own env is merged
// over it and gets a worker of its own; a working dir that cannot be set
// up fails the lease with ErrRuntimeEnvSetup at once.
func TestWorkersPooledPerRuntimeEnv(t *testing.T) {
	_, rc, tc := startRaylet(t, resources.Set{"CPU": 4})
	cp := tc.Client()
	ctx := testcluster.Ctx(t, time.Minute)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	zip, err := pkgstore.Zip(dir, pkgstore.MaxPackageBytes)
	if err != nil {
		t.Fatal(err)
	}
	name := pkgstore.NameFor(zip)
	if err := pkgstore.Upload(ctx, cp, name, zip); err != nil {
		t.Fatal(err)
	}
	// A submission whose entrypoint never starts (no node has "nowhere"):
	// only its runtime env matters here.
	if _, err := cp.SubmitJob(ctx, &cpb.JobSubmission{SubmissionId: "env-job", Entrypoint: "true",
		EntrypointResources: map[string]float64{"nowhere": 1},
		RuntimeEnv:          &cpb.RuntimeEnv{EnvVars: map[string]string{"A": "job", "B": "job"}, WorkingDir: pkgstore.URI(name)}}); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, func() error {
		j, err := cp.GetSubmission(ctx, "env-job", false)
		if err == nil && !strings.Contains(j.Message, "no alive node has them") {
			err = errors.New("message: " + j.Message)
		}
		return err
	})
	job, err := cp.AddJob(ctx, &cpb.JobInfo{Metadata: map[string]string{fsm.SubmissionDriverKey: "env-job"}})
	if err != nil {
		t.Fatal(err)
	}
	lease := func(vars map[string]string, wd string) (*pb.LeaseReply, error) {
		return rc.RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: job, Resources: map[string]float64{"CPU": 1},
			RuntimeEnvVars: vars, RuntimeEnvWorkingDir: wd})
	}
	plain, err := lease(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	env, cwd := procEnv(t, plain.WorkerPid)
	if env["A"] != "job" || env["B"] != "job" || filepath.Base(cwd) != strings.TrimSuffix(name, ".zip") {
		t.Fatalf("a job worker: A=%q B=%q cwd=%s; want the job's env and working dir", env["A"], env["B"], cwd)
	}
	if _, err := os.Stat(filepath.Join(cwd, "data.txt")); err != nil {
		t.Fatalf("the working dir lacks the job's file: %v", err)
	}
	own, err := lease(map[string]string{"A": "task"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if own.WorkerId == plain.WorkerId {
		t.Fatal("a worker served two runtime envs")
	}
	if env, _ := procEnv(t, own.WorkerPid); env["A"] != "task" || env["B"] != "job" {
		t.Fatalf("the task's env: A=%q B=%q; want A from the task, B from the job", env["A"], env["B"])
	}
	// Given back, a worker serves its own env again, and only it.
	if _, err := rc.ReturnWorkerLease(ctx, &pb.ReturnLeaseRequest{LeaseId: own.LeaseId}); err != nil {
		t.Fatal(err)
	}
	again, err := lease(map[string]string{"A": "task"}, "")
	if err != nil || again.WorkerId != own.WorkerId {
		t.Fatalf("the same env again: %v %v; want worker %s back", again, err, own.WorkerId)
	}

	_, err = lease(nil, "gcs://_ray_pkg_missing.zip")
	err = rpcerr.FromStatus(err)
	if !errors.Is(err, raylet.ErrRuntimeEnvSetup) || !strings.Contains(err.Error(), "_ray_pkg_missing") {
		t.Fatalf("a missing working dir: %v; want ErrRuntimeEnvSetup naming it", err)
	}
}
