package head_test

import (
	"errors"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func nodeIDs(ns []*pb.NodeInfo) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.NodeId)
	}
	sort.Strings(out)
	return out
}

// TestListNodesDeltaSendsOnlyChanges: a view refresh with the position of
// its last answer gets only the nodes whose free resources or state
// changed since (a dead one included, so the view drops it); a position
// from another leadership gets the whole list again.
func TestListNodesDeltaSendsOnlyChanges(t *testing.T) {
	c := tc.Start(t, 1, nil)
	cl := c.Client()
	ctx := tc.Ctx(t, 30*time.Second)
	cpu := func(n float64) map[string]float64 { return map[string]float64{"CPU": n} }
	for _, id := range []string{"a", "b", "c"} {
		if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: id, Address: "127.0.0.1:1", Resources: cpu(4)}); err != nil {
			t.Fatal(err)
		}
	}
	full, err := cl.ListNodes(ctx, &pb.ListNodesRequest{AliveOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if full.Delta || full.ViewEpoch == 0 || !slices.Equal(nodeIDs(full.Nodes), []string{"a", "b", "c"}) {
		t.Fatalf("whole list: delta=%v epoch=%d nodes=%v", full.Delta, full.ViewEpoch, nodeIDs(full.Nodes))
	}
	since := func(r *pb.ListNodesResponse) *pb.ListNodesResponse {
		t.Helper()
		d, err := cl.ListNodes(ctx, &pb.ListNodesRequest{AliveOnly: true, ViewEpoch: r.ViewEpoch, ViewSeq: r.ViewSeq, ViewIndex: r.ViewIndex})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Nothing changed; a heartbeat with the same free resources is no change.
	if _, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: "a", Available: cpu(4)}); err != nil {
		t.Fatal(err)
	}
	d := since(full)
	if !d.Delta || len(d.Nodes) != 0 {
		t.Fatalf("nothing changed: delta=%v nodes=%v", d.Delta, nodeIDs(d.Nodes))
	}
	if _, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: "b", Available: cpu(1)}); err != nil {
		t.Fatal(err)
	}
	d2 := since(d)
	if !d2.Delta || !slices.Equal(nodeIDs(d2.Nodes), []string{"b"}) || d2.Nodes[0].Available["CPU"] != 1 {
		t.Fatalf("after b's heartbeat: delta=%v nodes=%v", d2.Delta, d2.Nodes)
	}
	if err := cl.UnregisterNode(ctx, "c", "test"); err != nil {
		t.Fatal(err)
	}
	d3 := since(d2)
	if !d3.Delta || len(d3.Nodes) != 1 || d3.Nodes[0].NodeId != "c" || d3.Nodes[0].State != pb.NodeState_NODE_DEAD {
		t.Fatalf("after c died: delta=%v nodes=%v", d3.Delta, d3.Nodes)
	}
	// A position of another leadership's log: the whole (alive) list.
	other := since(&pb.ListNodesResponse{ViewEpoch: d3.ViewEpoch + 2, ViewSeq: d3.ViewSeq, ViewIndex: d3.ViewIndex})
	if other.Delta || !slices.Equal(nodeIDs(other.Nodes), []string{"a", "b"}) {
		t.Fatalf("foreign epoch: delta=%v nodes=%v", other.Delta, nodeIDs(other.Nodes))
	}
}

// TestWholeViewListsAreRateLimited: view refreshes that want a whole list
// are refused past the leader's budget (ResourceExhausted VIEW_BUSY), and
// other callers' lists never are.
func TestWholeViewListsAreRateLimited(t *testing.T) {
	c := tc.Start(t, 1, nil)
	cl := c.Client()
	ctx := tc.Ctx(t, 30*time.Second)
	if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "a", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	busy := false
	for i := 0; i < 2000 && !busy; i++ {
		_, err := cl.ListNodes(ctx, &pb.ListNodesRequest{AliveOnly: true, View: true})
		switch {
		case errors.Is(err, head.ErrViewBusy):
			busy = true
		case err != nil:
			t.Fatal(err)
		}
	}
	if !busy {
		t.Fatal("2,000 whole view lists back to back were all answered")
	}
	for range 100 {
		if _, err := cl.ListNodes(ctx, &pb.ListNodesRequest{AliveOnly: true}); err != nil {
			t.Fatalf("a list that is not a view refresh: %v", err)
		}
	}
}

// TestHeartbeatFloodIsRefused: past its budget a node's heartbeats are
// refused with ResourceExhausted; other nodes' pass.
func TestHeartbeatFloodIsRefused(t *testing.T) {
	c := tc.Start(t, 1, nil)
	cl := c.Client()
	ctx := tc.Ctx(t, 30*time.Second)
	for _, id := range []string{"flood", "calm"} {
		if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: id, Address: "127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
	}
	refused := false
	for range 1000 {
		_, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: "flood"})
		if errors.Is(err, head.ErrHeartbeatRateLimited) {
			refused = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !refused {
		t.Fatal("1,000 back-to-back heartbeats of one node were all accepted")
	}
	if _, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: "calm"}); err != nil {
		t.Fatalf("another node's heartbeat: %v", err)
	}
}
