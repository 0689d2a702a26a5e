package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
	"github.com/manta-ray/manta/sim"
)

func init() { benchSubcommands = append(benchSubcommands, newBenchTasksCommand) }

// manyTasksResult is what `manta bench tasks` measured.
type manyTasksResult struct {
	Tasks         int     `json:"tasks"`
	Nodes         int     `json:"nodes"`
	SubmitSeconds float64 `json:"submit_seconds"`
	TotalSeconds  float64 `json:"total_seconds"`
	TasksPerSec   float64 `json:"tasks_per_second"`
	DriverPeakRSS int64   `json:"driver_peak_rss_bytes"`
	// LiveHeapPerTask is the driver's live heap after a forced GC once
	// every task is submitted, over the tasks (--live-heap only).
	LiveHeapPerTask float64 `json:"live_heap_per_task_bytes,omitempty"`
	RayletPeakRSS   []int64 `json:"raylet_peak_rss_bytes"`
}

func newBenchTasksCommand() *cobra.Command {
	var (
		tasks  int
		nodes  int
		cpus   int
		asJSON bool
		heap   string
		live   bool
	)
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "Submit N trivial tasks at once (async) from one driver to a fresh local cluster and get every result: time and peak RSS of the driver and raylets",
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.Flags().IntVar(&tasks, "tasks", 1_000_000, "tasks to submit before getting any result")
	cmd.Flags().IntVar(&nodes, "nodes", 2, "raylets of the local cluster (one head without a raylet)")
	cmd.Flags().IntVar(&cpus, "num-cpus", 2, "CPUs of each raylet")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().StringVar(&heap, "heap-profile", "", "write the driver's heap profile here once every task is submitted")
	cmd.Flags().BoolVar(&live, "live-heap", false, "once every task is submitted, force a GC and report the driver's live heap per task (the GC changes the peak RSS)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		c, done, err := localClusterWith(ctx, launcher.Options{Heads: 1, Nodes: nodes,
			NodeArgs: func(int) []string { return []string{"--num-cpus", fmt.Sprint(cpus)} }}, nil)
		if err != nil {
			return err
		}
		defer done()
		r, err := manyTasks(ctx, c, tasks, heap, live)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
		}
		var rss []string
		for _, b := range r.RayletPeakRSS {
			rss = append(rss, fmt.Sprintf("%dMiB", b>>20))
		}
		fmt.Fprintf(cmd.OutOrStdout(), "tasks=%d nodes=%d submit=%.1fs total=%.1fs rate=%.0f/s driver_peak_rss=%dMiB raylet_peak_rss=%s",
			r.Tasks, r.Nodes, r.SubmitSeconds, r.TotalSeconds, r.TasksPerSec, r.DriverPeakRSS>>20, strings.Join(rss, ","))
		if live {
			fmt.Fprintf(cmd.OutOrStdout(), " live_heap_per_task=%.0fB", r.LiveHeapPerTask)
		}
		fmt.Fprintln(cmd.OutOrStdout())
		return nil
	}
	return cmd
}

// manyTasks submits n noop tasks before getting any, then checks every
// result: a wrong or missing one is an error.
func manyTasks(ctx context.Context, c *launcher.Cluster, n int, heapProfile string, liveHeap bool) (manyTasksResult, error) {
	r := manyTasksResult{Tasks: n, Nodes: len(c.Nodes())}
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		return r, err
	}
	defer ray.Shutdown(context.Background())
	start := time.Now()
	refs := make([]ray.ObjectRef[int], n)
	for i := range refs {
		refs[i] = noop.Remote(ctx, ray.Val(i))
	}
	r.SubmitSeconds = time.Since(start).Seconds()
	if liveHeap {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		r.LiveHeapPerTask = float64(ms.HeapAlloc) / float64(n)
	}
	if heapProfile != "" {
		if err := writeHeapProfile(heapProfile); err != nil {
			return r, err
		}
	}
	// Get in slices, releasing each as it is read, as a program that
	// consumes results does.
	const chunk = 10_000
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		vs, err := ray.GetAll(ctx, refs[lo:hi])
		if err != nil {
			return r, fmt.Errorf("tasks %d-%d: %w", lo, hi-1, err)
		}
		for i, v := range vs {
			if v != lo+i {
				return r, fmt.Errorf("task %d returned %d", lo+i, v)
			}
			refs[lo+i].Release()
		}
	}
	r.TotalSeconds = time.Since(start).Seconds()
	r.TasksPerSec = float64(n) / r.TotalSeconds
	r.DriverPeakRSS = sim.PeakRSS(os.Getpid())
	for _, nd := range c.Nodes() {
		r.RayletPeakRSS = append(r.RayletPeakRSS, sim.PeakRSS(nd.PID))
	}
	return r, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.WriteHeapProfile(f)
}
