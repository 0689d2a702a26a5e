package cpbench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
)

// FailoverResult is one leader kill: how long until a write issued after
// the kill was acknowledged, and until the new leader was known.
type FailoverResult struct {
	Killed     string
	NewLeader  string
	FirstWrite time.Duration
}

// Failover SIGKILLs the leader of a running local cluster reps times. For
// each kill it measures the time from the kill to the first acknowledged
// write that was issued after it; then it restarts the killed head and
// waits until every head has caught up, before the next kill.
func Failover(ctx context.Context, c *launcher.Cluster, reps int, log func(string)) ([]FailoverResult, error) {
	var out []FailoverResult
	for rep := range reps {
		cl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), TLS: c.TLS(), Timeout: 30 * time.Second, AttemptTimeout: 500 * time.Millisecond})
		if err != nil {
			return out, err
		}
		leader, id, err := c.WaitLeader(ctx)
		if err != nil {
			cl.Close()
			return out, err
		}
		// Warm: the client knows the leader and has connections.
		if _, err := cl.Put(ctx, "bench", "failover-warm", nil); err != nil {
			cl.Close()
			return out, err
		}
		t0 := time.Now()
		if err := c.Kill(leader); err != nil {
			cl.Close()
			return out, err
		}
		var took time.Duration
		for i := 0; ; i++ {
			if ctx.Err() != nil {
				cl.Close()
				return out, ctx.Err()
			}
			if _, err := cl.Put(ctx, "bench", fmt.Sprintf("failover-%d-%d", rep, i), nil); err == nil {
				took = time.Since(t0)
				break
			}
		}
		_, newID, err := c.WaitLeader(ctx)
		cl.Close()
		if err != nil {
			return out, err
		}
		r := FailoverResult{Killed: id, NewLeader: newID, FirstWrite: took}
		out = append(out, r)
		if log != nil {
			log(fmt.Sprintf("failover rep=%d killed=%s new_leader=%s first_write_after=%s", rep+1, id, newID, took.Round(time.Millisecond)))
		}
		if err := c.Restart(leader); err != nil {
			return out, err
		}
		if err := waitCaughtUp(ctx, c); err != nil {
			return out, err
		}
	}
	return out, nil
}

// waitCaughtUp waits until every head has applied the leader's index.
func waitCaughtUp(ctx context.Context, c *launcher.Cluster) error {
	cl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), TLS: c.TLS()})
	if err != nil {
		return err
	}
	defer cl.Close()
	idx, err := cl.Put(ctx, "bench", "failover-fence", nil)
	if err != nil {
		return err
	}
	for {
		behind := ""
		for _, h := range c.Heads() {
			st, err := cl.StatusOf(ctx, h.Address)
			if err != nil || st.AppliedIndex < idx {
				behind = h.ID
				break
			}
		}
		if behind == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("head %s did not catch up: %w", behind, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Summary is min / median / max of the first-write times.
func Summary(rs []FailoverResult) (lo, med, hi time.Duration) {
	if len(rs) == 0 {
		return
	}
	d := make([]time.Duration, len(rs))
	for i, r := range rs {
		d[i] = r.FirstWrite
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[0], d[len(d)/2], d[len(d)-1]
}
