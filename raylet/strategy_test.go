package raylet

import (
	"errors"
	"testing"
	"time"

	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

func TestStrategyPlacement(t *testing.T) {
	cpu := func(n float64) resources.Set { return resources.Set{resources.CPU: n} }
	node := func(id string, avail float64, labels map[string]string) *remoteNode {
		return &remoteNode{id: id, address: id + ":1", total: cpu(4), avail: cpu(avail), labels: labels}
	}
	newRaylet := func() *Raylet {
		r := &Raylet{cfg: Config{NodeID: "a", MaxSpillHops: 4, Labels: map[string]string{"zone": "a"}}, total: cpu(4), avail: cpu(4),
			view: map[string]*remoteNode{}, bundles: map[bundleKey]*bundle{}, groups: map[string]*groupView{}}
		for _, n := range []*remoteNode{node("b", 4, map[string]string{"zone": "b"}), node("c", 0, map[string]string{"zone": "c", "gpu": "yes"})} {
			r.view[n.id] = n
		}
		return r
	}
	req := func(s *cpb.SchedulingStrategy, res resources.Set) *leaseReq {
		return &leaseReq{req: &pb.LeaseRequest{Strategy: s}, res: res, arrived: time.Now()}
	}
	affinity := func(id string, soft bool) *cpb.SchedulingStrategy {
		return &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_NODE_AFFINITY, NodeId: id, Soft: soft}
	}
	labels := func(hard, soft map[string]string) *cpb.SchedulingStrategy {
		return &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_NODE_LABELS, HardLabels: hard, SoftLabels: soft}
	}

	t.Run("spread goes round-robin over the nodes that fit now", func(t *testing.T) {
		r := newRaylet()
		var got []string
		for range 4 {
			p := r.placeLocked(req(&cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_SPREAD}, cpu(1)))
			switch p.kind {
			case placeLocal:
				got = append(got, "a")
			case placeSpill:
				got = append(got, p.node.id)
			default:
				t.Fatalf("placement %v", p.kind)
			}
		}
		// c is full: a and b alternate.
		if got[0] == got[1] || got[0] != got[2] || got[1] != got[3] {
			t.Fatalf("spread placed %v", got)
		}
	})
	for _, tc := range []struct {
		name     string
		q        *leaseReq
		want     placeKind
		wantNode string
	}{
		{"hard affinity here", req(affinity("a", false), cpu(1)), placeLocal, ""},
		{"hard affinity elsewhere spills there even when it is busy", req(affinity("c", false), cpu(1)), placeSpill, "c"},
		{"hard affinity to a node too small fails", req(affinity("b", false), cpu(8)), placeFail, ""},
		{"hard affinity to an unknown node waits for the view a while", req(affinity("x", false), cpu(1)), placeWait, ""},
		{"soft affinity to a busy node runs elsewhere", req(affinity("c", true), cpu(1)), placeLocal, ""},
		{"soft affinity to an unknown node runs elsewhere", req(affinity("x", true), cpu(1)), placeLocal, ""},
		{"hard labels elsewhere", req(labels(map[string]string{"zone": "b"}, nil), cpu(1)), placeSpill, "b"},
		{"hard labels here", req(labels(map[string]string{"zone": "a"}, nil), cpu(1)), placeLocal, ""},
		{"hard labels on a busy node wait there", req(labels(map[string]string{"gpu": "yes"}, nil), cpu(1)), placeSpill, "c"},
		{"hard labels nobody has are infeasible", req(labels(map[string]string{"zone": "z"}, nil), cpu(1)), placeInfeasible, ""},
		{"soft labels prefer their node", req(labels(nil, map[string]string{"zone": "b"}), cpu(1)), placeSpill, "b"},
		{"soft labels nobody has run anywhere", req(labels(nil, map[string]string{"zone": "z"}), cpu(1)), placeLocal, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newRaylet().placeLocked(tc.q)
			if p.kind != tc.want {
				t.Fatalf("placement %v (%v); want %v", p.kind, p.err, tc.want)
			}
			if tc.wantNode != "" && (p.node == nil || p.node.id != tc.wantNode) {
				t.Fatalf("spilled to %v; want %s", p.node, tc.wantNode)
			}
			if p.kind == placeFail && !errors.Is(p.err, ErrUnschedulable) {
				t.Fatalf("failed with %v; want ErrUnschedulable", p.err)
			}
		})
	}
	t.Run("hard affinity to a node absent past the grace fails", func(t *testing.T) {
		q := req(affinity("x", false), cpu(1))
		q.arrived = time.Now().Add(-2 * affinityGrace)
		if p := newRaylet().placeLocked(q); p.kind != placeFail || !errors.Is(p.err, ErrUnschedulable) {
			t.Fatalf("placement %v, %v; want it failed", p.kind, p.err)
		}
	})

	t.Run("placement groups", func(t *testing.T) {
		pg := func(i int32) *cpb.SchedulingStrategy {
			return &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_PLACEMENT_GROUP, PlacementGroupId: "g", BundleIndex: i}
		}
		r := newRaylet()
		// Bundle 0 here (committed), bundle 1 on b.
		b0 := &bundle{key: bundleKey{"g", 0}, total: cpu(2), avail: cpu(2), committed: true}
		r.bundles[b0.key] = b0
		r.avail = cpu(2)
		r.groups["g"] = &groupView{bundles: []bundleView{{res: cpu(2), node: "a"}, {res: cpu(1), node: "b"}}}
		if p := r.placeLocked(req(pg(0), cpu(2))); p.kind != placeLocal || p.bundle != b0 {
			t.Fatalf("bundle 0: %v %v; want it granted from the local bundle", p.kind, p.bundle)
		}
		if p := r.placeLocked(req(pg(1), cpu(1))); p.kind != placeSpill || p.node.id != "b" {
			t.Fatalf("bundle 1: %v %v; want a spill to b", p.kind, p.node)
		}
		if p := r.placeLocked(req(pg(1), cpu(2))); p.kind != placeFail {
			t.Fatalf("more than bundle 1 holds: %v; want it failed", p.kind)
		}
		b0.avail = cpu(0)
		if p := r.placeLocked(req(pg(0), cpu(1))); p.kind != placeWait {
			t.Fatalf("bundle 0 busy: %v; want a wait", p.kind)
		}
		if p := r.placeLocked(req(pg(-1), cpu(1))); p.kind != placeWait {
			t.Fatalf("any bundle, the local one busy: %v; want a wait for it", p.kind)
		}
		r.groups["g"].removed = true
		delete(r.bundles, b0.key)
		if p := r.placeLocked(req(pg(1), cpu(1))); p.kind != placeFail {
			t.Fatalf("a removed group: %v; want it failed", p.kind)
		}
	})
}
