package raylet_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/pkgstore"
	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// waitJob waits for a submitted job to reach an end state and returns it.
func waitJob(t *testing.T, cp *cpclient.Client, id string) *cpb.JobSubmission {
	t.Helper()
	var j *cpb.JobSubmission
	testcluster.Eventually(t, 30*time.Second, func() error {
		var err error
		j, err = cp.GetSubmission(context.Background(), id, false)
		if err != nil {
			return err
		}
		if !fsm.SubmissionEnded(j.State) {
			return errors.New("job is " + j.State.String())
		}
		return nil
	})
	return j
}

func jobLogs(t *testing.T, cp *cpclient.Client, id string, follow bool) string {
	t.Helper()
	var b strings.Builder
	err := cp.JobLogs(testcluster.Ctx(t, 30*time.Second), id, 0, follow, func(c *cpb.JobLogsChunk) error {
		b.Write(c.Data)
		return nil
	})
	if err != nil {
		t.Fatalf("logs of %s: %v", id, err)
	}
	return b.String()
}

func TestJobSubmitWorkingDirEnvAndLogs(t *testing.T) {
	_, _, tc := startRaylet(t, resources.Set{"CPU": 2})
	cp := tc.Client()
	ctx := testcluster.Ctx(t, time.Minute)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("the data file\n"), 0o644); err != nil {
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
	spec := &cpb.JobSubmission{SubmissionId: "job-ok", Entrypoint: `cat data.txt; echo "greeting=$GREETING"; test -n "$MANTA_ADDRESS" && echo has-address`,
		RuntimeEnv: &cpb.RuntimeEnv{EnvVars: map[string]string{"GREETING": "hello"}, WorkingDir: pkgstore.URI(name)}, EntrypointNumCpus: 1}
	id, err := cp.SubmitJob(ctx, spec)
	if err != nil || id != "job-ok" {
		t.Fatalf("submit: %q %v", id, err)
	}
	// Following from the start returns once the job has ended.
	logs := jobLogs(t, cp, id, true)
	for _, want := range []string{"the data file", "greeting=hello", "has-address"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	j := waitJob(t, cp, id)
	if j.State != cpb.JobSubmissionState_SUBMISSION_SUCCEEDED || !j.HasExitCode || j.ExitCode != 0 || j.NodeId != "n1" || j.StartUnixNano == 0 || j.EndUnixNano < j.StartUnixNano {
		t.Fatalf("job: %v", j)
	}
	// The same submission again is the same job; another entrypoint under
	// its ID is AlreadyExists; nothing new is created.
	if again, err := cp.SubmitJob(ctx, spec); err != nil || again != id {
		t.Fatalf("resubmit: %q %v", again, err)
	}
	other := &cpb.JobSubmission{SubmissionId: "job-ok", Entrypoint: "true"}
	if _, err := cp.SubmitJob(ctx, other); !errors.Is(err, fsm.ErrSubmissionExists) || rpcerr.Code(err) != codes.AlreadyExists {
		t.Fatalf("another entrypoint under the same ID: %v", err)
	}
	if jobs, _ := cp.ListSubmissions(ctx, false); len(jobs) != 1 {
		t.Fatalf("jobs: %v", jobs)
	}

	failing, err := cp.SubmitJob(ctx, &cpb.JobSubmission{Entrypoint: "echo about to fail; exit 3"})
	if err != nil || !strings.HasPrefix(failing, "raysubmit_") {
		t.Fatalf("submit: %q %v", failing, err)
	}
	j = waitJob(t, cp, failing)
	if j.State != cpb.JobSubmissionState_SUBMISSION_FAILED || j.ExitCode != 3 || !strings.Contains(j.Message, "exit code 3") || !strings.Contains(j.Message, "about to fail") {
		t.Fatalf("failing job: %v", j)
	}
	if ok, err := cp.DeleteSubmission(ctx, failing); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if _, err := cp.GetSubmission(ctx, failing, false); !errors.Is(err, fsm.ErrJobNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestJobStopKillsTheProcessGroup(t *testing.T) {
	_, _, tc := startRaylet(t, resources.Set{"CPU": 1})
	cp := tc.Client()
	ctx := testcluster.Ctx(t, time.Minute)
	// The entrypoint ignores SIGTERM, so only the SIGKILL after the grace
	// period ends it; its child sleeps in the same group.
	id, err := cp.SubmitJob(ctx, &cpb.JobSubmission{Entrypoint: `trap "" TERM; echo started; sleep 300 & wait; sleep 300`})
	if err != nil {
		t.Fatal(err)
	}
	var pid int32
	testcluster.Eventually(t, 30*time.Second, func() error {
		j, err := cp.GetSubmission(ctx, id, false)
		if err != nil {
			return err
		}
		if j.State != cpb.JobSubmissionState_SUBMISSION_RUNNING {
			return errors.New(j.State.String())
		}
		pid = j.DriverPid
		return nil
	})
	t.Cleanup(func() { _ = syscall.Kill(-int(pid), syscall.SIGKILL) })
	if stopped, err := cp.StopSubmission(ctx, id); !stopped || err != nil {
		t.Fatalf("stop: %v %v", stopped, err)
	}
	j := waitJob(t, cp, id)
	if j.State != cpb.JobSubmissionState_SUBMISSION_STOPPED {
		t.Fatalf("stopped job: %v", j)
	}
	testcluster.Eventually(t, 10*time.Second, func() error {
		if err := syscall.Kill(-int(pid), 0); err == nil {
			return errors.New("the job's process group is still there")
		}
		return nil
	})
	if stopped, err := cp.StopSubmission(ctx, id); stopped || err != nil {
		t.Fatalf("a second stop: %v %v; want false", stopped, err)
	}
}

func TestJobBadInput(t *testing.T) {
	_, _, tc := startRaylet(t, resources.Set{"CPU": 1})
	cp := tc.Client()
	ctx := testcluster.Ctx(t, time.Minute)
	bad := []*cpb.JobSubmission{
		{Entrypoint: "  "},
		{Entrypoint: "x", RuntimeEnv: &cpb.RuntimeEnv{EnvVars: map[string]string{"1BAD": "v"}}},
		{Entrypoint: "x", RuntimeEnv: &cpb.RuntimeEnv{WorkingDir: "/etc"}},
		{Entrypoint: "x", RuntimeEnv: &cpb.RuntimeEnv{WorkingDir: "gcs://_ray_pkg_missing.zip"}},
		{Entrypoint: "x", EntrypointNumCpus: -1},
		{Entrypoint: "x", SubmissionId: "a/b"},
	}
	for _, j := range bad {
		if _, err := cp.SubmitJob(ctx, j); rpcerr.Code(err) != codes.InvalidArgument {
			t.Errorf("submit %v: %v; want InvalidArgument", j, err)
		}
	}
	if jobs, _ := cp.ListSubmissions(ctx, false); len(jobs) != 0 {
		t.Fatalf("bad submissions created jobs: %v", jobs)
	}
	for _, err := range []error{
		func() error { _, err := cp.GetSubmission(ctx, "nope", false); return err }(),
		func() error { _, err := cp.StopSubmission(ctx, "nope"); return err }(),
		cp.JobLogs(ctx, "nope", 0, false, func(*cpb.JobLogsChunk) error { return nil }),
	} {
		if !errors.Is(err, fsm.ErrJobNotFound) || rpcerr.Code(err) != codes.NotFound {
			t.Errorf("unknown job: %v; want NotFound", err)
		}
	}
	// Without the token: Unauthenticated, and no job.
	cc, err := grpc.NewClient(tc.Addresses()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = cpb.NewControlPlaneClient(cc).SubmitJob(ctx, &cpb.SubmitJobRequest{Job: &cpb.JobSubmission{Entrypoint: "touch /tmp/pwned"}})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("submit without a token: %v", err)
	}
	if jobs, _ := cp.ListSubmissions(ctx, false); len(jobs) != 0 {
		t.Fatalf("an unauthenticated submit created a job: %v", jobs)
	}
}
