package ray_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/ray"
)

// span is where and when a task ran.
type span struct {
	PID        int
	Node       string
	Start, End int64 // unix nanos
}

var (
	// sleepSpan sleeps ms milliseconds (I/O-like work).
	sleepSpan = ray.Func1("test.SleepSpan", func(_ context.Context, ms int) (span, error) {
		s := span{PID: os.Getpid(), Node: os.Getenv(workerpool.EnvNodeID), Start: time.Now().UnixNano()}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		s.End = time.Now().UnixNano()
		return s, nil
	})
	// spinSpan keeps a CPU busy for ms milliseconds.
	spinSpan = ray.Func1("test.SpinSpan", func(_ context.Context, ms int) (span, error) {
		s := span{PID: os.Getpid(), Node: os.Getenv(workerpool.EnvNodeID), Start: time.Now().UnixNano()}
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		x := 0
		for time.Now().Before(end) {
			for i := range 10000 {
				x += i
			}
		}
		s.End = time.Now().UnixNano()
		_ = x
		return s, nil
	})
	trivial = ray.Func1("test.Trivial", func(_ context.Context, x int) (int, error) { return x + 1, nil })
)

// maxOverlap is the most spans that ran at one moment.
func maxOverlap(spans []span) int {
	type ev struct {
		t     int64
		delta int
	}
	var evs []ev
	for _, s := range spans {
		evs = append(evs, ev{s.Start, 1}, ev{s.End, -1})
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].t != evs[j].t {
			return evs[i].t < evs[j].t
		}
		return evs[i].delta < evs[j].delta // an end before a start at the same instant
	})
	n, best := 0, 0
	for _, e := range evs {
		n += e.delta
		best = max(best, n)
	}
	return best
}

// runShape submits n tasks of ms each (gap between submissions, 0 for a
// burst) and returns their spans and the elapsed time.
func runShape(ctx context.Context, t *testing.T, f ray.RemoteFunc1[int, span], n, ms int, gap time.Duration) ([]span, time.Duration) {
	t.Helper()
	start := time.Now()
	refs := make([]ray.ObjectRef[span], n)
	for i := range n {
		refs[i] = f.Remote(ctx, ray.Val(ms))
		if gap > 0 {
			time.Sleep(gap) // the shape of a user's loop, not synchronisation
		}
	}
	spans, err := ray.GetAll(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	return spans, time.Since(start)
}

// checkSpread asserts that the tasks ran in parallel on every CPU of every
// node: at some moment all cpus ran, each node used more than one worker
// process. It logs the parallel efficiency (timings are for the note, not
// asserted).
func checkSpread(t *testing.T, name string, spans []span, elapsed time.Duration, cpus, nodes, ms int) {
	t.Helper()
	pids := map[string]map[int]bool{}
	for _, s := range spans {
		if pids[s.Node] == nil {
			pids[s.Node] = map[int]bool{}
		}
		pids[s.Node][s.PID] = true
	}
	ideal := time.Duration((len(spans)+cpus-1)/cpus*ms) * time.Millisecond
	t.Logf("%s: %d tasks of %d ms on %d CPUs: %v (ideal %v, efficiency %.2f), peak %d at once, workers per node %v",
		name, len(spans), ms, cpus, elapsed.Round(time.Millisecond), ideal, float64(ideal)/float64(elapsed), maxOverlap(spans), counts(pids))
	if testing.Verbose() {
		sorted := append([]span(nil), spans...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
		for _, s := range sorted {
			t.Logf("  %s pid %d: %d..%d ms", s.Node, s.PID, (s.Start-sorted[0].Start)/1e6, (s.End-sorted[0].Start)/1e6)
		}
	}
	if got := maxOverlap(spans); got < cpus {
		t.Errorf("%s: at most %d tasks ran at once; want all %d CPUs busy", name, got, cpus)
	}
	if len(pids) != nodes {
		t.Errorf("%s: tasks ran on %d nodes; want %d", name, len(pids), nodes)
	}
	for node, p := range pids {
		if len(p) < 2 {
			t.Errorf("%s: node %s ran every task in one worker process", name, node)
		}
	}
}

func counts(m map[string]map[int]bool) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

// TestParallelTasks is the user's shape of work: tasks that take real time,
// in bursts and in loops, on one node and on two: every CPU is used.
func TestParallelTasks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	const ms = 250

	t.Run("one node", func(t *testing.T) {
		spans, d := runShape(ctx, t, sleepSpan, 8, ms, 0)
		checkSpread(t, "sleep burst", spans, d, 2, 1, ms)
		spans, d = runShape(ctx, t, sleepSpan, 8, ms, 2*time.Millisecond)
		checkSpread(t, "sleep loop", spans, d, 2, 1, ms)
		spans, d = runShape(ctx, t, spinSpan, 8, ms, 0)
		checkSpread(t, "spin burst", spans, d, 2, 1, ms)
		spans, d = runShape(ctx, t, spinSpan, 8, ms, 2*time.Millisecond)
		checkSpread(t, "spin loop", spans, d, 2, 1, ms)
	})

	t.Run("small tasks behind a long one", func(t *testing.T) {
		long := sleepSpan.Remote(ctx, ray.Val(5000))
		// Let the long one take its worker first.
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[span]{long}, 1, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		// The node shows what runs: a lease of this driver's.
		addr, token := ray.EmbeddedRaylet()
		st, err := raylet.Status(ctx, addr, token)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Leases) == 0 || st.Leases[0].OwnerAddress == "" || st.Leases[0].JobId == "" || st.Leases[0].WorkerPid == 0 {
			t.Fatalf("raylet status lists leases %v; want the long task's", st.Leases)
		}
		// And the driver says what its tasks wait for.
		own, err := raylet.OwnerStatus(ctx, ray.OwnerAddress(), token)
		if err != nil || len(own.Shapes) == 0 || own.Shapes[0].Pushed < 1 || own.Shapes[0].Leases < 1 {
			t.Fatalf("the driver's status %v (%v); want the long task pushed on a lease", own, err)
		}
		start := time.Now()
		refs := make([]ray.ObjectRef[int], 1000)
		for i := range refs {
			refs[i] = trivial.Remote(ctx, ray.Val(i))
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		for i, v := range vs {
			if v != i+1 {
				t.Fatalf("trivial(%d) = %d", i, v)
			}
		}
		// Behaviour, not speed: every small task finished while the long
		// one still ran, so none waited behind it.
		ready, _, err := ray.Wait(ctx, []ray.ObjectRef[span]{long}, 1, time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(ready) != 0 {
			t.Errorf("the 5 s task finished before the 1,000 small ones (%v)", d)
		}
		t.Logf("1,000 small tasks behind a 5 s task: %v", d.Round(time.Millisecond))
		if _, err := ray.Get(ctx, long); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("two nodes", func(t *testing.T) {
		if _, err := ray.AddEmbeddedNode(map[string]float64{"CPU": 2}); err != nil {
			t.Fatal(err)
		}
		// The second node's raylet joins the first one's view, and each
		// node starts its two workers (cold starts are not what this
		// measures).
		waitFor(t, 30*time.Second, func() error {
			spans, _ := runShape(ctx, t, sleepSpan, 4, 100, 0)
			pids := map[string]map[int]bool{"node-1": {}, "node-2": {}}
			for _, s := range spans {
				pids[s.Node][s.PID] = true
			}
			if len(pids["node-1"]) < 2 || len(pids["node-2"]) < 2 {
				return fmt.Errorf("workers per node %v", counts(pids))
			}
			return nil
		})
		spans, d := runShape(ctx, t, sleepSpan, 16, ms, 0)
		checkSpread(t, "sleep burst", spans, d, 4, 2, ms)
		spans, d = runShape(ctx, t, sleepSpan, 16, ms, 2*time.Millisecond)
		checkSpread(t, "sleep loop", spans, d, 4, 2, ms)
	})
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
