package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
)

// startJobCluster starts heads and two raylets: node-2 alone has the
// resource "second", so a job can be sent there.
func startJobCluster(t *testing.T, heads int) *launcher.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: heads, DataDir: t.TempDir(), Nodes: 2,
		NodeArgs: func(i int) []string {
			if i == 1 {
				return []string{"--num-cpus", "2", "--resources", "second=1"}
			}
			return []string{"--num-cpus", "2"}
		}})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

type jobReport struct {
	ID       string `json:"submission_id"`
	Status   string `json:"status"`
	Message  string `json:"message"`
	Node     string `json:"node_id"`
	Driver   string `json:"driver_job_id"`
	ExitCode *int   `json:"exit_code"`
}

func jobStatus(t *testing.T, env []string, id string) jobReport {
	t.Helper()
	r := mantaCmd(t, env, "", "job", "status", id, "--json")
	if r.code != 0 {
		t.Fatalf("job status %s: %v", id, r)
	}
	return decodeJSON[jobReport](t, r)
}

// submittedID is the ID in "Job 'ID' submitted successfully".
func submittedID(t *testing.T, r result) string {
	t.Helper()
	_, rest, ok := strings.Cut(r.stdout, "Job '")
	id, _, ok2 := strings.Cut(rest, "'")
	if !ok || !ok2 || id == "" {
		t.Fatalf("no job ID in the output: %v", r)
	}
	return id
}

// TestJobCLI submits a Go program built by --go with a working dir and an
// env var, follows it to SUCCEEDED, and checks a failing job's exit code,
// stop, list, delete and bad input.
func TestJobCLI(t *testing.T) {
	c := startJobCluster(t, 1)
	env := clusterEnv(c)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("forty-two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := mantaCmd(t, env, "", "job", "submit", "--submission-id", "app-1", "--working-dir", dir, "--env", "GREETING=hello",
		"--go", "../../examples/jobapp")
	if r.code != 0 {
		t.Fatalf("submit and follow: %v", r)
	}
	for _, want := range []string{"data.txt: forty-two", "GREETING=hello", "sum of squares 0..9 = 285"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the followed logs lack %q: %v", want, r)
		}
	}
	st := jobStatus(t, env, "app-1")
	if st.Status != "SUCCEEDED" || st.ExitCode == nil || *st.ExitCode != 0 || st.Driver == "" {
		t.Fatalf("status: %+v; want SUCCEEDED, exit 0, a linked driver job", st)
	}
	if r := mantaCmd(t, env, "", "job", "logs", "app-1"); r.code != 0 || !strings.Contains(r.stdout, "GREETING=hello") {
		t.Fatalf("logs: %v", r)
	}
	// `manta logs --job` takes a submission ID for its driver job's workers.
	if r := mantaCmd(t, env, "", "logs", "--job", "app-1"); r.code != 0 {
		t.Fatalf("worker logs of a submission: %v", r)
	}

	// A driver with a task running: stop ends it, its driver job, and the
	// job's workers.
	workers := func() (leased, all int32) {
		st := decodeJSON[statusReport](t, mantaCmd(t, env, "", "status", "--json"))
		for _, n := range st.Nodes {
			leased, all = leased+n.LeasedWorkers, all+n.Workers
		}
		return leased, all
	}
	r = mantaCmd(t, env, "", "job", "submit", "--no-wait", "--submission-id", "holder", "--working-dir", dir,
		"--env", "JOBAPP_HOLD=1", "--go", "../../examples/jobapp")
	if r.code != 0 {
		t.Fatalf("submit the holder: %v", r)
	}
	eventually(t, 30*time.Second, "the holder's task running", func() bool {
		leased, _ := workers()
		logs := mantaCmd(t, env, "", "job", "logs", "holder")
		return leased > 0 && strings.Contains(logs.stdout, "holding until stopped")
	})
	if r := mantaCmd(t, env, "", "job", "stop", "holder"); r.code != 0 || !strings.Contains(r.stdout, "STOPPED") {
		t.Fatalf("stop the holder: %v", r)
	}
	eventually(t, 30*time.Second, "the holder's workers gone", func() bool {
		_, all := workers()
		return all == 0
	})

	r = mantaCmd(t, env, "", "job", "submit", "--", "sh", "-c", "echo failing; exit 7")
	if r.code != 7 || !strings.Contains(r.stdout, "failing") || !strings.Contains(r.stderr, "exit code 7") {
		t.Fatalf("a failing job: %v; want exit 7", r)
	}
	if st := jobStatus(t, env, submittedID(t, r)); st.Status != "FAILED" || *st.ExitCode != 7 {
		t.Fatalf("failing job: %+v", st)
	}

	r = mantaCmd(t, env, "", "job", "submit", "--no-wait", "--entrypoint-resources", `{"second": 1}`, "--", "echo started; sleep 300")
	if r.code != 0 {
		t.Fatalf("submit --no-wait: %v", r)
	}
	sleeper := submittedID(t, r)
	eventually(t, 30*time.Second, "the sleeper running on node-2", func() bool {
		st := jobStatus(t, env, sleeper)
		return st.Status == "RUNNING" && st.Node == "node-2"
	})
	if r := mantaCmd(t, env, "", "job", "delete", sleeper); r.code != 1 || !strings.Contains(r.stderr, "FailedPrecondition") {
		t.Fatalf("delete of a running job: %v", r)
	}
	if r := mantaCmd(t, env, "", "job", "stop", sleeper); r.code != 0 || !strings.Contains(r.stdout, "STOPPED") {
		t.Fatalf("stop: %v", r)
	}
	r = mantaCmd(t, env, "", "job", "list")
	if r.code != 0 || !strings.Contains(r.stdout, sleeper) || !strings.Contains(r.stdout, "STOPPED") || !strings.Contains(r.stdout, "app-1") {
		t.Fatalf("list: %v", r)
	}
	if r := mantaCmd(t, env, "", "job", "delete", sleeper); r.code != 0 {
		t.Fatalf("delete: %v", r)
	}
	if r := mantaCmd(t, env, "", "job", "status", sleeper); r.code != 1 || !strings.Contains(r.stderr, "NotFound") {
		t.Fatalf("status of a deleted job: %v", r)
	}

	// Bad input: usage errors (2) or InvalidArgument (1); nothing created.
	for _, args := range [][]string{
		{"job", "submit", "--no-wait"},
		{"job", "submit", "--no-wait", "--env", "1X=y", "--", "true"},
		{"job", "submit", "--no-wait", "--runtime-env-json", "{bad", "--", "true"},
		{"job", "submit", "--no-wait", "--runtime-env-json", `{"pip": ["x"]}`, "--", "true"},
		{"job", "submit", "--no-wait", "--submission-id", "app-1", "--", "other"},
		{"job", "submit", "--no-wait", "--working-dir", filepath.Join(dir, "missing"), "--", "true"},
	} {
		if r := mantaCmd(t, env, "", args...); r.code == 0 {
			t.Errorf("%v: %v; want an error", args, r)
		}
	}
	if r := mantaCmd(t, env, "", "job", "list", "--json"); len(decodeJSON[[]jobReport](t, r)) != 3 {
		t.Fatalf("bad submissions created jobs: %v", r)
	}
}

// TestJobSurvivesLeaderAndFailsWithItsNode: the leader head is SIGKILLed
// while a job runs (status, logs and stop still work, and it finishes);
// then the node running a job's driver is SIGKILLed and the job is FAILED
// with "node died".
func TestJobSurvivesLeaderAndFailsWithItsNode(t *testing.T) {
	c := startJobCluster(t, 3)
	env := clusterEnv(c)
	gate := filepath.Join(t.TempDir(), "go")
	r := mantaCmd(t, env, "", "job", "submit", "--no-wait", "--submission-id", "gated", "--",
		"echo waiting; while [ ! -f "+gate+" ]; do sleep 0.05; done; echo finished")
	if r.code != 0 {
		t.Fatalf("submit: %v", r)
	}
	r = mantaCmd(t, env, "", "job", "submit", "--no-wait", "--submission-id", "sleeper", "--", "sleep 300")
	if r.code != 0 {
		t.Fatalf("submit: %v", r)
	}
	eventually(t, 30*time.Second, "both jobs running", func() bool {
		return jobStatus(t, env, "gated").Status == "RUNNING" && jobStatus(t, env, "sleeper").Status == "RUNNING"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if st := jobStatus(t, env, "gated"); st.Status != "RUNNING" {
		t.Fatalf("after the leader died: %+v", st)
	}
	if r := mantaCmd(t, env, "", "job", "logs", "gated"); r.code != 0 || !strings.Contains(r.stdout, "waiting") {
		t.Fatalf("logs after the leader died: %v", r)
	}
	if r := mantaCmd(t, env, "", "job", "stop", "sleeper"); r.code != 0 || !strings.Contains(r.stdout, "STOPPED") {
		t.Fatalf("stop after the leader died: %v", r)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := mantaCmd(t, env, "", "job", "logs", "--follow", "gated"); r.code != 0 || !strings.Contains(r.stdout, "finished") {
		t.Fatalf("follow after the leader died: %v", r)
	}
	eventually(t, 30*time.Second, "the gated job to succeed", func() bool { return jobStatus(t, env, "gated").Status == "SUCCEEDED" })

	r = mantaCmd(t, env, "", "job", "submit", "--no-wait", "--submission-id", "doomed", "--entrypoint-resources", `{"second": 1}`, "--", "sleep 300")
	if r.code != 0 {
		t.Fatalf("submit: %v", r)
	}
	eventually(t, 30*time.Second, "the doomed job running", func() bool { return jobStatus(t, env, "doomed").Status == "RUNNING" })
	if err := c.KillNode(1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the job of the dead node to fail", func() bool {
		st := jobStatus(t, env, "doomed")
		return st.Status == "FAILED" && strings.Contains(st.Message, "node died")
	})
}
