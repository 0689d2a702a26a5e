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

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestRayStateCLICompatibility runs Ray's own state CLI (`ray list`,
// `ray get`, `ray summary`) against a head's /api/v0 endpoints. Ray's
// state CLI has no --headers flag: it sends the token only when token
// auth is on in its environment (RAY_AUTH_MODE=token) and finds the
// token in RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).
func TestRayStateCLICompatibility(t *testing.T) {
	venv := rayVenv(t)
	c := startJobCluster(t, 1)
	var addrB []byte
	eventually(t, 30*time.Second, "the dashboard address", func() bool {
		var err error
		addrB, err = os.ReadFile(filepath.Join(c.Heads()[0].DataDir, "dashboard_address"))
		return err == nil && len(addrB) > 0
	})
	addr := "http://" + strings.TrimSpace(string(addrB))
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	evs := []*pb.TaskEvent{
		{TaskId: stateTaskID(1), JobId: "job1", FuncOrClassName: "square", Type: pb.TaskType_NORMAL_TASK,
			State: pb.TaskEventState_FINISHED, StateUnixNano: []int64{4: 1e18, 5: 1e18 + 1e6}},
		{TaskId: stateTaskID(2), JobId: "job1", FuncOrClassName: "square", Type: pb.TaskType_NORMAL_TASK,
			State: pb.TaskEventState_FAILED, ErrorType: "TASK_EXECUTION_EXCEPTION", ErrorMessage: "panic: boom"},
		{TaskId: stateTaskID(3), JobId: "job1", FuncOrClassName: "slow", Type: pb.TaskType_NORMAL_TASK,
			State: pb.TaskEventState_CANCELED},
	}
	if _, err := cl.ReportTaskEvents(ctx, &pb.ReportTaskEventsRequest{Events: evs}); err != nil {
		t.Fatal(err)
	}
	withToken := []string{"RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=" + c.Token()}
	ray := func(env []string, args ...string) (string, int) {
		t.Helper()
		return runVenvEnv(t, venv, 2*time.Minute, env, "ray", args...)
	}

	out, code := ray(withToken, "list", "tasks", "--address", addr)
	if code != 0 || !strings.Contains(out, "square") || !strings.Contains(out, "Total: 3") {
		t.Fatalf("ray list tasks (%d):\n%s", code, out)
	}
	out, code = ray(withToken, "list", "tasks", "--address", addr, "--filter", "state=FAILED", "--detail", "--format", "json")
	if code != 0 || !strings.Contains(out, "panic: boom") || !strings.Contains(out, "TASK_CANCELLED") {
		t.Fatalf("ray list tasks --filter state=FAILED (%d):\n%s", code, out)
	}
	out, code = ray(withToken, "list", "tasks", "--address", addr, "--filter", "colour=red")
	if code == 0 || !strings.Contains(out, "colour") {
		t.Fatalf("ray list tasks with a bad filter (%d):\n%s", code, out)
	}
	out, code = ray(withToken, "summary", "tasks", "--address", addr)
	if code != 0 || !strings.Contains(out, "total_tasks: 3") || !strings.Contains(out, "FAILED: 1") || !strings.Contains(out, "FINISHED: 1") {
		t.Fatalf("ray summary tasks (%d):\n%s", code, out)
	}
	out, code = ray(withToken, "get", "tasks", "0000000000000000"+"0000000000000002", "--address", addr)
	if code != 0 || !strings.Contains(out, "panic: boom") {
		t.Fatalf("ray get tasks (%d):\n%s", code, out)
	}
	for _, kind := range []string{"actors", "nodes", "jobs", "workers", "objects", "placement-groups"} {
		out, code = ray(withToken, "list", kind, "--address", addr)
		if code != 0 {
			t.Fatalf("ray list %s (%d):\n%s", kind, code, out)
		}
	}
	out, code = ray(withToken, "list", "nodes", "--address", addr, "--format", "json")
	if code != 0 || strings.Count(out, `"ALIVE"`) != 2 {
		t.Fatalf("ray list nodes (%d):\n%s", code, out)
	}
	for _, kind := range []string{"actors", "objects"} {
		if out, code = ray(withToken, "summary", kind, "--address", addr); code != 0 {
			t.Fatalf("ray summary %s (%d):\n%s", kind, code, out)
		}
	}
	// Without the token the API refuses Ray's CLI.
	if out, code = ray(nil, "list", "tasks", "--address", addr); code == 0 || strings.Contains(out, "square") {
		t.Fatalf("ray list tasks without the token succeeded (%d):\n%s", code, out)
	}
}

// runVenvEnv is runVenv with extra environment variables.
func runVenvEnv(t *testing.T, venv string, timeout time.Duration, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(venv, "bin", name), args...)
	cmd.Env = append(append(cleanEnv(), "RAY_USAGE_STATS_ENABLED=0"), env...)
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
