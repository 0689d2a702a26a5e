package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
	"github.com/manta-ray/manta/sim"
)

func init() { benchSubcommands = append(benchSubcommands, newBenchWorkCommand) }

// spinWork busies its CPU for the given microseconds (wall clock) and returns
// them: the "real work" of bench work.
var spinWork = ray.Func1("manta.bench.spin", func(_ context.Context, us int) (int, error) {
	end := time.Now().Add(time.Duration(us) * time.Microsecond)
	x := 0
	for time.Now().Before(end) {
		for range 1000 {
			x++
		}
	}
	_ = x
	return us, nil
})

// workResult is what `manta bench work` measured.
type workResult struct {
	Tasks int `json:"tasks"`
	Nodes int `json:"nodes"`
	CPUs  int `json:"cpus"`
	// WorkSeconds is the tasks' summed spin; Ideal is the most of it and
	// the submission span: every CPU busy from the first task on.
	WorkSeconds   float64 `json:"work_seconds"`
	SpreadSeconds float64 `json:"spread_seconds"`
	IdealSeconds  float64 `json:"ideal_seconds"`
	TotalSeconds  float64 `json:"total_seconds"`
	TasksPerSec   float64 `json:"tasks_per_second"`
	// Efficiency is Ideal over Total.
	Efficiency    float64 `json:"efficiency"`
	DriverPeakRSS int64   `json:"driver_peak_rss_bytes"`
	LoadAvg       string  `json:"load_average"`
}

func newBenchWorkCommand() *cobra.Command {
	var (
		tasks   int
		nodes   int
		cpus    int
		minSpin time.Duration
		maxSpin time.Duration
		spread  time.Duration
		seed    uint64
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "work",
		Short: "Tasks of real (uneven CPU-spin) work submitted over time from one driver to a fresh local cluster: throughput against the ideal of its CPUs, driver RSS",
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.Flags().IntVar(&tasks, "tasks", 10_000, "tasks")
	cmd.Flags().IntVar(&nodes, "nodes", 2, "raylets of the local cluster")
	cmd.Flags().IntVar(&cpus, "num-cpus", 1, "CPUs of each raylet (this box has 2 cores)")
	cmd.Flags().DurationVar(&minSpin, "min", time.Millisecond, "shortest task")
	cmd.Flags().DurationVar(&maxSpin, "max", 20*time.Millisecond, "longest task (durations uniform between)")
	cmd.Flags().DurationVar(&spread, "spread", 0, "submit the tasks evenly over this long (default: 80% of the work over the CPUs)")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the task durations")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if tasks <= 0 || nodes <= 0 || cpus <= 0 || minSpin <= 0 || maxSpin < minSpin {
			return usageErrorf("need tasks, nodes, num-cpus > 0 and 0 < min <= max")
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		c, done, err := localClusterWith(ctx, launcher.Options{Heads: 1, Nodes: nodes,
			NodeArgs: func(int) []string { return []string{"--num-cpus", fmt.Sprint(cpus)} }}, nil)
		if err != nil {
			return err
		}
		defer done()
		r, err := userWork(ctx, c, tasks, nodes*cpus, minSpin, maxSpin, spread, seed)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "tasks=%d nodes=%d cpus=%d work=%.1fs spread=%.1fs ideal=%.1fs total=%.1fs rate=%.0f/s efficiency=%.0f%% driver_peak_rss=%dMiB load=%s\n",
			r.Tasks, r.Nodes, r.CPUs, r.WorkSeconds, r.SpreadSeconds, r.IdealSeconds, r.TotalSeconds, r.TasksPerSec, 100*r.Efficiency, r.DriverPeakRSS>>20, r.LoadAvg)
		return nil
	}
	return cmd
}

// userWork submits n spin tasks evenly over spread (in 10ms ticks), gets
// them all and checks every result.
func userWork(ctx context.Context, c *launcher.Cluster, n, cpus int, minSpin, maxSpin, spread time.Duration, seed uint64) (workResult, error) {
	r := workResult{Tasks: n, Nodes: len(c.Nodes()), CPUs: cpus}
	rng := rand.New(rand.NewPCG(seed, seed))
	us := make([]int, n)
	var work time.Duration
	for i := range us {
		d := minSpin + time.Duration(rng.Int64N(int64(maxSpin-minSpin)+1))
		us[i] = int(d / time.Microsecond)
		work += time.Duration(us[i]) * time.Microsecond
	}
	if spread == 0 {
		spread = work / time.Duration(cpus) * 4 / 5
	}
	r.WorkSeconds, r.SpreadSeconds = work.Seconds(), spread.Seconds()
	r.IdealSeconds = max(spread, work/time.Duration(cpus)).Seconds()
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		return r, err
	}
	defer ray.Shutdown(context.Background())
	refs := make([]ray.ObjectRef[int], n)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; {
		// Submit what is due by now, then wait for the next tick.
		due := min(n, int(float64(n)*time.Since(start).Seconds()/spread.Seconds())+1)
		for ; i < due; i++ {
			refs[i] = spinWork.Remote(ctx, ray.Val(us[i]))
		}
		if i < n {
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-tick.C:
			}
		}
	}
	for i, ref := range refs {
		v, err := ray.Get(ctx, ref)
		if err != nil {
			return r, fmt.Errorf("task %d: %w", i, err)
		}
		if v != us[i] {
			return r, fmt.Errorf("task %d returned %d, want %d", i, v, us[i])
		}
		ref.Release()
	}
	r.TotalSeconds = time.Since(start).Seconds()
	r.TasksPerSec = float64(n) / r.TotalSeconds
	r.Efficiency = r.IdealSeconds / r.TotalSeconds
	r.DriverPeakRSS = sim.PeakRSS(os.Getpid())
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.LoadAvg, _, _ = strings.Cut(string(b), " ")
	}
	return r, nil
}
