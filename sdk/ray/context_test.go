package ray_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
)

// seen is what a task saw of itself: its runtime context and its
// CUDA_VISIBLE_DEVICES (set: whether the variable exists).
type seen struct {
	Info ray.RuntimeInfo
	CUDA string
	Set  bool
}

func see(ctx context.Context) (seen, error) {
	info, err := ray.RuntimeContext(ctx)
	cuda, set := os.LookupEnv("CUDA_VISIBLE_DEVICES")
	return seen{Info: info, CUDA: cuda, Set: set}, err
}

var (
	seeTask = ray.Func0("test.SeeTask", see)
	// seeTogether waits until n tasks have arrived in dir, so that all of
	// them hold their leases at once, then says what it saw.
	seeTogether = ray.Func2("test.SeeTogether", func(ctx context.Context, dir string, n int) (seen, error) {
		f, err := os.CreateTemp(dir, "here-")
		if err != nil {
			return seen{}, err
		}
		f.Close()
		deadline := time.Now().Add(60 * time.Second)
		for {
			es, err := os.ReadDir(dir)
			if err != nil {
				return seen{}, err
			}
			if len(es) >= n || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
		}
		return see(ctx)
	})

	// seeRetried kills its worker on the first attempt; the retry says
	// what it saw.
	seeRetried = ray.Func0("test.SeeRetried", func(ctx context.Context) (seen, error) {
		if info, err := ray.RuntimeContext(ctx); err == nil && info.Attempt == 0 {
			os.Exit(3)
		}
		return see(ctx)
	})

	Seer    = ray.Actor0("test.Seer", func(context.Context) (*seer, error) { return &seer{}, nil })
	seerSee = ray.Method0(Seer, "See", (*seer).See)
)

type seer struct{}

func (*seer) See(ctx context.Context) (seen, error) { return see(ctx) }

func TestRuntimeContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 3, "GPU": 4})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	driver, err := ray.RuntimeContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !driver.IsDriver || driver.JobID == "" || driver.TaskID != "" || driver.NodeID != "node-1" || driver.WorkerID != "" || driver.ActorID != "" {
		t.Fatalf("driver's context = %+v; want a driver of a job on node-1 with no task", driver)
	}

	t.Run("task", func(t *testing.T) {
		s, err := ray.Get(ctx, seeTask.Remote(ctx, ray.NumCPUs(1)))
		if err != nil {
			t.Fatal(err)
		}
		i := s.Info
		if i.IsDriver || i.JobID != driver.JobID || i.TaskID == "" || i.NodeID != "node-1" || i.WorkerID == "" || i.ActorID != "" || i.Attempt != 0 {
			t.Fatalf("task's context = %+v", i)
		}
		if i.Resources["CPU"] != 1 || len(i.GPUIDs) != 0 {
			t.Fatalf("task's resources = %v, GPUs %v; want CPU=1 and no GPU", i.Resources, i.GPUIDs)
		}
		// Two calls are two tasks.
		s2, err := ray.Get(ctx, seeTask.Remote(ctx))
		if err != nil || s2.Info.TaskID == i.TaskID {
			t.Fatalf("second task's ID %q (err %v); the first was %q", s2.Info.TaskID, err, i.TaskID)
		}
	})

	t.Run("a retried task's attempt", func(t *testing.T) {
		s, err := ray.Get(ctx, seeRetried.Remote(ctx, ray.MaxRetries(1)))
		if err != nil || s.Info.Attempt != 1 {
			t.Fatalf("the retry saw attempt %d (err %v); want 1", s.Info.Attempt, err)
		}
	})

	t.Run("two GPU tasks get disjoint GPUs", func(t *testing.T) {
		twoGPUTasks(t, ctx)
		// The GPUs came back with the leases: a 4-GPU task fits.
		s, err := ray.Get(ctx, seeTask.Remote(ctx, ray.NumCPUs(1), ray.NumGPUs(4)))
		if err != nil || s.CUDA != "0,1,2,3" {
			t.Fatalf("a 4-GPU task saw CUDA_VISIBLE_DEVICES=%q (err %v); want 0,1,2,3", s.CUDA, err)
		}
		// Tasks without GPUs, on workers that may have run the GPU tasks,
		// see none.
		for range 4 {
			s, err := ray.Get(ctx, seeTask.Remote(ctx, ray.NumCPUs(1)))
			if err != nil || s.CUDA != "" || len(s.Info.GPUIDs) != 0 {
				t.Fatalf("a task without GPUs saw CUDA_VISIBLE_DEVICES=%q, GPUs %v (err %v)", s.CUDA, s.Info.GPUIDs, err)
			}
		}
	})

	t.Run("actor", func(t *testing.T) {
		h, err := Seer.Remote(ctx, ray.NumCPUs(1), ray.NumGPUs(1))
		if err != nil {
			t.Fatal(err)
		}
		defer ray.Kill(ctx, h, true)
		s, err := ray.Get(ctx, seerSee.Remote(ctx, h))
		if err != nil {
			t.Fatal(err)
		}
		i := s.Info
		if i.ActorID == "" || i.ActorID != h.ID() || i.TaskID == "" || i.IsDriver || i.NodeID != "node-1" || i.JobID != driver.JobID {
			t.Fatalf("actor method's context = %+v (actor %s)", i, h.ID())
		}
		if len(i.GPUIDs) != 1 || i.Resources["GPU"] != 1 || s.CUDA != gpuList(i.GPUIDs) {
			t.Fatalf("actor with 1 GPU: GPUs %v, resources %v, CUDA_VISIBLE_DEVICES %q", i.GPUIDs, i.Resources, s.CUDA)
		}
	})
}

// twoGPUTasks runs two tasks of 2 GPUs each that hold their leases at
// the same time, on a node of 4 GPUs, and checks that they got disjoint
// indices, each seeing its own in CUDA_VISIBLE_DEVICES and its context.
func twoGPUTasks(t *testing.T, ctx context.Context) {
	t.Helper()
	dir := t.TempDir()
	a := seeTogether.Remote(ctx, ray.Val(dir), ray.Val(2), ray.NumCPUs(1), ray.NumGPUs(2))
	b := seeTogether.Remote(ctx, ray.Val(dir), ray.Val(2), ray.NumCPUs(1), ray.NumGPUs(2))
	var all []int
	for _, ref := range []ray.ObjectRef[seen]{a, b} {
		s, err := ray.Get(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Info.GPUIDs) != 2 || s.Info.Resources["GPU"] != 2 {
			t.Fatalf("a 2-GPU task's context: GPUs %v, resources %v", s.Info.GPUIDs, s.Info.Resources)
		}
		if want := gpuList(s.Info.GPUIDs); !s.Set || s.CUDA != want {
			t.Fatalf("CUDA_VISIBLE_DEVICES = %q (set %v); the context says %q", s.CUDA, s.Set, want)
		}
		all = append(all, s.Info.GPUIDs...)
	}
	slices.Sort(all)
	if !slices.Equal(all, []int{0, 1, 2, 3}) {
		t.Fatalf("the two tasks' GPUs together = %v; want 0..3 each once", all)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("%d tasks met in %s; want both (they did not hold their GPUs at once)", len(entries), filepath.Base(dir))
	}
}

// TestGPUsOfAStartedRaylet: a raylet process started with `--num-gpus 4`
// (fake GPUs) hands out disjoint indices.
func TestGPUsOfAStartedRaylet(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 1, Nodes: 1, DataDir: t.TempDir(),
		NodeArgs: func(int) []string { return []string{"--num-cpus", "2", "--num-gpus", "4"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	twoGPUTasks(t, ctx)
}

func gpuList(gpus []int) string {
	s := ""
	for i, g := range gpus {
		if i > 0 {
			s += ","
		}
		s += string(rune('0' + g))
	}
	return s
}

func TestNodesAndClusterResources(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 1})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	addr, err := ray.AddEmbeddedNode(map[string]float64{"CPU": 2, "custom": 3})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"CPU": 3, "custom": 3}
	var nodes []ray.NodeInfo
	waitFor(t, 30*time.Second, func() error {
		nodes, err = ray.Nodes(ctx)
		if err != nil || len(nodes) != 2 || !nodes[0].Alive || !nodes[1].Alive {
			return fmt.Errorf("nodes %+v, %v; want 2 alive", nodes, err)
		}
		avail, err := ray.AvailableResources(ctx)
		if err != nil || avail["CPU"] != want["CPU"] || avail["custom"] != want["custom"] {
			return fmt.Errorf("available %v, %v; want %v", avail, err, want)
		}
		return nil
	})
	if nodes[0].ID != "node-1" || nodes[1].ID != "node-2" || nodes[1].Address != addr ||
		nodes[1].Resources["custom"] != 3 || nodes[0].Resources["CPU"] != 1 {
		t.Fatalf("nodes = %+v", nodes)
	}
	total, err := ray.ClusterResources(ctx)
	if err != nil || total["CPU"] != 3 || total["custom"] != 3 {
		t.Fatalf("ClusterResources = %v, %v; want %v", total, err, want)
	}
}
