package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/serve"
)

// TestServeHTTPErrors: routing, 404 for no route, 413 for an oversized
// body, 500 with an error id for a panicking or failing handler, after
// which the same replica answers; a deleted app's route is 404.
func TestServeHTTPErrors(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	if err := serve.Run(ctx, Echo.Bind("v1"), serve.Name("errors"), serve.Route("/echo"), serve.HTTPPort(0),
		serve.MaxRequestBytes(1024)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "errors") })
	base := proxyURL(t, ctx)
	if code, body, _ := get(t, base+"/echo/hi"); code != 200 || body != "/echo/hi" {
		t.Fatalf("GET /echo/hi: %d %q", code, body)
	}
	if code, _, _ := get(t, base+"/nowhere"); code != http.StatusNotFound {
		t.Fatalf("GET /nowhere: %d, want 404", code)
	}
	if code, _, _ := get(t, base+"/echoes"); code != http.StatusNotFound {
		t.Fatalf("GET /echoes (not under /echo): %d, want 404", code)
	}
	resp, err := http.Post(base+"/echo/big", "application/octet-stream", bytes.NewReader(make([]byte, 2048)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("2 KiB body: %d, want 413", resp.StatusCode)
	}
	st, _ := serve.Status(ctx)
	before := runningIDs(deployment(st, "errors", "test.echo"))
	for _, p := range []string{"/echo/panic", "/echo/fail"} {
		code, body, hdr := get(t, base+p)
		if code != 500 || hdr.Get("X-Error-Id") == "" || !strings.Contains(body, hdr.Get("X-Error-Id")) {
			t.Fatalf("GET %s: %d %q (error id %q), want 500 naming its error id", p, code, body, hdr.Get("X-Error-Id"))
		}
	}
	if code, body, _ := get(t, base+"/echo/after"); code != 200 || body != "/echo/after" {
		t.Fatalf("after a panic: %d %q", code, body)
	}
	st, _ = serve.Status(ctx)
	if after := runningIDs(deployment(st, "errors", "test.echo")); after != before || before == "" {
		t.Fatalf("the replica did not stay up after a panic: running %q, was %q", after, before)
	}
	if err := serve.Delete(ctx, "errors"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if code, _, _ := get(t, base+"/echo/hi"); code != http.StatusNotFound {
			return fmt.Errorf("deleted app answers %d", code)
		}
		return nil
	})
}

// TestServeBatching: with maxSize 8, a burst of 64 requests makes at most
// 10 handler calls.
func TestServeBatching(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	if err := serve.Run(ctx, Batched.Bind(struct{}{}), serve.Name("batch"), serve.Route("/batch"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "batch") })
	base := proxyURL(t, ctx)
	var wg sync.WaitGroup
	outs := make([]BatchOut, 64)
	errs := make([]error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(base+"/batch", "application/json", strings.NewReader(fmt.Sprint(i)))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			errs[i] = json.NewDecoder(resp.Body).Decode(&outs[i])
		}()
	}
	wg.Wait()
	var most int64
	for i := range 64 {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if outs[i].V != 2*i || outs[i].Size > 8 {
			t.Fatalf("request %d: %+v", i, outs[i])
		}
		most = max(most, outs[i].Calls)
	}
	t.Logf("64 requests in %d handler calls", most)
	if most > 10 {
		t.Fatalf("64 requests made %d handler calls, want <= 10", most)
	}
}

// TestServeAutoscaling: load raises a deployment to Max replicas, quiet
// lowers it to Min.
func TestServeAutoscaling(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	if err := serve.Run(ctx, Echo.Bind("auto", serve.MaxOngoingRequests(2),
		serve.Autoscaling{Min: 1, Max: 3, TargetOngoingRequests: 1, UpscaleDelay: 300 * time.Millisecond, DownscaleDelay: time.Second}),
		serve.Name("auto"), serve.Route("/auto"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "auto") })
	base := proxyURL(t, ctx)
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				req, _ := http.NewRequestWithContext(lctx, "GET", base+"/auto/x?ms=100", nil)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	eventually(t, 60*time.Second, func() error {
		st, err := serve.Status(ctx)
		if err != nil {
			return err
		}
		if n, _ := running(deployment(st, "auto", "test.echo")); n != 3 {
			return fmt.Errorf("%d replicas running under load, want 3", n)
		}
		return nil
	})
	stop()
	wg.Wait()
	eventually(t, 60*time.Second, func() error {
		st, err := serve.Status(ctx)
		if err != nil {
			return err
		}
		d := deployment(st, "auto", "test.echo")
		if len(d.Replicas) != 1 || d.Target != 1 {
			return fmt.Errorf("%d replicas (target %d) when quiet, want 1", len(d.Replicas), d.Target)
		}
		return nil
	})
}

// TestServeStreaming: chunks reach the client while the handler runs,
// and a client that goes away cancels the handler's context.
func TestServeStreaming(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	// A name of its own per run: with -count a new run's request could
	// reach the previous run's draining replica through a proxy's table
	// a poll old.
	name := fmt.Sprintf("stream%d", time.Now().UnixNano())
	if err := serve.Run(ctx, Streamer.Bind(struct{}{}), serve.Name(name), serve.Route("/"+name), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), name) })
	base := proxyURL(t, ctx)
	if code, body, _ := get(t, base+"/"+name+"/count"); code != 200 || body != "0\n1\n2\n3\n4\n" {
		t.Fatalf("GET /stream/count: %d %q", code, body)
	}
	rctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(rctx, "GET", base+"/"+name+"/wait", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v, want chunked", resp.TransferEncoding)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	var pid int
	if _, err := fmt.Sscanf(line, "first %d\n", &pid); err != nil {
		t.Fatalf("first chunk %q: %v", line, err)
	}
	// The handler is still blocked (it returns only when its request
	// ends): the chunk came before the end. Now the client goes away:
	// the handler's context is cancelled (or its next write fails).
	cancel()
	resp.Body.Close()
	eventually(t, 30*time.Second, func() error {
		_, body, _ := get(t, base+"/"+name+"/cancelled")
		if body != fmt.Sprintf("1 %d", pid) {
			return fmt.Errorf("handler (ended requests, pid) %s, want 1 %d", body, pid)
		}
		return nil
	})
}

// TestServeUnhealthyReplaced: a replica whose CheckHealth fails is
// replaced by a new one.
func TestServeUnhealthyReplaced(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	if err := serve.Run(ctx, Sick.Bind(struct{}{}), serve.Name("sick"), serve.Route("/sick"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "sick") })
	base := proxyURL(t, ctx)
	st, _ := serve.Status(ctx)
	before := runningIDs(deployment(st, "sick", "test.sick"))
	if code, _, _ := get(t, base+"/sick/sick"); code != 200 {
		t.Fatalf("GET /sick/sick: %d", code)
	}
	eventually(t, 60*time.Second, func() error {
		st, err := serve.Status(ctx)
		if err != nil {
			return err
		}
		d := deployment(st, "sick", "test.sick")
		if now := runningIDs(d); now == "" || strings.Contains(now, before) {
			return fmt.Errorf("replicas %+v (the sick one was %s)", d.Replicas, before)
		}
		return nil
	})
	if code, _, _ := get(t, base+"/sick/ok"); code != 200 {
		t.Fatalf("after the replacement: %d", code)
	}
}

// TestServeRequestTimeout: a request over the app's RequestTimeout gets
// 504 and its handler's context is cancelled (the replica is free again).
func TestServeRequestTimeout(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	if err := serve.Run(ctx, Echo.Bind("timeout", serve.MaxOngoingRequests(1)), serve.Name("timeout"), serve.Route("/slow"),
		serve.HTTPPort(0), serve.RequestTimeout(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "timeout") })
	base := proxyURL(t, ctx)
	if code, _, _ := get(t, base+"/slow/x?ms=60000"); code != http.StatusGatewayTimeout {
		t.Fatalf("slow request: %d, want 504", code)
	}
	// With one slot per replica, this answers only if the slow call ended.
	if code, body, _ := get(t, base+"/slow/quick"); code != 200 || body != "/slow/quick" {
		t.Fatalf("after the timeout: %d %q", code, body)
	}
}

// TestServeBusy: with every replica at MaxOngoingRequests and the queue
// full, a request gets 503 with Retry-After; the queued one is served.
func TestServeBusy(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	if err := serve.Run(ctx, Echo.Bind("busy", serve.MaxOngoingRequests(1), serve.MaxQueuedRequests(1)), serve.Name("busy"),
		serve.Route("/busy"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "busy") })
	base := proxyURL(t, ctx)
	// Three requests that each hold a replica slot for 1.5 s: one runs, one
	// waits in the queue, the third is refused.
	type res struct {
		code  int
		retry string
	}
	out := make(chan res, 3)
	for range 3 {
		go func() {
			resp, err := http.Get(base + "/busy/x?ms=1500")
			if err != nil {
				out <- res{}
				return
			}
			resp.Body.Close()
			out <- res{resp.StatusCode, resp.Header.Get("Retry-After")}
		}()
	}
	codes := map[int]int{}
	for range 3 {
		r := <-out
		codes[r.code]++
		if r.code == http.StatusServiceUnavailable && r.retry == "" {
			t.Fatal("503 without Retry-After")
		}
	}
	if codes[200] != 2 || codes[http.StatusServiceUnavailable] != 1 {
		t.Fatalf("codes %v, want two 200 and one 503", codes)
	}
}

// TestServeScaleFromZero: an autoscaled deployment at Min 0 has no
// replica; a request waits in the proxy's queue, the queue is load, and
// the controller starts a replica that answers it.
func TestServeScaleFromZero(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	if err := serve.Run(ctx, Echo.Bind("zero", serve.Autoscaling{Min: 0, Max: 2, TargetOngoingRequests: 1,
		DownscaleDelay: time.Minute}), serve.Name("zero"), serve.Route("/zero"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "zero") })
	st, err := serve.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := deployment(st, "zero", "test.echo"); d.Target != 0 || len(d.Replicas) != 0 {
		t.Fatalf("at Min 0: target %d, replicas %+v", d.Target, d.Replicas)
	}
	if code, body, _ := get(t, proxyURL(t, ctx)+"/zero/hello"); code != 200 || body != "/zero/hello" {
		t.Fatalf("GET /zero/hello: %d %q", code, body)
	}
}

// TestServeConstructorFails: a deployment whose replicas fail to start is
// UNHEALTHY with the constructor's error, and Run says so instead of
// waiting; the controller retries more and more slowly.
func TestServeConstructorFails(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	err := serve.Run(ctx, Broken.Bind("no model file"), serve.Name("broken"), serve.Route("/broken"), serve.HTTPPort(0))
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "broken") })
	if !errors.Is(err, serve.ErrDeployFailed) || !strings.Contains(err.Error(), "no model file") {
		t.Fatalf("Run: %v, want ErrDeployFailed naming the constructor's error", err)
	}
}

// TestServeFixedAfterFailure: an application whose deployment failed to
// start is redeployed with a working one, which serves.
func TestServeFixedAfterFailure(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "fixed") })
	if err := serve.Run(ctx, Broken.Bind("broken"), serve.Name("fixed"), serve.Route("/fixed"), serve.HTTPPort(0)); !errors.Is(err, serve.ErrDeployFailed) {
		t.Fatalf("Run: %v", err)
	}
	if err := serve.Run(ctx, Echo.Bind("fixed"), serve.Name("fixed"), serve.Route("/fixed"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get(t, proxyURL(t, ctx)+"/fixed/x"); code != 200 || body != "/fixed/x" {
		t.Fatalf("GET /fixed/x: %d %q", code, body)
	}
}

// TestServeEnvVars: a deployment's env vars are in its replicas' runtime
// env.
func TestServeEnvVars(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	if err := serve.Run(ctx, Echo.Bind("env", serve.EnvVars(map[string]string{"SERVE_TEST_GREETING": "hello"})), serve.Name("env"),
		serve.Route("/env"), serve.HTTPPort(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(context.Background(), "env") })
	if code, body, _ := get(t, proxyURL(t, ctx)+"/env/env"); code != 200 || body != "hello" {
		t.Fatalf("GET /env/env: %d %q", code, body)
	}
}
