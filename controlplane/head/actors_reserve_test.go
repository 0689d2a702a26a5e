package head

import (
	"fmt"
	"testing"
	"time"

	cpb "github.com/manta-ray/manta/proto/controlpb"
)

// TestPlacementsBetweenHeartbeatsReserve: a burst of actor placements
// between two heartbeats of the nodes spreads by what each placement took
// (not every actor on the node that looked freest), and a reservation
// ends once a second heartbeat after its grant can show the actor.
func TestPlacementsBetweenHeartbeatsReserve(t *testing.T) {
	beat := time.Now()
	l := &liveness{avail: map[string]map[string]float64{}, last: map[string]time.Time{}}
	var alive []*cpb.NodeInfo
	for _, id := range []string{"n1", "n2", "n3"} {
		alive = append(alive, &cpb.NodeInfo{NodeId: id, State: cpb.NodeState_NODE_ALIVE, Resources: map[string]float64{"CPU": 4}})
		l.avail[id], l.last[id] = map[string]float64{"CPU": 4}, beat
	}
	p := newActorPlacer(&Head{liveness: l})
	p.reserved = map[string][]*reservation{}
	placed := map[string]int{}
	for i := range 12 {
		a := &cpb.ActorInfo{ActorId: fmt.Sprintf("a%02d", i), Resources: map[string]float64{"CPU": 1}}
		n, r := p.pickNode(a, alive)
		if n == nil || r == nil {
			t.Fatalf("actor %d: no node", i)
		}
		p.grantedAt(r)
		placed[n.NodeId]++
	}
	for id, k := range placed {
		if k != 4 {
			t.Fatalf("12 actors of 1 CPU on 3 nodes of 4 CPUs: %v (node %s got %d)", placed, id, k)
		}
	}

	// A heartbeat that may have left before the grants keeps them
	// reserved; the next one ends the reservations.
	free := func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.freeLocked("n1", l.avail["n1"], l.last["n1"])["CPU"]
	}
	l.avail["n1"], l.last["n1"] = map[string]float64{"CPU": 4}, time.Now().Add(time.Millisecond)
	if got := free(); got != 0 {
		t.Fatalf("after one heartbeat: %v CPUs free on n1, want 0 (4 reserved)", got)
	}
	l.avail["n1"], l.last["n1"] = map[string]float64{"CPU": 0}, time.Now().Add(2*time.Millisecond)
	if got := free(); got != 0 {
		t.Fatalf("after the second heartbeat (showing the 4 actors): %v CPUs free on n1, want 0", got)
	}
	if rs := len(p.reserved["n1"]); rs != 0 {
		t.Fatalf("%d reservations left on n1 after its second heartbeat", rs)
	}

	// A placement no worker took gives its reservation back.
	n, r := p.pickNode(&cpb.ActorInfo{ActorId: "b", Resources: map[string]float64{"CPU": 1}}, alive[1:2])
	p.unreserve(n.NodeId, r)
	if rs := len(p.reserved[n.NodeId]); rs != 4 {
		t.Fatalf("%d reservations on %s after an unreserve, want the burst's 4", rs, n.NodeId)
	}
}
