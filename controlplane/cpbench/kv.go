// Package cpbench measures the control plane: KV write throughput through
// gRPC with group commit, and leader failover time. The `manta bench`
// commands and `make bench` run it; figures go in notes, never in tests.
package cpbench

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/tlsconfig"
)

// KVOptions configures a KV write benchmark.
type KVOptions struct {
	Addresses []string
	Token     string
	TLS       *tlsconfig.Source // nil: plain text
	Clients   int               // concurrent writers; default 64
	Conns     int               // client connections the writers share round-robin; default Clients (one each)
	Duration  time.Duration     // default 10s
	ValueSize int               // bytes per value; default 100
}

// KVResult is what one run measured.
type KVResult struct {
	Clients  int
	Conns    int
	Writes   int
	Errors   int
	Elapsed  time.Duration
	PerSec   float64
	P50, P99 time.Duration
}

func (r KVResult) String() string {
	return fmt.Sprintf("kv_writes clients=%d conns=%d writes=%d errors=%d elapsed=%s rate=%.0f/s p50=%s p99=%s",
		r.Clients, r.Conns, r.Writes, r.Errors, r.Elapsed.Round(time.Millisecond), r.PerSec, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond))
}

// KV runs Clients writers of unique keys for Duration.
func KV(ctx context.Context, o KVOptions) (KVResult, error) {
	if o.Clients == 0 {
		o.Clients = 64
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.ValueSize == 0 {
		o.ValueSize = 100
	}
	if o.Conns <= 0 || o.Conns > o.Clients {
		o.Conns = o.Clients
	}
	conns := make([]*cpclient.Client, o.Conns)
	for i := range conns {
		c, err := cpclient.New(cpclient.Config{Addresses: o.Addresses, Token: o.Token, TLS: o.TLS})
		if err != nil {
			return KVResult{}, err
		}
		defer c.Close()
		conns[i] = c
	}
	clients := make([]*cpclient.Client, o.Clients)
	for i := range clients {
		clients[i] = conns[i%len(conns)]
	}
	// Warm up: every client finds the leader before the clock starts.
	for i, c := range clients {
		if _, err := c.Put(ctx, "bench", fmt.Sprintf("warm-%d", i), nil); err != nil {
			return KVResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	value := make([]byte, o.ValueSize)
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   int
		wg     sync.WaitGroup
		start  = time.Now()
		stopAt = start.Add(o.Duration)
	)
	for w, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for i := 0; time.Now().Before(stopAt) && ctx.Err() == nil; i++ {
				t0 := time.Now()
				if _, err := c.Put(ctx, "bench", fmt.Sprintf("c%d-%d", w, i), value); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := KVResult{Clients: o.Clients, Conns: o.Conns, Writes: len(lat), Errors: errs, Elapsed: el, PerSec: float64(len(lat)) / el.Seconds()}
	if len(lat) > 0 {
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[len(lat)*99/100]
	}
	return r, ctx.Err()
}
