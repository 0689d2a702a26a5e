package serve_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/manta-ray/manta/sdk/serve"
)

// noop answers "ok".
type noop struct{}

func noopHandler(context.Context, *http.Request) (serve.Response, error) {
	return serve.Text("ok"), nil
}

var Noop = serve.HTTP("bench.noop", func(context.Context, struct{}) (*noop, error) { return &noop{}, nil },
	func(_ *noop, ctx context.Context, r *http.Request) (serve.Response, error) {
		return noopHandler(ctx, r)
	},
	serve.MaxOngoingRequests(64), serve.MaxQueuedRequests(1000))

// work is a user-shaped handler: 5-50 ms of work, half of it CPU (a
// hash loop) and half waiting (an I/O call), uneven by request.
func work(ctx context.Context, r *http.Request) (serve.Response, error) {
	d := time.Duration(5+rand.IntN(46)) * time.Millisecond
	spin := time.Now().Add(d / 2)
	x := uint64(1)
	for time.Now().Before(spin) {
		for range 1000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	select {
	case <-time.After(d / 2):
	case <-ctx.Done():
		return serve.Response{}, ctx.Err()
	}
	return serve.Text(fmt.Sprint(x & 1)), nil
}

type worker struct{}

var Work = serve.HTTP("bench.work", func(context.Context, struct{}) (*worker, error) { return &worker{}, nil },
	func(_ *worker, ctx context.Context, r *http.Request) (serve.Response, error) { return work(ctx, r) },
	serve.NumReplicas(4), serve.MaxOngoingRequests(16), serve.MaxQueuedRequests(1000))

// closedLoop sends b.N GETs from conc clients and reports requests/s and
// latency percentiles.
func closedLoop(b *testing.B, url string, conc int) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				resp, err := client.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
				} else {
					failed.Add(1)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d requests failed", f, b.N)
	}
}

func plainServer(b *testing.B, h func(context.Context, *http.Request) (serve.Response, error)) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := h(r.Context(), r)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		_, _ = w.Write(resp.Body)
	}))
	b.Cleanup(srv.Close)
	return srv.URL
}

func deployBench(b *testing.B, app *serve.Bound, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := serve.Run(ctx, app, serve.Name(name), serve.Route("/"+name), serve.HTTPPort(0)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = serve.Delete(context.Background(), name) })
	st, err := serve.Status(ctx)
	if err != nil || len(st.Proxies) == 0 {
		b.Fatalf("no proxy: %v", err)
	}
	return "http://" + st.Proxies[0].Address + "/" + name
}

// BenchmarkServeNoop: a no-op deployment (1 replica) through the proxy,
// 32 clients.
func BenchmarkServeNoop(b *testing.B) {
	closedLoop(b, deployBench(b, Noop.Bind(struct{}{}), "noop"), 32)
}

// BenchmarkPlainNoop: the same handler on plain net/http, 32 clients.
func BenchmarkPlainNoop(b *testing.B) {
	closedLoop(b, plainServer(b, noopHandler), 32)
}

// openLoop sends rate requests a second for d (arrivals spread by vegeta)
// and reports latency percentiles and failures.
func openLoop(b *testing.B, url string, rate int, d time.Duration) {
	atk := vegeta.NewAttacker(vegeta.Timeout(30 * time.Second))
	var m vegeta.Metrics
	b.ResetTimer()
	for range b.N {
		for r := range atk.Attack(vegeta.NewStaticTargeter(vegeta.Target{Method: "GET", URL: url}), vegeta.Rate{Freq: rate, Per: time.Second}, d, "work") {
			m.Add(r)
		}
	}
	m.Close()
	b.ReportMetric(m.Throughput, "req/s")
	b.ReportMetric(float64(m.Latencies.P50.Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(m.Latencies.P99.Microseconds())/1000, "p99_ms")
	b.ReportMetric(100*(1-m.Success), "fail_%")
}

// BenchmarkServeWork: user-shaped load (5-50 ms handlers, half CPU) at
// 100 requests/s for 5 s on 4 replicas through the proxy.
func BenchmarkServeWork(b *testing.B) {
	openLoop(b, deployBench(b, Work.Bind(struct{}{}), "work"), 100, 5*time.Second)
}

// BenchmarkPlainWork: the same load on the same handler on plain net/http.
func BenchmarkPlainWork(b *testing.B) {
	openLoop(b, plainServer(b, work), 100, 5*time.Second)
}

// BenchmarkServeRollingUpdate: time for a rolling update of 4 replicas
// (Run with a new version until every replica is of it).
func BenchmarkServeRollingUpdate(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := serve.Run(ctx, Echo.Bind("r0", serve.NumReplicas(4)), serve.Name("rolling"), serve.Route("/rolling"), serve.HTTPPort(0)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = serve.Delete(context.Background(), "rolling") })
	b.ResetTimer()
	for i := range b.N {
		if err := serve.Run(ctx, Echo.Bind(fmt.Sprintf("r%d", i+1), serve.NumReplicas(4)), serve.Name("rolling"), serve.Route("/rolling"), serve.HTTPPort(0)); err != nil {
			b.Fatal(err)
		}
	}
}
