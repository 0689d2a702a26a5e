package main

import (
	"context"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/ray"
)

// The demo's remote functions; the manta binary is their worker.
var (
	demoSquare = ray.Func1("manta.demo.square", func(_ context.Context, x int) (demoResult, error) {
		time.Sleep(20 * time.Millisecond) // long enough that one node's CPUs do not suffice
		return demoResult{Value: x * x, Node: os.Getenv(workerpool.EnvNodeID), PID: os.Getpid()}, nil
	})
	demoSum = ray.Func1("manta.demo.sum", func(_ context.Context, xs []int) (int, error) {
		s := 0
		for _, x := range xs {
			s += x
		}
		return s, nil
	})
)

type demoResult struct {
	Value int
	Node  string
	PID   int
}

const demoTasks = 200

// fanOut runs demoTasks tasks over the raylets (safe to run beside the
// demo's other steps: it prints nothing).
func fanOut(ctx context.Context) fanOutResult {
	t0 := time.Now()
	refs := make([]ray.ObjectRef[demoResult], demoTasks)
	for i := range refs {
		refs[i] = demoSquare.Remote(ctx, ray.Val(i))
	}
	rs, err := ray.GetAll(ctx, refs)
	return fanOutResult{rs, err, time.Since(t0)}
}

type fanOutResult struct {
	rs   []demoResult
	err  error
	took time.Duration
}

// runTasks fans tasks out, then in through one more task, and prints what
// ran where.
func (d *demo) runTasks(ctx context.Context, c *launcher.Cluster, what string) {
	d.reportTasks(ctx, c, what, fanOut(ctx))
}

func (d *demo) reportTasks(ctx context.Context, c *launcher.Cluster, what string, f fanOutResult) {
	rs, err := f.rs, f.err
	if !d.check(err == nil, "%s: %d tasks finished in %s", what, demoTasks, f.took.Round(time.Millisecond)) {
		d.note("error: %v", err)
		return
	}
	perNode := map[string]int{}
	workers := map[string]map[int]bool{}
	vals := make([]int, len(rs))
	want := 0
	for i, r := range rs {
		vals[i] = r.Value
		want += i * i
		perNode[r.Node]++
		if workers[r.Node] == nil {
			workers[r.Node] = map[int]bool{}
		}
		workers[r.Node][r.PID] = true
	}
	var nodes []string
	for n := range perNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		d.note("%s ran %d tasks in %d worker processes", n, perNode[n], len(workers[n]))
	}
	d.check(len(nodes) == len(c.Nodes()), "tasks ran on %d of %d raylets (%s)", len(nodes), len(c.Nodes()), strings.Join(nodes, ", "))
	sum, err := ray.Get(ctx, demoSum.Remote(ctx, ray.Val(vals)))
	d.check(err == nil && sum == want, "fan-in task: sum of squares 0..%d = %d (want %d)", demoTasks-1, sum, want)
}

func (d *demo) initDriver(ctx context.Context, c *launcher.Cluster) error {
	return ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()))
}
