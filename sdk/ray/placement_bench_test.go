package ray_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
)

// benchCluster starts 1 head and 3 raylets (separate processes, 4 CPUs
// each) and joins it as the driver.
func benchCluster(b *testing.B) {
	b.Helper()
	ctx := context.Background()
	bin := filepath.Join(b.TempDir(), "manta")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/manta-ray/manta/cmd/manta").CombinedOutput(); err != nil {
		b.Fatalf("build manta: %v\n%s", err, out)
	}
	c, err := launcher.Start(ctx, launcher.Options{Binary: bin, Heads: 1, Nodes: 3, DataDir: b.TempDir(),
		NodeArgs: func(int) []string { return []string{"--num-cpus", "4"} }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ray.Shutdown(context.Background()) })
}

// BenchmarkPlacementGroup measures, on an idle cluster of 3 nodes, the
// time from NewPlacementGroup to Ready of a 3-bundle group (ready_ms),
// and how many groups are created, made ready and removed per second by
// 16 concurrent clients (groups/s).
func BenchmarkPlacementGroup(b *testing.B) {
	benchCluster(b)
	ctx := context.Background()
	bundles := []ray.Bundle{{"CPU": 0.01}, {"CPU": 0.01}, {"CPU": 0.01}}
	b.Run("ready-latency", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			start := time.Now()
			pg, err := ray.NewPlacementGroup(ctx, bundles, ray.SpreadPG)
			if err != nil {
				b.Fatal(err)
			}
			if err := pg.Ready(ctx); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			b.StopTimer()
			if err := pg.Remove(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ready_ms")
	})
	b.Run("create-remove", func(b *testing.B) {
		start := time.Now()
		b.SetParallelism(8) // 16 clients on 2 CPUs
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				pg, err := ray.NewPlacementGroup(ctx, bundles, ray.Pack)
				if err != nil {
					b.Error(err)
					return
				}
				if err := pg.Ready(ctx); err != nil {
					b.Error(err)
					return
				}
				if err := pg.Remove(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "groups/s")
	})
}
