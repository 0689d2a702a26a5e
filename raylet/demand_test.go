package raylet

import (
	"testing"
	"time"

	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// The demand a raylet reports to the autoscaler: per owner and shape its
// latest backlog (else its queued requests); requests only a
// placement group's bundle or one node can serve are not demand; hard
// node labels travel with the shape.
func TestDemandSumsWaitingRequestsByShape(t *testing.T) {
	now := time.Now()
	q := func(owner string, backlog int32, res map[string]float64, st *cpb.SchedulingStrategy, age time.Duration, infeasible bool) *leaseReq {
		return &leaseReq{req: &pb.LeaseRequest{OwnerAddress: owner, Backlog: backlog, Strategy: st}, res: resources.Set(res),
			arrived: now.Add(-age), infeasible: infeasible}
	}
	big := map[string]float64{"CPU": 1, "big": 1}
	r := &Raylet{queue: []*leaseReq{
		q("a", 1, big, nil, 2*time.Second, true),
		q("a", 5, big, nil, time.Second, true), // a's latest backlog: 5 tasks
		q("b", 0, big, nil, time.Second, false),
		q("e", 1, big, nil, 2*time.Second, false), // two requests for its one task
		q("e", 1, big, nil, time.Second, false),
		q("c", 9, big, &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_PLACEMENT_GROUP, PlacementGroupId: "g"}, 0, false),
		q("c", 9, big, &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_NODE_AFFINITY, NodeId: "n9"}, 0, false),
		q("d", 0, map[string]float64{"CPU": 1}, &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_NODE_LABELS, HardLabels: map[string]string{"zone": "b"}}, 0, true),
	}}
	got, sig := r.demandLocked()
	if len(got) != 2 {
		t.Fatalf("demand %v", got)
	}
	var shape, labelled *cpb.ResourceDemand
	for _, d := range got {
		if len(d.Labels) > 0 {
			labelled = d
		} else {
			shape = d
		}
	}
	if shape.Count != 7 || !shape.Infeasible || shape.Shape["big"] != 1 {
		t.Fatalf("big demand %v: want 5 (a's backlog) + 1 (b's request) + 1 (e's backlog), infeasible", shape)
	}
	if labelled.Count != 1 || labelled.Labels["zone"] != "b" {
		t.Fatalf("labelled demand %v", labelled)
	}
	r.queue = r.queue[:1]
	if _, sig2 := r.demandLocked(); sig2 == sig {
		t.Fatal("the signature did not change with the demand")
	}
}
