package data_test

import (
	"context"
	"fmt"
	"os"
	"strings"
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
	opts := []ray.InitOption{ray.NodeResources(map[string]float64{"CPU": 2}), ray.LogToDriver(false)}
	if spec := os.Getenv(envClusterDriver); spec != "" {
		// A child driver of a cluster test: join the test's cluster.
		heads, token, _ := strings.Cut(spec, "|")
		opts = []ray.InitOption{ray.Address(heads), ray.Token(token), ray.LogToDriver(false)}
	}
	if err := ray.Init(ctx, opts...); err != nil {
		fmt.Fprintln(os.Stderr, "init:", err)
		os.Exit(1)
	}
	cancel()
	code := m.Run()
	_ = ray.Shutdown(context.Background())
	os.Exit(code)
}
