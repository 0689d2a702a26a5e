package serve_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
	"github.com/manta-ray/manta/sdk/serve"
)

// inChild runs the calling test in a child process of this test binary
// (which then starts and joins its own multi-process cluster) and reports
// false in the parent, which only waits for it.
func inChild(t *testing.T, within time.Duration) bool {
	if os.Getenv(envChild) != "" {
		return true
	}
	if testing.Short() {
		t.Skip("multi-process cluster test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envChild+"=1")
	out, err := cmd.CombinedOutput() // the context kills it by PID on timeout
	if err != nil {
		t.Fatalf("child: %v\n%s", err, tail(string(out), 20000))
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "cluster_test.go") {
			t.Log(strings.TrimSpace(l))
		}
	}
	return false
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// startCluster starts heads heads and two raylets of 4 CPUs as separate
// processes and joins them as the driver.
func startCluster(t *testing.T, ctx context.Context, heads int) *launcher.Cluster {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manta")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/manta-ray/manta/cmd/manta").CombinedOutput(); err != nil {
		t.Fatalf("build manta: %v\n%s", err, out)
	}
	c, err := launcher.Start(ctx, launcher.Options{Binary: bin, Heads: heads, Nodes: 2, DataDir: t.TempDir(),
		NodeArgs: func(int) []string { return []string{"--num-cpus", "4"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()), ray.LogToDriver(false)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ray.Shutdown(context.Background()) })
	return c
}

// attack sends rate requests a second for d to the targets (round robin)
// and returns the results.
func attack(targets []vegeta.Target, rate int, d time.Duration) []*vegeta.Result {
	atk := vegeta.NewAttacker(vegeta.Timeout(20*time.Second), vegeta.KeepAlive(true))
	var out []*vegeta.Result
	for r := range atk.Attack(vegeta.NewStaticTargeter(targets...), vegeta.Rate{Freq: rate, Per: time.Second}, d, "serve") {
		out = append(out, r)
	}
	return out
}

func summarize(rs []*vegeta.Result) string {
	var m vegeta.Metrics
	for _, r := range rs {
		m.Add(r)
	}
	m.Close()
	return fmt.Sprintf("%d requests, %.0f/s, p50 %s p99 %s, codes %v", m.Requests, m.Throughput, m.Latencies.P50, m.Latencies.P99, m.StatusCodes)
}

// TestClusterComposition: preprocess -> model on a 2-node cluster, real
// HTTP through both nodes' proxies; then a model replica's worker is
// SIGKILLed under load: the replica count comes back and every request
// after that succeeds.
func TestClusterComposition(t *testing.T) {
	if !inChild(t, 4*time.Minute) {
		return
	}
	ctx := testCtx(t, 3*time.Minute)
	startCluster(t, ctx, 1)
	app := Pre.Bind(PreArg{Model: serve.HandleOf[In, Out](Model.Bind(3, serve.NumReplicas(2)))}, serve.NumReplicas(2))
	if err := serve.Run(ctx, app, serve.Name("calc"), serve.Route("/calc"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	urls := proxyURLs(t, ctx, 2)
	var targets []vegeta.Target
	for _, u := range urls {
		targets = append(targets, vegeta.Target{Method: "GET", URL: u + "/calc?x=7"})
	}
	rs := attack(targets, 100, 2*time.Second)
	for _, r := range rs {
		if r.Code != 200 || string(r.Body) != "21" {
			t.Fatalf("GET %s: %d %q %s", r.URL, r.Code, r.Body, r.Error)
		}
	}
	t.Logf("cluster_test.go: composition through %d proxies: %s", len(urls), summarize(rs))

	// Kill one model replica's worker under load.
	h := serve.GetHandle[In, Out]("calc", "test.model")
	out, err := h.Call(ctx, In{X: 1})
	if err != nil {
		t.Fatal(err)
	}
	var during []*vegeta.Result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		during = attack(targets, 100, 3*time.Second)
	}()
	time.Sleep(time.Second) // let the load run before the kill (not synchronisation)
	if err := syscall.Kill(out.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	eventually(t, 60*time.Second, func() error {
		st, err := serve.Status(ctx)
		if err != nil {
			return err
		}
		if n, _ := running(deployment(st, "calc", "test.model")); n != 2 {
			return fmt.Errorf("%d model replicas running", n)
		}
		// Both replicas answer, neither from the killed process.
		pids := map[int]bool{}
		for range 20 {
			o, err := h.Call(ctx, In{X: 1})
			if err != nil {
				return err
			}
			pids[o.PID] = true
		}
		if len(pids) != 2 || pids[out.PID] {
			return fmt.Errorf("model replicas answer from PIDs %v (killed %d)", pids, out.PID)
		}
		return nil
	})
	restored := time.Now()
	wg.Wait()
	failed := 0
	for _, r := range during {
		if r.Code != 200 {
			failed++
		}
	}
	t.Logf("cluster_test.go: replica killed under load: restored after %s; %d of %d requests during the kill failed (%s)",
		restored.Sub(killed).Round(time.Millisecond), failed, len(during), summarize(during))
	rs = attack(targets, 100, 2*time.Second)
	for _, r := range rs {
		if r.Code != 200 || string(r.Body) != "21" {
			t.Fatalf("after the replacement: GET %s: %d %q %s", r.URL, r.Code, r.Body, r.Error)
		}
	}
}

// TestClusterRollingUpdateLeaderKilled: a rolling update of 4 replicas,
// the leader head SIGKILLed in the middle; the new leader finishes the
// update, and requests that arrived after the kill get no 5xx.
func TestClusterRollingUpdateLeaderKilled(t *testing.T) {
	if !inChild(t, 5*time.Minute) {
		return
	}
	ctx := testCtx(t, 4*time.Minute)
	c := startCluster(t, ctx, 3)
	if err := serve.Run(ctx, Echo.Bind("v1", serve.NumReplicas(4)), serve.Name("roll"), serve.Route("/v"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	urls := proxyURLs(t, ctx, 2)
	type result struct {
		at   time.Time
		code int
		err  error
	}
	var mu sync.Mutex
	var results []result
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				at := time.Now()
				req, _ := http.NewRequestWithContext(lctx, "GET", urls[i%len(urls)]+"/v/version", nil)
				resp, err := http.DefaultClient.Do(req)
				r := result{at: at, err: err}
				if err == nil {
					r.code = resp.StatusCode
					resp.Body.Close()
				}
				if lctx.Err() == nil {
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				}
				time.Sleep(10 * time.Millisecond) // pacing of the load, not synchronisation
			}
		}()
	}
	start := time.Now()
	if err := serve.Run(ctx, Echo.Bind("v2", serve.NumReplicas(4)), serve.Name("roll"), serve.Route("/v"), serve.HTTPPort(0), serve.NoWait()); err != nil {
		t.Fatal(err)
	}
	// Mid-update: some replicas of each version.
	eventually(t, 60*time.Second, func() error {
		st, err := serve.Status(ctx)
		if err != nil {
			return err
		}
		d := deployment(st, "roll", "test.echo")
		_, vs := running(d)
		if len(vs) < 2 {
			return fmt.Errorf("versions running: %v", vs)
		}
		return nil
	})
	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := serve.WaitHealthy(ctx, "roll"); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	st, err := serve.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := deployment(st, "roll", "test.echo")
	n, vs := running(d)
	if n != 4 || len(vs) != 1 || vs[d.Version] != 4 {
		t.Fatalf("after the update: %d running, versions %v, want 4 of %s", n, vs, d.Version)
	}
	stop()
	wg.Wait()
	var after, bad int
	for _, r := range results {
		if r.at.After(killed) {
			after++
			if r.err != nil || r.code >= 500 {
				bad++
			}
		}
	}
	t.Logf("cluster_test.go: rolling update of 4 replicas with the leader killed: %s (kill at +%s); %d requests after the kill, %d failed",
		done.Sub(start).Round(time.Millisecond), killed.Sub(start).Round(time.Millisecond), after, bad)
	if bad > 0 {
		t.Fatalf("%d of %d requests after the leader's kill failed", bad, after)
	}
	for _, u := range urls {
		if code, body, _ := get(t, u+"/v/version"); code != 200 || body != "v2" {
			t.Fatalf("GET %s/v/version: %d %q", u, code, body)
		}
	}
	_ = strconv.Itoa
}
