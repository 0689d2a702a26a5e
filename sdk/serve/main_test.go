package serve_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
	"github.com/manta-ray/manta/sdk/serve"
)

// envChild makes this test binary a child driver of a cluster test: the
// child starts its own multi-process cluster (the runtime is one per
// process, and the parent's serves the embedded cluster).
const envChild = "MANTA_SERVE_TEST_CHILD"

func TestMain(m *testing.M) {
	if ray.IsWorker() {
		ray.Main(func(context.Context) error { return nil })
	}
	os.Setenv("MANTA_CLUSTER_FILE", "off")
	if os.Getenv(envChild) != "" {
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 4}), ray.LogToDriver(false)); err != nil {
		fmt.Fprintln(os.Stderr, "init:", err)
		os.Exit(1)
	}
	cancel()
	code := m.Run()
	_ = ray.Shutdown(context.Background())
	os.Exit(code)
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// proxyURL waits for a proxy with an address and returns its base URL.
func proxyURL(t *testing.T, ctx context.Context) string {
	t.Helper()
	for {
		st, err := serve.Status(ctx)
		if err == nil {
			for _, p := range st.Proxies {
				if p.Address != "" {
					return "http://" + p.Address
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no proxy address: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// proxyURLs waits for n proxies with addresses.
func proxyURLs(t *testing.T, ctx context.Context, n int) []string {
	t.Helper()
	for {
		st, err := serve.Status(ctx)
		var out []string
		if err == nil {
			for _, p := range st.Proxies {
				if p.Address != "" && p.ActorState == "ALIVE" {
					out = append(out, "http://"+p.Address)
				}
			}
		}
		if len(out) >= n {
			return out
		}
		select {
		case <-ctx.Done():
			t.Fatalf("want %d proxies, have %v (%v)", n, out, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deployment(st *serve.StatusInfo, app, dep string) *serve.DeploymentStatus {
	for _, a := range st.Apps {
		if a.Name == app {
			for i := range a.Deployments {
				if a.Deployments[i].Name == dep {
					return &a.Deployments[i]
				}
			}
		}
	}
	return nil
}

func running(d *serve.DeploymentStatus) (n int, versions map[string]int) {
	versions = map[string]int{}
	if d == nil {
		return 0, versions
	}
	for _, r := range d.Replicas {
		if r.State == "RUNNING" && r.ActorState == "ALIVE" {
			n++
			versions[r.Version]++
		}
	}
	return n, versions
}

// runningIDs lists the RUNNING, ALIVE replicas' IDs.
func runningIDs(d *serve.DeploymentStatus) string {
	var ids []string
	if d != nil {
		for _, r := range d.Replicas {
			if r.State == "RUNNING" && r.ActorState == "ALIVE" {
				ids = append(ids, r.ID)
			}
		}
	}
	return strings.Join(ids, ",")
}
