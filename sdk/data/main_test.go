package data_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// TestMain lets the test binary serve as its own workers, and starts one
// embedded two-CPU cluster that the tests of the package share.
func TestMain(m *testing.M) {
	if ray.IsWorker() {
		ray.Main(func(context.Context) error { return nil })
	}
	os.Setenv("MANTA_CLUSTER_FILE", "off")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2}), ray.LogToDriver(false)); err != nil {
		fmt.Fprintln(os.Stderr, "init:", err)
		os.Exit(1)
	}
	cancel()
	code := m.Run()
	_ = ray.Shutdown(context.Background())
	os.Exit(code)
}
