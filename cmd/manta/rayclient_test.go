package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rayVenv is the virtualenv with Ray's client (`ray[default]`, pinned in
// .ci/run); MANTA_RAY_VENV overrides it.
func rayVenv(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MANTA_RAY_VENV")
	if dir == "" {
		dir, _ = filepath.Abs("../../.venv")
	}
	if _, err := os.Stat(filepath.Join(dir, "bin", "ray")); err != nil {
		t.Skipf("skipping the Ray client compatibility test: no Ray client in %s (.ci/run creates it: python3 -m venv .venv && .venv/bin/pip install 'ray[default]==2.60.0')", dir)
	}
	return dir
}

// runVenv runs a program of the virtualenv and returns its combined output
// and exit code; the process is killed when the test's deadline passes.
func runVenv(t *testing.T, venv string, timeout time.Duration, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(venv, "bin", name), args...)
	cmd.Env = append(cleanEnv(), "RAY_USAGE_STATS_ENABLED=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish in %s:\n%s", name, args, timeout, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out), code
}

// TestRayClientCompatibility drives a manta cluster with Ray's own CLI and
// Python JobSubmissionClient: no Ray cluster, only Ray's clients.
func TestRayClientCompatibility(t *testing.T) {
	venv := rayVenv(t)
	// Three heads; the clients talk to head-2's API, usually a follower's,
	// which forwards writes to the leader.
	c := startJobCluster(t, 3)
	var addrB []byte
	// A head writes the file once it knows the cluster token.
	eventually(t, 30*time.Second, "head-2's jobs api address", func() bool {
		var err error
		addrB, err = os.ReadFile(filepath.Join(c.Heads()[1].DataDir, "dashboard_address"))
		return err == nil && len(addrB) > 0
	})
	addr := "http://" + strings.TrimSpace(string(addrB))
	headers := `{"Authorization": "Bearer ` + c.Token() + `"}`
	ray := func(sub string, args ...string) (string, int) {
		t.Helper()
		return runVenv(t, venv, 2*time.Minute, "ray", append([]string{"job", sub, "--address", addr, "--headers", headers}, args...)...)
	}

	// The app: a Go program built here, shipped in the working dir with a
	// data file it reads.
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "app"), "../../examples/jobapp")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the app: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("from the ray client\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runVenv(t, venv, 2*time.Minute, "ray", "job", "submit", "--address", addr, "--headers", headers,
		"--submission-id", "ray-1", "--working-dir", dir, "--runtime-env-json", `{"env_vars": {"GREETING": "hello-ray"}}`, "--", "./app")
	if code != 0 {
		t.Fatalf("ray job submit: exit %d\n%s", code, out)
	}
	for _, want := range []string{"data.txt: from the ray client", "GREETING=hello-ray", "sum of squares 0..9 = 285", "succeeded"} {
		if !strings.Contains(out, want) {
			t.Errorf("ray job submit output lacks %q:\n%s", want, out)
		}
	}
	if out, code := ray("status", "ray-1"); code != 0 || !strings.Contains(out, "succeeded") {
		t.Fatalf("ray job status: exit %d\n%s", code, out)
	}
	if out, code := ray("logs", "ray-1"); code != 0 || !strings.Contains(out, "GREETING=hello-ray") {
		t.Fatalf("ray job logs: exit %d\n%s", code, out)
	}
	if out, code := ray("submit", "--no-wait", "--submission-id", "ray-2", "--", "sleep", "300"); code != 0 {
		t.Fatalf("ray job submit --no-wait: exit %d\n%s", code, out)
	}
	if out, code := ray("stop", "ray-2"); code != 0 || !strings.Contains(out, "stopped") {
		t.Fatalf("ray job stop: exit %d\n%s", code, out)
	}
	if out, code := ray("list"); code != 0 || !strings.Contains(out, "ray-1") || !strings.Contains(out, "ray-2") || !strings.Contains(out, "STOPPED") {
		t.Fatalf("ray job list: exit %d\n%s", code, out)
	}
	// Without the token Ray's CLI is refused and nothing is created.
	if out, code := runVenv(t, venv, 2*time.Minute, "ray", "job", "submit", "--no-wait", "--address", addr, "--submission-id", "intruder", "--", "true"); code == 0 {
		t.Fatalf("ray job submit without the token succeeded:\n%s", out)
	}
	if r := mantaCmd(t, clusterEnv(c), "", "job", "status", "intruder"); r.code != 1 || !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("an unauthenticated submission created a job: %v", r)
	}

	// A short script with JobSubmissionClient.
	script := `
import sys, time
from ray.job_submission import JobSubmissionClient, JobStatus
c = JobSubmissionClient(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
sid = c.submit_job(entrypoint="echo py-$GREETING; exit 3", runtime_env={"env_vars": {"GREETING": "client"}}, metadata={"owner": "py"})
deadline = time.time() + 60
while c.get_job_status(sid) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
    assert time.time() < deadline, "the job did not end"
    time.sleep(0.1)
info = c.get_job_info(sid)
assert info.status == JobStatus.FAILED, info
assert info.driver_exit_code == 3, info
assert info.metadata.get("owner") == "py", info
assert "py-client" in c.get_job_logs(sid), c.get_job_logs(sid)
assert sid in [j.submission_id for j in c.list_jobs()]
assert c.delete_job(sid)
print("python client ok")
`
	sp := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(sp, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runVenv(t, venv, 2*time.Minute, "python", sp, addr, c.Token()); code != 0 || !strings.Contains(out, "python client ok") {
		t.Fatalf("JobSubmissionClient script: exit %d\n%s", code, out)
	}
}
