// Package cpbench measures the control plane: KV write throughput through
// gRPC with group commit, lineage records committed, and leader failover
// time. The `manta bench` commands and `make bench` run it; figures go in
// notes, never in tests.
package cpbench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
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
	// Rate, when > 0, makes the load user-shaped instead of a tight loop:
	// writes arrive at random (Poisson) times at Rate writes/s in total,
	// shared unevenly between the clients (their rates spread over two
	// orders of magnitude). Each write is sent when due, answered or not
	// the earlier ones (independent users); latency is from send to answer.
	Rate float64
	// HeadPIDs, when set, are the heads' processes: the result then
	// carries their CPU time per write.
	HeadPIDs []int
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
	P999     time.Duration
	// Offered is the target rate of a paced run (0: tight loop).
	Offered float64
	// HeadCPUPerWrite and ClientCPUPerWrite are CPU time per write of the
	// heads (with HeadPIDs) and of this process (the clients; in an
	// in-process benchmark the heads too).
	HeadCPUPerWrite, ClientCPUPerWrite time.Duration
}

func (r KVResult) String() string {
	s := fmt.Sprintf("kv_writes clients=%d conns=%d writes=%d errors=%d elapsed=%s rate=%.0f/s p50=%s p99=%s p999=%s",
		r.Clients, r.Conns, r.Writes, r.Errors, r.Elapsed.Round(time.Millisecond), r.PerSec,
		r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.P999.Round(time.Microsecond))
	if r.Offered > 0 {
		s += fmt.Sprintf(" offered=%.0f/s", r.Offered)
	}
	if r.HeadCPUPerWrite > 0 {
		s += fmt.Sprintf(" head_cpu/write=%.1fµs", float64(r.HeadCPUPerWrite.Nanoseconds())/1e3)
	}
	return s + fmt.Sprintf(" self_cpu/write=%.1fµs", float64(r.ClientCPUPerWrite.Nanoseconds())/1e3)
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
	rates := clientRates(o.Clients, o.Rate)
	value := make([]byte, o.ValueSize)
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   int
		wg     sync.WaitGroup
		cpu0   = SelfCPU()
		head0  = ProcCPU(o.HeadPIDs)
		start  = time.Now()
		stopAt = start.Add(o.Duration)
	)
	record := func(mine []time.Duration, bad int) {
		mu.Lock()
		lat = append(lat, mine...)
		errs += bad
		mu.Unlock()
	}
	for w, c := range clients {
		wg.Add(1)
		if rates != nil {
			go func() {
				defer wg.Done()
				paced(ctx, c, w, rates[w], stopAt, value, record)
			}()
			continue
		}
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
			record(mine, bad)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := KVResult{Clients: o.Clients, Conns: o.Conns, Writes: len(lat), Errors: errs, Elapsed: el,
		PerSec: float64(len(lat)) / el.Seconds(), Offered: o.Rate}
	if len(lat) > 0 {
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[len(lat)*99/100]
		r.P999 = lat[len(lat)*999/1000]
		r.ClientCPUPerWrite = (SelfCPU() - cpu0) / time.Duration(len(lat))
		if len(o.HeadPIDs) > 0 {
			r.HeadCPUPerWrite = (ProcCPU(o.HeadPIDs) - head0) / time.Duration(len(lat))
		}
	}
	return r, ctx.Err()
}

// paced is one user of a paced run: its writes arrive at random (Poisson)
// times at rate writes/s, each sent when due whether or not the earlier ones
// are answered (an open loop, as independent users are).
func paced(ctx context.Context, c *cpclient.Client, w int, rate float64, stopAt time.Time, value []byte,
	record func([]time.Duration, int)) {
	rng := rand.New(rand.NewPCG(uint64(w), 1))
	var wg sync.WaitGroup
	due := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		due = due.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		if !due.Before(stopAt) {
			break
		}
		if d := time.Until(due); d > 0 {
			select { // the load generator's pacing, not synchronisation
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		wg.Add(1)
		go func(sent time.Time) {
			defer wg.Done()
			_, err := c.Put(ctx, "bench", fmt.Sprintf("c%d-%d", w, i), value)
			if err != nil {
				record(nil, 1)
				return
			}
			record([]time.Duration{time.Since(sent)}, 0)
		}(time.Now())
	}
	wg.Wait()
}

// clientRates shares total writes/s between n clients unevenly: weights
// log-uniform over [1, 100), fixed by the seed so runs compare. nil for a
// tight loop.
func clientRates(n int, total float64) []float64 {
	if total <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(42, 42))
	w := make([]float64, n)
	sum := 0.0
	for i := range w {
		w[i] = math.Pow(100, rng.Float64())
		sum += w[i]
	}
	for i := range w {
		w[i] *= total / sum
	}
	return w
}
