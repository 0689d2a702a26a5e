package sim

import (
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
)

// BenchmarkFleet500 runs 500 simulated nodes against 3 in-process heads
// for 10s, for CPU profiles of heads and clients together:
// go test -run NONE -bench Fleet500 -cpuprofile cpu.out ./sim
func BenchmarkFleet500(b *testing.B) {
	c := tc.Start(b, 3, func(_ int, cfg *head.Config) { cfg.NodeTimeout = 10 * time.Second })
	for b.Loop() {
		f, err := Start(tc.Ctx(b, time.Minute), Options{Addresses: c.Addresses(), Token: c.Token(), Nodes: 500})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Second) // the measured steady state (a benchmark, not a test)
		if p := os.Getenv("SIM_GOROUTINES"); p != "" {
			if w, err := os.Create(p); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(w, 1)
				w.Close()
			}
		}
		s := f.Collect()
		f.Close()
		b.ReportMetric(float64(s.HeartbeatP99.Microseconds()), "hb-p99-µs")
		b.Log(s)
	}
}

// BenchmarkActors places 3,000 actors on 300 simulated nodes of 3
// in-process heads, for CPU profiles of the placement path:
// go test -run NONE -bench Actors -cpuprofile cpu.out ./sim
func BenchmarkActors(b *testing.B) {
	const nodes, actors = 300, 3000
	for b.Loop() {
		c := tc.Start(b, 3, func(_ int, cfg *head.Config) { cfg.NodeTimeout = 10 * time.Second })
		ctx := tc.Ctx(b, 5*time.Minute)
		f, err := Start(ctx, Options{Addresses: c.Addresses(), Token: c.Token(), Nodes: nodes, Actors: true,
			Resources: map[string]float64{"CPU": 13}})
		if err != nil {
			b.Fatal(err)
		}
		cl := c.Client()
		t0 := time.Now()
		if _, err := CreateActors(ctx, cl, actors, ActorSpec{JobID: "bench"}); err != nil {
			b.Fatal(err)
		}
		if _, err := WaitActorsAlive(ctx, cl, "bench", actors, 50*time.Millisecond); err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0)
		b.ReportMetric(float64(actors)/el.Seconds(), "actors/s")
		b.Log(f.ActorCounters())
		f.Close()
		c.Close()
	}
}
