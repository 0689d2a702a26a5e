package chaos

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/launcher"
	cpb "github.com/manta-ray/manta/proto/controlpb"
)

func startCluster(t *testing.T, heads int) *launcher.Cluster {
	t.Helper()
	return startClusterWith(t, launcher.Options{Binary: mantaBin, Heads: heads, DataDir: t.TempDir()})
}

// startClusterWith starts a cluster that t's cleanup stops (every head by
// its PID, even when the test fails).
func startClusterWith(t *testing.T, o launcher.Options) *launcher.Cluster {
	t.Helper()
	ctx := tc.Ctx(t, 60*time.Second)
	c, err := launcher.Start(ctx, o)
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

// TestLeaderKillLosesNothing SIGKILLs the leader of a 3-process cluster while
// clients write: every acknowledged write survives, the history is
// linearizable, and the killed head rejoins and catches up.
func TestLeaderKillLosesNothing(t *testing.T) {
	c := startCluster(t, 3)
	ctx := tc.Ctx(t, 120*time.Second)
	env := NewEnv(c, nil)
	w := NewKVWorkload(7)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx, env) }()
	stopped := false
	stopWorkload := func() {
		if !stopped {
			stopped = true
			stop()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	defer stopWorkload()

	tc.Eventually(t, 20*time.Second, func() error {
		if ok := w.Stats().OK; ok < 300 {
			return fmt.Errorf("%d ops so far", ok)
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
	before := w.Stats().OK
	tc.Eventually(t, 30*time.Second, func() error {
		if ok := w.Stats().OK; ok < before+300 {
			return fmt.Errorf("%d ops since the kill", ok-before)
		}
		return nil
	})
	stopWorkload()

	for _, r := range w.Check(ctx, env, CheckOptions{LinearizabilityTimeout: 60 * time.Second}) {
		switch r.Verdict {
		case Fail:
			t.Fatalf("%s: %s", r.Name, r.Detail)
		case Unknown:
			t.Logf("%s: %s; not a violation", r.Name, r.Detail)
		}
	}
	s := w.Stats()
	t.Logf("%d ops ok, %d failed, %d indeterminate, %d unique keys checked", s.OK, s.Failed, s.Indeterminate, len(w.Acked()))

	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
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

// TestStartMovesOffATakenPort: a head port taken between choosing it and
// the head binding it (another process won the race) does not fail the
// start of a fresh cluster; the launcher starts the heads again on other
// ports.
func TestStartMovesOffATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	calls := 0
	var first []int
	ports := func(n int) ([]int, error) {
		calls++
		var out []int
		for range n {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			defer l.Close()
			out = append(out, l.Addr().(*net.TCPAddr).Port)
		}
		if calls == 1 {
			out[len(out)-2] = takenPort // the last head's gRPC port
			first = out
		}
		return out, nil
	}
	c := startClusterWith(t, launcher.Options{Binary: mantaBin, Heads: 3, DataDir: t.TempDir(), Ports: ports})
	if calls != 2 {
		t.Fatalf("ports chosen %d times; want 2 (the first choice lost a port)", calls)
	}
	for _, a := range c.Addresses() {
		if a == fmt.Sprintf("127.0.0.1:%d", takenPort) {
			t.Fatalf("cluster uses the taken port %d: %v (first choice %v)", takenPort, c.Addresses(), first)
		}
	}
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := tc.Ctx(t, 20*time.Second)
	if _, err := cl.KVPut(ctx, &cpb.KVPutRequest{Key: "k", Value: []byte("v"), Overwrite: true}); err != nil {
		t.Fatalf("write to the restarted cluster: %v", err)
	}
}
