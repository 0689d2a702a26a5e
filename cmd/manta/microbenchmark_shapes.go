package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// The shapes of a user's program, beside the microbenchmarks' tight loops
// of trivial tasks: real work per task, uneven durations, submissions
// spread over time, small tasks behind a long one, and cancels. Their
// efficiency is the ideal time (the work spread perfectly over the
// cluster's CPUs) over the elapsed time.

// benchCPUs is how many CPUs the cluster has (--cpus; default this
// machine's, which the embedded cluster has).
var benchCPUs = runtime.NumCPU()

var (
	benchSleep = ray.Func1("manta.microbenchmark.sleep", func(_ context.Context, ms int) (int, error) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ms, nil
	})
	benchSpin = ray.Func1("manta.microbenchmark.spin", func(_ context.Context, ms int) (int, error) {
		spin(ms)
		return ms, nil
	})
	// benchWaitCtx marks dir/name when it starts, then waits for its
	// context (a cancel) or a minute.
	benchWaitCtx = ray.Func2("manta.microbenchmark.waitctx", func(ctx context.Context, dir, name string) (int, error) {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Minute):
			return 1, nil
		}
	})
)

func init() {
	microbenchmarks = append(microbenchmarks,
		microbenchmark{"parallel_sleep_burst_efficiency", func(ctx context.Context, _ time.Duration) (float64, error) {
			return efficiency(ctx, benchSleep, durations(4*benchCPUs, 250, 250), 0)
		}},
		microbenchmark{"parallel_sleep_loop_efficiency", func(ctx context.Context, _ time.Duration) (float64, error) {
			return efficiency(ctx, benchSleep, durations(4*benchCPUs, 250, 250), 2*time.Millisecond)
		}},
		microbenchmark{"parallel_spin_burst_efficiency", func(ctx context.Context, _ time.Duration) (float64, error) {
			return efficiency(ctx, benchSpin, durations(4*benchCPUs, 250, 250), 0)
		}},
		microbenchmark{"parallel_spin_loop_efficiency", func(ctx context.Context, _ time.Duration) (float64, error) {
			return efficiency(ctx, benchSpin, durations(4*benchCPUs, 250, 250), 2*time.Millisecond)
		}},
		microbenchmark{"uneven_tasks_spread_efficiency", func(ctx context.Context, _ time.Duration) (float64, error) {
			// 10-490 ms of sleep each, submitted every 20 ms.
			return efficiency(ctx, benchSleep, durations(8*benchCPUs, 10, 490), 20*time.Millisecond)
		}},
		microbenchmark{"uneven_spin_tasks_spread_efficiency", func(ctx context.Context, _ time.Duration) (float64, error) {
			// 10-490 ms of CPU each, submitted every 20 ms.
			return efficiency(ctx, benchSpin, durations(8*benchCPUs, 10, 490), 20*time.Millisecond)
		}},
		microbenchmark{"uneven_spin_tasks_refs_in_values_efficiency", func(ctx context.Context, _ time.Duration) (float64, error) {
			// As uneven_spin_tasks_spread_efficiency, but each task is given
			// a struct holding the ref of a 1 MiB Put made for it, and reads
			// it: the borrower protocol on a user's shape. (CPU work: a task
			// blocked in Get lends its CPU, which lets sleeping tasks
			// overlap and read above 1.)
			return refsInValuesEfficiency(ctx, durations(8*benchCPUs, 10, 490), 20*time.Millisecond)
		}},
		microbenchmark{"small_tasks_behind_long_seconds", smallBehindLong},
		microbenchmark{"cancel_queued_p50_us", func(ctx context.Context, _ time.Duration) (float64, error) {
			return cancelLatency(ctx, false)
		}},
		microbenchmark{"cancel_running_p50_us", func(ctx context.Context, _ time.Duration) (float64, error) {
			return cancelLatency(ctx, true)
		}},
	)
}

// spin keeps a CPU busy for ms milliseconds.
func spin(ms int) {
	end := time.Now().Add(time.Duration(ms) * time.Millisecond)
	x := 0
	for time.Now().Before(end) {
		for i := range 10000 {
			x += i
		}
	}
	_ = x
}

// shard is a task's input: its length of work and the ref of its data.
type shard struct {
	Ms   int
	Data ray.ObjectRef[[]byte]
}

// benchShard reads its shard's data and spins its length of work.
var benchShard = ray.Func1("manta.microbenchmark.shard", func(ctx context.Context, s shard) (int, error) {
	b, err := ray.Get(ctx, s.Data)
	spin(s.Ms)
	if err != nil {
		return 0, err
	}
	return len(b), nil
})

// refsInValuesEfficiency is efficiency's measure for benchShard tasks.
func refsInValuesEfficiency(ctx context.Context, ms []int, gap time.Duration) (float64, error) {
	data := make([]byte, 1<<20)
	start := time.Now()
	refs := make([]ray.ObjectRef[int], len(ms))
	total := 0
	for i, d := range ms {
		data[0] = byte(i)
		ref, err := ray.Put(ctx, data)
		if err != nil {
			return 0, err
		}
		refs[i] = benchShard.Remote(ctx, ray.Val(shard{Ms: d, Data: ref}))
		ref.Release() // the task's argument holds it
		total += d
		time.Sleep(gap)
	}
	if _, err := ray.GetAll(ctx, refs); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	ideal := max(time.Duration(total)*time.Millisecond/time.Duration(benchCPUs), time.Duration(slices.Max(ms))*time.Millisecond,
		time.Duration(len(ms)-1)*gap+time.Duration(ms[len(ms)-1])*time.Millisecond)
	return ideal.Seconds() / elapsed.Seconds(), nil
}

// durations are n task lengths in [lo, hi] ms, the same every run.
func durations(n, lo, hi int) []int {
	r := rand.New(rand.NewPCG(1, 2))
	ds := make([]int, n)
	for i := range ds {
		ds[i] = lo + r.IntN(hi-lo+1)
	}
	return ds
}

// efficiency runs one task per duration (gap between submissions) and
// returns the ideal time over the elapsed time. The ideal is the total
// work over the CPUs, but never less than the longest task or the
// submission loop itself.
func efficiency(ctx context.Context, f ray.RemoteFunc1[int, int], ms []int, gap time.Duration) (float64, error) {
	start := time.Now()
	refs := make([]ray.ObjectRef[int], len(ms))
	total := 0
	for i, d := range ms {
		refs[i] = f.Remote(ctx, ray.Val(d))
		total += d
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	if _, err := ray.GetAll(ctx, refs); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	ideal := time.Duration(total) * time.Millisecond / time.Duration(benchCPUs)
	if len(ms)%benchCPUs == 0 && slices.Min(ms) == slices.Max(ms) {
		ideal = time.Duration(len(ms)/benchCPUs*ms[0]) * time.Millisecond // whole rounds
	}
	last := time.Duration(len(ms)-1)*gap + time.Duration(ms[len(ms)-1])*time.Millisecond
	ideal = max(ideal, time.Duration(slices.Max(ms))*time.Millisecond, last)
	return ideal.Seconds() / elapsed.Seconds(), nil
}

// smallBehindLong starts a 5 s task, then times 1,000 trivial tasks of the
// same shape.
func smallBehindLong(ctx context.Context, _ time.Duration) (float64, error) {
	long := benchSleep.Remote(ctx, ray.Val(5000))
	if _, _, err := ray.Wait(ctx, []ray.ObjectRef[int]{long}, 1, 50*time.Millisecond); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := asyncBatch(ctx, 1000); err != nil {
		return 0, err
	}
	took := time.Since(start)
	if _, err := ray.Get(ctx, long); err != nil {
		return 0, err
	}
	return took.Seconds(), nil
}

// cancelLatency is the median time from Cancel to Get returning
// ErrTaskCancelled over 100 tasks: queued ones (a shape no node has, so
// they wait in the owner), or running ones (seen started).
func cancelLatency(ctx context.Context, running bool) (float64, error) {
	dir, err := os.MkdirTemp("", "manta-bench-cancel-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	var lat []time.Duration
	for i := range 100 {
		name := strconv.Itoa(i)
		var ref ray.ObjectRef[int]
		if running {
			ref = benchWaitCtx.Remote(ctx, ray.Val(dir), ray.Val(name))
			for {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					break
				}
				if ctx.Err() != nil {
					return 0, ctx.Err()
				}
				time.Sleep(time.Millisecond)
			}
		} else {
			ref = benchWaitCtx.Remote(ctx, ray.Val(dir), ray.Val(name), ray.Resources(map[string]float64{"manta_bench_no_node": 1}))
		}
		start := time.Now()
		if err := ray.Cancel(ctx, ref); err != nil {
			return 0, err
		}
		if _, err := ray.Get(ctx, ref); !errors.Is(err, ray.ErrTaskCancelled) {
			return 0, fmt.Errorf("a cancelled task's Get: %v", err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return float64(lat[len(lat)/2].Nanoseconds()) / 1000, nil
}
