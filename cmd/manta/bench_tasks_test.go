package main

import (
	"context"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
)

// TestHundredThousandTasks submits 100,000 trivial tasks at once from one
// driver (this test) to a cluster of one head and two raylets, and checks
// every result (manyTasks fails on a wrong or missing one). `manta bench
// tasks` runs the million and measures it.
func TestHundredThousandTasks(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: 1, Nodes: 2, DataDir: t.TempDir(),
		NodeArgs: func(int) []string { return []string{"--num-cpus", "2"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r, err := manyTasks(ctx, c, 100_000, "", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
}
