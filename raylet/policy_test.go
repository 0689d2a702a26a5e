package raylet

import (
	"testing"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

func TestPlacement(t *testing.T) {
	cpu := func(n float64) resources.Set { return resources.Set{resources.CPU: n} }
	node := func(id string, total, avail resources.Set) *remoteNode {
		return &remoteNode{id: id, address: id + ":1", total: total, avail: avail}
	}
	for _, tc := range []struct {
		name         string
		total, avail resources.Set
		view         []*remoteNode
		req          resources.Set
		hops         int32
		want         placeKind
		wantNode     string
	}{
		{"idle node runs it here", cpu(4), cpu(4), []*remoteNode{node("b", cpu(4), cpu(4))}, cpu(1), 0, placeLocal, ""},
		{"busy node spills to an idler one", cpu(4), cpu(1), []*remoteNode{node("b", cpu(4), cpu(4))}, cpu(1), 0, placeSpill, "b"},
		{"busy node keeps it when others are busier", cpu(4), cpu(1), []*remoteNode{node("b", cpu(4), cpu(0.5))}, cpu(1), 0, placeLocal, ""},
		{"full node waits when nobody fits", cpu(2), cpu(0), []*remoteNode{node("b", cpu(2), cpu(0))}, cpu(1), 0, placeWait, ""},
		{"hop bound keeps it here", cpu(4), cpu(1), []*remoteNode{node("b", cpu(4), cpu(4))}, cpu(1), 4, placeLocal, ""},
		{"custom resource only elsewhere", cpu(4), cpu(4),
			[]*remoteNode{node("b", cpu(4), cpu(4)), node("c", resources.Set{"CPU": 1, "special": 1}, resources.Set{"CPU": 0, "special": 1})},
			resources.Set{"CPU": 1, "special": 1}, 0, placeSpill, "c"},
		{"nobody can ever run it", cpu(4), cpu(4), []*remoteNode{node("b", cpu(8), cpu(8))}, cpu(16), 0, placeInfeasible, ""},
		{"zero-CPU task fits anywhere", cpu(1), cpu(0), nil, resources.Set{}, 0, placeLocal, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Raylet{cfg: Config{MaxSpillHops: 4}, total: tc.total, avail: tc.avail, view: map[string]*remoteNode{}}
			for _, n := range tc.view {
				r.view[n.id] = n
			}
			q := &leaseReq{req: &pb.LeaseRequest{Hops: tc.hops}, res: tc.req}
			p := r.placeLocked(q)
			if p.kind != tc.want {
				t.Fatalf("placement %v; want %v", p.kind, tc.want)
			}
			if tc.wantNode != "" && (p.node == nil || p.node.id != tc.wantNode) {
				t.Fatalf("spilled to %v; want %s", p.node, tc.wantNode)
			}
		})
	}
}
