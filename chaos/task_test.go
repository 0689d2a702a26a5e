package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/ray"
)

// TestChaosSmokeRayletKill runs raylet-kill end to end on 2 raylets for
// 12s: the harness drives tasks from this process, kills node-2's raylet
// (its workers die with it) and starts another in its place, and every
// checker passes, the leak check counting raylets and workers too.
func TestChaosSmokeRayletKill(t *testing.T) {
	ctx := tc.Ctx(t, 90*time.Second)
	rep := runChaos(t, ctx, Options{Scenario: "raylet-kill", Duration: 12 * time.Second, Seed: 4, Clients: 2})
	var sb strings.Builder
	rep.Summary(&sb)
	t.Logf("summary:\n%s", sb.String())
	if !rep.Pass() {
		t.Fatalf("verdict %s", rep.Verdict)
	}
	if rep.Nodes != 2 {
		t.Fatalf("%d nodes; raylet-kill defaults to 2", rep.Nodes)
	}
	kills := 0
	for _, f := range rep.Faults {
		if f.Fault == faultKillRaylet && f.Error == "" {
			kills++
			if f.Target == "node-1" {
				t.Fatalf("fault %d killed the driver's raylet", f.Seq)
			}
		}
	}
	if kills == 0 {
		t.Fatalf("no raylet killed: %+v", rep.Faults)
	}
	var tasks *WorkloadReport
	for i := range rep.Workloads {
		if rep.Workloads[i].Name == "tasks" {
			tasks = &rep.Workloads[i]
		}
	}
	if tasks == nil || tasks.OK == 0 || tasks.Recovery.Count != len(rep.Faults) {
		t.Fatalf("task workload %+v", tasks)
	}
	pgChecks := 0
	for _, c := range rep.Checks {
		if c.Name == "no-leaked-processes" && !strings.Contains(c.Detail, " worker") {
			t.Fatalf("leak check did not track workers: %s", c.Detail)
		}
		if strings.HasPrefix(c.Name, "placement-group-") {
			pgChecks++
		}
	}
	if pgChecks != 2 {
		t.Fatalf("%d placement-group checks in the report; want 2 (tasks in bundles, no leaks)", pgChecks)
	}
}

// TestTaskChecksNameViolations feeds the task checker outcomes: a wrong
// value always fails, a documented error fails only where the run's
// faults do not make it legitimate.
func TestTaskChecksNameViolations(t *testing.T) {
	lost := fmt.Errorf("fetch: %w", ray.ErrObjectLost)
	cases := []struct {
		name     string
		faults   []string
		got      int
		err      error
		right    string // verdict of task-results-right
		errs     string // verdict of task-errors-documented
		contains string
	}{
		{"right value", nil, 7, nil, Pass, Pass, ""},
		{"wrong value", []string{faultKillRaylet}, 8, nil, Fail, Pass, "got 8, want 7"},
		{"object lost, raylet killed (lineage rebuilds it)", []string{faultKillRaylet}, 0, lost, Pass, Fail, "object-lost"},
		{"object lost, only workers killed", []string{faultKillWorker}, 0, lost, Pass, Fail, "object-lost"},
		{"worker crashed, head faults only", []string{faultKillLeader}, 0, ray.ErrWorkerCrashed, Pass, Fail, "worker-crashed"},
		{"undocumented error", []string{faultKillRaylet}, 0, errors.New("boom"), Pass, Fail, "other-error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := NewTaskWorkload(1)
			w.Accept = acceptedTaskErrors(c.faults)
			env := &Env{byName: map[string]*progress{}, start: time.Now()}
			// One right operation, so the workload is not idle.
			w.do(t.Context(), env, taskOpChain, 1, func(context.Context) (int, int, error) { return 7, 7, nil })
			w.do(t.Context(), env, taskOpChain, 1, func(context.Context) (int, int, error) { return c.got, 7, c.err })
			res := w.check()
			if res[0].Verdict != c.right || res[1].Verdict != c.errs {
				t.Fatalf("verdicts %s, %s; want %s, %s: %+v", res[0].Verdict, res[1].Verdict, c.right, c.errs, res)
			}
			if c.contains != "" && !strings.Contains(res[0].Detail+res[1].Detail, c.contains) {
				t.Fatalf("details do not say %q: %+v", c.contains, res)
			}
		})
	}
}

// TestTaskTimeoutIsAHang: a Get that returns nothing within the bound is
// recorded as a hang, which fails no-hangs.
func TestTaskTimeoutIsAHang(t *testing.T) {
	w := NewTaskWorkload(1)
	w.OpTimeout = 10 * time.Millisecond
	env := &Env{byName: map[string]*progress{}, start: time.Now()}
	w.do(t.Context(), env, taskOpFanOut, 3, func(ctx context.Context) (int, int, error) {
		<-ctx.Done()
		return 0, 1, ctx.Err()
	})
	if s := w.Stats(); len(s.Hangs) != 1 || w.Outcomes()[outcomeTimeout] != 1 {
		t.Fatalf("stats %+v, outcomes %v", s, w.Outcomes())
	}
}

// TestWorkerPIDsFindsWorkersOnly starts two children of this process, one
// with a worker's environment: only that one is a worker of "raylet"
// os.Getpid().
func TestWorkerPIDsFindsWorkersOnly(t *testing.T) {
	start := func(env ...string) int {
		cmd := exec.Command("sleep", "60")
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		return cmd.Process.Pid
	}
	worker := start(workerpool.EnvWorkerID + "=abc")
	other := start()
	// Poll: under load /proc may show a child before its exec is visible.
	var got []int
	tc.Eventually(t, 10*time.Second, func() error {
		got = workerPIDs([]int{os.Getpid()})
		if !slices.Contains(got, worker) {
			return fmt.Errorf("workerPIDs = %v; want %d", got, worker)
		}
		return nil
	})
	if slices.Contains(got, other) {
		t.Fatalf("workerPIDs = %v; want %d and not %d", got, worker, other)
	}
	if got := workerPIDs([]int{other}); len(got) != 0 {
		t.Fatalf("workers of a process with no children: %v", got)
	}
}

// TestDocumentedErrorsAreClassified makes the SDK return the two errors the
// task checker may accept, on a real cluster, and checks that the checker
// names them as it should: a task whose only attempt's worker is SIGKILLed
// (found the way the worker-kill fault finds workers) is worker-crashed; a
// value that only a killed raylet held is object-lost.
func TestDocumentedErrorsAreClassified(t *testing.T) {
	c := startClusterWith(t, launcher.Options{Binary: mantaBin, Heads: 3, Nodes: 2, DataDir: t.TempDir(),
		NodeArgs: func(i int) []string {
			if i == 1 {
				return []string{"--resources", "chaosblob=1"}
			}
			return nil
		}})
	ctx := tc.Ctx(t, 90*time.Second)
	nodes := c.Nodes()
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()), ray.Raylet(nodes[0].Address),
		ray.Logger(zaptest.NewLogger(t))); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the job ends before the cluster stops.
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	// The task says which worker runs it once it runs: killing a worker
	// before its task starts is no crash (the owner leases another).
	pidFile := filepath.Join(t.TempDir(), "pid")
	held := taskHold.Remote(ctx, ray.Val(pidFile), ray.Val(60_000), ray.MaxRetries(0))
	var pid int
	tc.Eventually(t, 30*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(string(b))
		return err
	})
	if pids := workerPIDs([]int{nodes[0].PID, nodes[1].PID}); !slices.Contains(pids, pid) {
		t.Fatalf("the task's worker %d is not among the workers found: %v", pid, pids)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := ray.Get(gctx, held)
	if got := classifyTaskResult(0, 60_000, err); got != outcomeWorkerCrashed {
		t.Fatalf("Get after the worker was killed: %v, classified %q; want %q", err, got, outcomeWorkerCrashed)
	}

	// MaxRetries(0): the lost blob may not be rebuilt from lineage, so the
	// Get meets a real ErrObjectLost.
	b := taskBlob.Remote(ctx, ray.Val(5), ray.Val(blobSize), ray.Resources(map[string]float64{"chaosblob": 1}), ray.MaxRetries(0))
	if ready, _, err := ray.Wait(ctx, []ray.ObjectRef[[]byte]{b}, 1, 30*time.Second); err != nil || len(ready) != 1 {
		t.Fatalf("blob not ready: %v", err)
	}
	if err := c.KillNode(1); err != nil {
		t.Fatal(err)
	}
	v, err := ray.Get(gctx, taskDigest.Remote(ctx, b))
	if got := classifyTaskResult(v, digest(blob(5, blobSize)), err); got != outcomeObjectLost {
		t.Fatalf("digest of a blob whose raylet was killed: %d, %v, classified %q; want %q", v, err, got, outcomeObjectLost)
	}
}

// TestChaosSmokeOwnerKill runs owner-kill end to end: workers that own
// objects the harness's driver borrows are SIGKILLed, and every borrowed
// object still reads right (adopted by the control plane).
func TestChaosSmokeOwnerKill(t *testing.T) {
	ctx := tc.Ctx(t, 90*time.Second)
	rep := runChaos(t, ctx, Options{Scenario: "owner-kill", Duration: 15 * time.Second, Seed: 5, Clients: 1,
		PlacementGroupClients: -1, ActorClients: -1, LineageClients: -1})
	var sb strings.Builder
	rep.Summary(&sb)
	t.Logf("summary:\n%s", sb.String())
	if !rep.Pass() {
		t.Fatalf("verdict %s", rep.Verdict)
	}
	kills := 0
	for _, f := range rep.Faults {
		if f.Fault == faultKillOwner && f.Error == "" {
			kills++
		}
	}
	if kills == 0 {
		t.Fatalf("no owner killed: %+v", rep.Faults)
	}
	found := false
	for _, c := range rep.Checks {
		if c.Name == "borrowed-objects-outlive-owners" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no borrowed-objects-outlive-owners check in %+v", rep.Checks)
	}
}
