package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/launcher"
)

func startCluster(t *testing.T, heads int) *launcher.Cluster {
	t.Helper()
	ctx := tc.Ctx(t, 60*time.Second)
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: heads, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Logf("close cluster: %v", err)
		}
	})
	return c
}

// kvWorkload runs clients that read and write a few shared keys (so the
// linearizability check has something to bite on) and write unique keys
// (so a lost acknowledged write is easy to name). It records a history.
type kvWorkload struct {
	hist   *History
	mu     sync.Mutex
	acked  map[string]string // unique key -> value, acknowledged
	okOps  int
	failed int
}

func (w *kvWorkload) ok() int { w.mu.Lock(); defer w.mu.Unlock(); return w.okOps }

func (w *kvWorkload) run(ctx context.Context, client int, cl *cpclient.Client) {
	rng := rand.New(rand.NewPCG(uint64(client), 7))
	for i := 0; ctx.Err() == nil; i++ {
		var in KVInput
		switch r := rng.IntN(10); {
		case r < 3:
			in = KVInput{Put: true, Key: fmt.Sprintf("u-%d-%d", client, i), Value: fmt.Sprintf("%d-%d", client, i)}
		case r < 6:
			in = KVInput{Put: true, Key: fmt.Sprintf("shared-%d", rng.IntN(4)), Value: fmt.Sprintf("%d-%d", client, i)}
		default:
			in = KVInput{Key: fmt.Sprintf("shared-%d", rng.IntN(4))}
		}
		call := w.hist.Now()
		var out KVOutput
		var err error
		if in.Put {
			_, err = cl.Put(ctx, "chaos", in.Key, []byte(in.Value))
		} else {
			var v []byte
			v, err = cl.Get(ctx, "chaos", in.Key)
			out = KVOutput{Value: string(v), Found: err == nil}
			if errors.Is(err, fsm.ErrKeyNotFound) {
				err = nil
			}
		}
		ret := w.hist.Now()
		if err != nil {
			// Whether a failed write took effect is not known.
			out = KVOutput{Unknown: true}
		}
		if ctx.Err() != nil && err != nil {
			out = KVOutput{Unknown: true}
		}
		w.hist.Add(client, in, out, call, ret)
		w.mu.Lock()
		if err == nil {
			w.okOps++
			if in.Put && in.Key[0] == 'u' {
				w.acked[in.Key] = in.Value
			}
		} else {
			w.failed++
		}
		w.mu.Unlock()
	}
}

// TestLeaderKillLosesNothing SIGKILLs the leader of a 3-process cluster while
// clients write: every acknowledged write survives, the history is
// linearizable, and the killed head rejoins and catches up.
func TestLeaderKillLosesNothing(t *testing.T) {
	c := startCluster(t, 3)
	ctx := tc.Ctx(t, 120*time.Second)
	w := &kvWorkload{hist: NewHistory(), acked: map[string]string{}}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for client := range 6 {
		cl, err := c.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		wg.Add(1)
		go func() { defer wg.Done(); w.run(wctx, client, cl) }()
	}
	defer func() { stop(); wg.Wait() }()

	tc.Eventually(t, 20*time.Second, func() error {
		if w.ok() < 300 {
			return fmt.Errorf("%d ops so far", w.ok())
		}
		return nil
	})
	leader, id, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killing leader %s (pid %d)", id, c.Heads()[leader].PID)
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	before := w.ok()
	tc.Eventually(t, 30*time.Second, func() error {
		if w.ok() < before+300 {
			return fmt.Errorf("%d ops since the kill", w.ok()-before)
		}
		return nil
	})
	stop()
	wg.Wait()

	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w.mu.Lock()
	acked := w.acked
	w.mu.Unlock()
	for k, v := range acked {
		got, err := cl.Get(ctx, "chaos", k)
		if err != nil || string(got) != v {
			t.Fatalf("acknowledged write %s=%s lost: got %q, %v", k, v, got, err)
		}
	}
	switch r := w.hist.CheckLinearizable(60 * time.Second); r {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Logf("linearizability check timed out on %d ops; not a violation", w.hist.Len())
	default:
		t.Fatalf("history of %d ops is not linearizable", w.hist.Len())
	}
	t.Logf("%d ops ok, %d failed or indeterminate, %d unique keys checked", w.okOps, w.failed, len(acked))

	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ctx, c, cl)
}

// assertConverged waits until every head reports the same state hash at
// the same applied index.
func assertConverged(t *testing.T, ctx context.Context, c *launcher.Cluster, cl *cpclient.Client) {
	t.Helper()
	// A write through the leader moves every head past anything in flight.
	if _, err := cl.Put(ctx, "chaos", "fence", []byte("x")); err != nil {
		t.Fatal(err)
	}
	tc.Eventually(t, 30*time.Second, func() error {
		var first string
		for _, h := range c.Heads() {
			r, err := cl.StateHashOf(ctx, h.Address)
			if err != nil {
				return fmt.Errorf("%s: %w", h.ID, err)
			}
			if first == "" {
				first = r.Hash
			} else if r.Hash != first {
				return fmt.Errorf("%s differs (applied %d)", h.ID, r.AppliedIndex)
			}
		}
		return nil
	})
}
