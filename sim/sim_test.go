package sim

import (
	"errors"
	"fmt"
	"testing"
	"time"

	tc "github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// aliveSimNodes counts the alive nodes named like the fleet's on head i's
// replicated store.
func aliveSimNodes(c *tc.Cluster, i int, ids []string) (alive int, dead []string) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, n := range c.Heads[i].FSM().Nodes() {
		if !want[n.NodeId] {
			continue
		}
		if n.State == pb.NodeState_NODE_ALIVE {
			alive++
		} else {
			dead = append(dead, n.NodeId+": "+n.DeathReason)
		}
	}
	return alive, dead
}

// TestHundredNodesStayAliveAcrossFailover registers 100 simulated raylets
// on 3 heads, checks every one is registered and alive, kills the leader,
// and checks that after the new leader's grace period every node is
// heartbeating to it and none was declared dead.
func TestHundredNodesStayAliveAcrossFailover(t *testing.T) {
	const nodes = 100
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 2*time.Minute)
	f, err := Start(ctx, Options{Addresses: c.Addresses(), Token: c.Token(), Nodes: nodes, ViewInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	ids := f.IDs()

	leader := c.WaitLeader()
	tc.Eventually(t, 30*time.Second, func() error {
		if alive, dead := aliveSimNodes(c, leader, ids); alive != nodes {
			return fmt.Errorf("%d of %d nodes alive; dead: %v", alive, nodes, dead)
		}
		if !f.AllHeartbeatedSince(time.Now().Add(-2 * time.Second)) {
			return errors.New("not every node has heartbeated lately")
		}
		return nil
	})
	// Every node sees the whole fleet in its cluster view.
	tc.Eventually(t, 30*time.Second, func() error {
		s := f.Collect()
		if s.Views == 0 || s.ViewNodesMin < nodes {
			return fmt.Errorf("views=%d, smallest view %d nodes", s.Views, s.ViewNodesMin)
		}
		return nil
	})

	c.Stop(leader)
	next := c.WaitLeader()
	// The new leader judges nodes only after its NodeGrace (testcluster:
	// 2s); wait until every node has heartbeated after that and a tick
	// more, so a node it wrongly thought silent would have been ruled on
	// (and its heartbeat refused).
	judged := time.Now().Add(2*time.Second + 500*time.Millisecond)
	tc.Eventually(t, time.Minute, func() error {
		if !f.AllHeartbeatedSince(judged) {
			return fmt.Errorf("not every node has heartbeated since %s", judged.Format(time.StampMilli))
		}
		return nil
	})
	if d := f.DeclaredDead(); len(d) > 0 {
		t.Fatalf("%d nodes declared dead by the failover: %v", len(d), d)
	}
	if alive, dead := aliveSimNodes(c, next, ids); alive != nodes {
		t.Fatalf("%d of %d nodes alive after the failover; dead: %v", alive, nodes, dead)
	}
}

// TestFloodingNodeIsRateLimited has one node heartbeat as fast as it can:
// the leader refuses most of its heartbeats (ResourceExhausted), keeps it
// alive on the ones let through, and the other nodes' heartbeats all pass.
func TestFloodingNodeIsRateLimited(t *testing.T) {
	c := tc.Start(t, 1, nil)
	ctx := tc.Ctx(t, time.Minute)
	f, err := Start(ctx, Options{Addresses: c.Addresses(), Token: c.Token(), Nodes: 10, ViewInterval: -1, NoWatch: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	flooder, err := f.AddFlooder(ctx, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	f.Collect()
	var s Stats
	tc.Eventually(t, 30*time.Second, func() error {
		w := f.Collect()
		s.FloodSent += w.FloodSent
		s.FloodRefused += w.FloodRefused
		s.Heartbeats += w.Heartbeats
		s.HeartbeatErrors += w.HeartbeatErrors
		if s.FloodRefused == 0 || s.Heartbeats < 20 {
			return fmt.Errorf("flooder sent %d, %d refused; others sent %d", s.FloodSent, s.FloodRefused, s.Heartbeats)
		}
		return nil
	})
	if s.HeartbeatErrors != 0 {
		t.Fatalf("%d heartbeats of well-behaved nodes failed while one node flooded", s.HeartbeatErrors)
	}
	if f.DeclaredDead() != nil {
		t.Fatalf("declared dead: %v", f.DeclaredDead())
	}
	for _, n := range c.Heads[0].FSM().Nodes() {
		if n.NodeId == flooder && n.State != pb.NodeState_NODE_ALIVE {
			t.Fatalf("the flooding node was marked dead: %s", n.DeathReason)
		}
	}
}
