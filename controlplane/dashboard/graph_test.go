package dashboard

import (
	"strings"
	"testing"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func record(t ids.TaskID, fn string, args ...ids.ObjectID) *pb.TaskRecord {
	r := &pb.TaskRecord{TaskId: append([]byte(nil), t[:]...), Function: fn, NumReturns: 1, State: pb.TaskState_TASK_FINISHED}
	for _, a := range args {
		r.Args = append(r.Args, &pb.LineageArg{ObjectId: append([]byte(nil), a[:]...)})
	}
	return r
}

// TestGraphLayers: a diamond (d reads b and c, which both read a, and d
// also reads a directly) puts a in the deepest layer its longest path
// gives, once; an evicted producer and a Put object are drawn as such.
func TestGraphLayers(t *testing.T) {
	task := func(i uint64) ids.TaskID { return ids.NewTaskID("j", ids.TaskID{}, i) }
	a, b, c, d, gone := task(1), task(2), task(3), task(4), task(5)
	oa, ob, oc, od := ids.ReturnID(a, 1), ids.ReturnID(b, 1), ids.ReturnID(c, 1), ids.ReturnID(d, 1)
	put := ids.PutID(task(9), 1)
	og := ids.ReturnID(gone, 1)
	resp := &pb.GetLineageResponse{
		Records: []*pb.TaskRecord{
			record(d, "d", ob, oc, oa),
			record(b, "b", oa),
			record(c, "c", oa, put, og),
			record(a, "a"),
		},
		EvictedTaskIds: [][]byte{append([]byte(nil), gone[:]...)},
	}
	g := buildGraph(od, resp)
	layer := func(key string) int {
		t.Helper()
		n := g.nodes[key]
		if n == nil {
			t.Fatalf("no node %s", key)
		}
		return n.layer
	}
	for key, want := range map[string]int{
		"o" + od.String(): 0, "t" + d.String(): 1, "o" + ob.String(): 2, "t" + b.String(): 3,
		"o" + oa.String(): 4, "t" + a.String(): 5, "o" + put.String(): 4, "t" + gone.String(): 5,
	} {
		if got := layer(key); got != want {
			t.Errorf("%s (%s) in layer %d; want %d", key[:1], g.nodes[key].label[0], got, want)
		}
	}
	// Each object and task once; each data edge once.
	if len(g.nodes) != 11 {
		t.Errorf("%d nodes; want 11 (5 tasks, 6 objects)", len(g.nodes))
	}
	svg := g.svg()
	if n := strings.Count(svg, `class="edge"`); n != len(g.edges) || n != 12 {
		t.Errorf("%d edges drawn, %d in the graph; want 12", n, len(g.edges))
	}
	for _, want := range []string{"lineage evicted", "made by Put", `class="gnode obj root"`, `class="gnode obj put"`, `class="gnode task gone"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q", want)
		}
	}
	// No two nodes in one place.
	seen := map[[2]int]string{}
	for k, n := range g.nodes {
		x, y := g.pos(n)
		if o, ok := seen[[2]int{x, y}]; ok {
			t.Errorf("%s and %s both at %d,%d", k, o, x, y)
		}
		seen[[2]int{x, y}] = k
	}
}
