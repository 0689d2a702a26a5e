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
