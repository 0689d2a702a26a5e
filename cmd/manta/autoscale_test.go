package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// whereAmI returns the node a task ran on.
var whereAmI = ray.Func0("manta.test.autoscale.whereAmI", func(ctx context.Context) (string, error) {
	ri, err := ray.RuntimeContext(ctx)
	return ri.NodeID, err
})

const autoscaleTestConfig = `
node_types:
  - {name: big, resources: {CPU: 1, big: 1}, max_count: 2, labels: {kind: big}}
  - {name: cpu, resources: {CPU: 1}, max_count: 3}
idle_timeout: 2s
interval: 200ms
launch_timeout: 40s
`

// startAutoscaled starts heads with the local provider's autoscaler and
// one raylet of 1 CPU, connects this process as a driver, and stops all
// (the launched raylets too, by pid) when the test ends.
func startAutoscaled(t *testing.T, heads int) (*launcher.Cluster, *cpclient.Client) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "autoscale.yaml")
	if err := os.WriteFile(cfg, []byte(autoscaleTestConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: heads, DataDir: filepath.Join(dir, "cluster"), Nodes: 1,
		Autoscale: cfg, ExtraHeadArgs: []string{"--object-store-memory", "64MiB"},
		NodeArgs: func(int) []string { return []string{"--num-cpus", "1", "--object-store-memory", "64MiB"} }})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		// Close stops the launched raylets as well; this is in case it fails.
		defer func() {
			for _, pid := range autoscaler.PIDs(c.AutoscaleDir()) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}()
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ray.Shutdown(context.Background()) })
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return c, cl
}

func instances(t *testing.T, cl *cpclient.Client) []*pb.AutoscalerInstance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cl.AutoscalerStatus(ctx)
	if err != nil {
		t.Logf("autoscaler status: %v", err)
		return nil
	}
	return st.Instances
}

func countIn(insts []*pb.AutoscalerInstance, nodeType string, states ...pb.InstanceState) int {
	n := 0
	for _, in := range insts {
		for _, s := range states {
			if in.NodeType == nodeType && in.State == s {
				n++
			}
		}
	}
	return n
}

// A task needing {"big": 1} on a cluster without it launches a node of the
// type that has it; the task runs there; after the idle timeout the node
// is removed.
func TestAutoscalerLaunchesForAnInfeasibleTaskAndRemovesTheIdleNode(t *testing.T) {
	_, cl := startAutoscaled(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	node, err := ray.Get(ctx, whereAmI.Remote(ctx, ray.Resources(map[string]float64{"big": 1})))
	if err != nil {
		t.Fatal(err)
	}
	insts := instances(t, cl)
	if len(insts) != 1 || insts[0].NodeType != "big" || insts[0].InstanceId != node {
		t.Fatalf("task ran on %s; instances %v: want it on the one big node launched", node, insts)
	}
	eventually(t, 30*time.Second, "the idle big node to be removed", func() bool {
		return countIn(instances(t, cl), "big", pb.InstanceState_INSTANCE_TERMINATED) == 1
	})
	out := mantaCmd(t, nil, "", "status", "--address", strings.Join(cl.Addresses(), ","), "--token", cl.Token())
	for _, want := range []string{"autoscaler:", "NODE TYPE", "big", "launch", "needs {CPU=1,big=1}", "idle for"} {
		if !strings.Contains(out.stdout, want) {
			t.Fatalf("manta status lacks %q:\n%s", want, out)
		}
	}
}

// A placement group of 3 STRICT_SPREAD bundles on a cluster of 1 node
// launches 2 more.
func TestAutoscalerLaunchesNodesForAStrictSpreadGroup(t *testing.T) {
	_, cl := startAutoscaled(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	pg, err := ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 1}, {"CPU": 1}, {"CPU": 1}}, ray.StrictSpread)
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	// The group may be placed before the autoscaler's next round records
	// its nodes running.
	eventually(t, 10*time.Second, "2 cpu nodes running", func() bool {
		return countIn(instances(t, cl), "cpu", pb.InstanceState_INSTANCE_RUNNING) == 2
	})
	if insts := instances(t, cl); len(insts) != 2 {
		t.Fatalf("instances %v: want exactly 2 cpu nodes", insts)
	}
}

// The leader SIGKILLed right after a launch decision: exactly one node is
// launched for the demand.
func TestAutoscalerLaunchesOnceAcrossALeaderKill(t *testing.T) {
	c, cl := startAutoscaled(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	ref := whereAmI.Remote(ctx, ray.Resources(map[string]float64{"big": 1}))
	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a launch decision", func() bool { return len(instances(t, cl)) > 0 })
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	node, err := ray.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	insts := instances(t, cl)
	if len(insts) != 1 || insts[0].InstanceId != node {
		t.Fatalf("task ran on %s; instances %v: want exactly one launched", node, insts)
	}
	if dirs, _ := os.ReadDir(c.AutoscaleDir()); len(dirs) != 1 {
		t.Fatalf("the provider launched %d raylets, want 1", len(dirs))
	}
}

// ray.RequestResources scales up to the request and keeps it until cleared.
func TestRequestResourcesScalesUpAndKeepsItUntilCleared(t *testing.T) {
	_, cl := startAutoscaled(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	// node-1 holds one of the three CPUs.
	if err := ray.RequestResources(ctx, []ray.Bundle{{"CPU": 1}, {"CPU": 1}, {"CPU": 1}}); err != nil {
		t.Fatal(err)
	}
	var since time.Time
	eventually(t, 30*time.Second, "2 cpu nodes running", func() bool {
		ok := countIn(instances(t, cl), "cpu", pb.InstanceState_INSTANCE_RUNNING) == 2
		if ok && since.IsZero() {
			since = time.Now()
		}
		return ok
	})
	// Kept past several idle timeouts (2s) while requested.
	eventually(t, 20*time.Second, "three idle timeouts to pass", func() bool {
		if n := countIn(instances(t, cl), "cpu", pb.InstanceState_INSTANCE_RUNNING); n != 2 {
			t.Fatalf("%d cpu nodes running while they are requested, want 2: %v", n, instances(t, cl))
		}
		return time.Since(since) > 6*time.Second
	})
	if err := ray.RequestResources(ctx, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "both removed once the request is cleared", func() bool {
		return countIn(instances(t, cl), "cpu", pb.InstanceState_INSTANCE_TERMINATED) == 2
	})
}

// BenchmarkAutoscaleInfeasibleToStart is the time from submitting a task
// no node can run to its start on a node the local provider launched for
// it (the raylet process's start and registration included). Between
// iterations, untimed, the idle node is removed again.
//
//	go test ./cmd/manta -run '^$' -bench AutoscaleInfeasibleToStart -benchtime 5x
func BenchmarkAutoscaleInfeasibleToStart(b *testing.B) {
	dir := b.TempDir()
	cfg := filepath.Join(dir, "autoscale.yaml")
	if err := os.WriteFile(cfg, []byte(autoscaleTestConfig), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: 1, DataDir: filepath.Join(dir, "cluster"), Nodes: 1,
		Autoscale: cfg, ExtraHeadArgs: []string{"--object-store-memory", "64MiB"},
		NodeArgs: func(int) []string { return []string{"--num-cpus", "1", "--object-store-memory", "64MiB"} }})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		b.Fatal(err)
	}
	defer ray.Shutdown(context.Background())
	cl, err := c.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	removed := func(n int) bool {
		st, err := cl.AutoscalerStatus(ctx)
		if err != nil {
			return false
		}
		return countIn(st.Instances, "big", pb.InstanceState_INSTANCE_TERMINATED) == n
	}
	var took []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := ray.Get(ctx, whereAmI.Remote(ctx, ray.Resources(map[string]float64{"big": 1}))); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		b.StopTimer()
		for !removed(i + 1) {
			if ctx.Err() != nil {
				b.Fatal("the idle node was not removed")
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.StartTimer()
	}
	b.StopTimer() // not the cluster's shutdown in the defers
	slices.Sort(took)
	b.Logf("infeasible task to its start on a launched node, %d runs: min %s, median %s, max %s",
		len(took), took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}
