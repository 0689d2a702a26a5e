package sim

import (
	"errors"
	"fmt"
	"testing"
	"time"

	tc "github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// checkPlaced fails unless every one of want actors is ALIVE on the node
// and worker the table names, each node holds no more than its CPUs, and
// no actor has a second worker anywhere.
func checkPlaced(f *Fleet, c ActorCensus, want, cpus int) error {
	if c.Alive != want {
		return fmt.Errorf("%d of %d actors alive (states %v)", c.Alive, want, c.States)
	}
	if len(c.Misplaced) > 0 {
		return fmt.Errorf("%d actors ALIVE on a worker no node runs, e.g. %s", len(c.Misplaced), c.Misplaced[0])
	}
	for n, k := range c.ByNode {
		if k > cpus {
			return fmt.Errorf("node %s holds %d actors of 1 CPU on %d CPUs", n, k, cpus)
		}
	}
	for id, ws := range f.Hosting() {
		if len(ws) != 1 {
			return fmt.Errorf("actor %s has %d workers: %v", id, len(ws), ws)
		}
	}
	return nil
}

// TestFiveHundredActorsAliveAcrossFailover creates 500 actors on 20
// simulated nodes of 3 heads, checks each is ALIVE on the worker of the
// node the actor table names (and no node is over its CPUs), then kills
// the leader and checks that, once the new leader's grace is over and
// every node heartbeats to it, no actor was restarted, killed or
// constructed again.
func TestFiveHundredActorsAliveAcrossFailover(t *testing.T) {
	const nodes, actors, cpus = 20, 500, 32
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 2*time.Minute)
	f, err := Start(ctx, Options{Addresses: c.Addresses(), Token: c.Token(), Nodes: nodes, Actors: true,
		ViewInterval: time.Second, Resources: map[string]float64{"CPU": cpus}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	cl := c.Client()
	ids, err := CreateActors(ctx, cl, actors, ActorSpec{JobID: "sim-actors"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != actors {
		t.Fatalf("%d actor IDs for %d actors", len(ids), actors)
	}
	var before ActorCensus
	tc.Eventually(t, time.Minute, func() error {
		var err error
		if before, err = f.Census(ctx, cl, "sim-actors"); err != nil {
			return err
		}
		return checkPlaced(f, before, actors, cpus)
	})
	if len(before.ByNode) < nodes/2 {
		t.Fatalf("%d actors on only %d of %d nodes: %v", actors, len(before.ByNode), nodes, before.ByNode)
	}
	counters := f.ActorCounters()
	if counters.Constructs-counters.Kills != actors {
		t.Fatalf("%d constructors run and %d constructed workers killed for %d actors", counters.Constructs, counters.Kills, actors)
	}

	leader := c.WaitLeader()
	c.Stop(leader)
	c.WaitLeader()
	// As in TestHundredNodesStayAliveAcrossFailover: past the new leader's
	// grace (2s) every node has heartbeated, so a node it wrongly thought
	// silent (and so its actors) would have been ruled on.
	judged := time.Now().Add(2*time.Second + 500*time.Millisecond)
	tc.Eventually(t, time.Minute, func() error {
		if !f.AllHeartbeatedSince(judged) {
			return errors.New("not every node has heartbeated since the grace ended")
		}
		return nil
	})
	after, err := f.Census(ctx, cl, "sim-actors")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPlaced(f, after, actors, cpus); err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	if after.Restarts != 0 || after.States[pb.ActorState_RESTARTING] != 0 {
		t.Fatalf("the failover restarted actors: %d restarts, states %v", after.Restarts, after.States)
	}
	if got := f.ActorCounters(); got.Constructs != counters.Constructs || got.Kills != counters.Kills {
		t.Fatalf("the failover ran %d constructors and killed %d workers", got.Constructs-counters.Constructs, got.Kills-counters.Kills)
	}
	if d := f.DeclaredDead(); len(d) > 0 {
		t.Fatalf("nodes declared dead by the failover: %v", d)
	}
}
