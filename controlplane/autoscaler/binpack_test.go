package autoscaler

import (
	"fmt"
	"testing"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

var testTypes = []NodeType{
	{Name: "cpu", Resources: map[string]float64{"CPU": 4}, MaxCount: 10},
	{Name: "gpu", Resources: map[string]float64{"CPU": 4, "GPU": 1}, MaxCount: 10},
	{Name: "big", Resources: map[string]float64{"CPU": 1, "big": 1}, MaxCount: 10},
}

func room(n int) map[string]int {
	return map[string]int{"cpu": n, "gpu": n, "big": n}
}

func TestPackChoosesTheTypeThatFitsWithoutExtras(t *testing.T) {
	p := Packer{Types: testTypes, Room: room(10), Budget: 10}.Pack(nil, nil, []Demand{
		{Shape: map[string]float64{"CPU": 1}, Count: 6},
		{Shape: map[string]float64{"big": 1}, Count: 1},
	})
	if p.Launch["cpu"] != 2 || p.Launch["big"] != 1 || p.Launch["gpu"] != 0 {
		t.Fatalf("launch = %v, want 2 cpu (6 CPUs of demand on 4-CPU nodes), 1 big, no gpu", p.Launch)
	}
}

func TestPackUsesExistingRoomFirst(t *testing.T) {
	bins := []Bin{{ID: "n1", Free: map[string]float64{"CPU": 2}}}
	p := Packer{Types: testTypes, Room: room(10), Budget: 10}.Pack(bins, nil, []Demand{{Shape: map[string]float64{"CPU": 1}, Count: 2}})
	if len(p.Launch) != 0 || !p.Used["n1"] {
		t.Fatalf("plan = %+v, want nothing launched and n1 used", p)
	}
}

func TestPackStrictSpreadNeedsANodePerBundle(t *testing.T) {
	bins := []Bin{{ID: "head", Free: map[string]float64{"CPU": 8}}}
	g := Gang{Strategy: pb.PlacementStrategy_STRICT_SPREAD, Bundles: []map[string]float64{{"CPU": 1}, {"CPU": 1}, {"CPU": 1}}}
	p := Packer{Types: testTypes, Room: room(10), Budget: 10}.Pack(bins, []Gang{g}, nil)
	if p.Launch["cpu"] != 2 {
		t.Fatalf("launch = %v, want 2 cpu nodes (one bundle fits the head)", p.Launch)
	}
	// STRICT_PACK: all on one node.
	g.Strategy = pb.PlacementStrategy_STRICT_PACK
	g.Bundles = []map[string]float64{{"CPU": 2}, {"CPU": 2}, {"CPU": 2}}
	p = Packer{Types: testTypes, Room: room(10), Budget: 10}.Pack(bins, []Gang{g}, nil)
	if len(p.Launch) != 0 || !p.Used["head"] {
		t.Fatalf("plan = %+v, want the 6 CPUs packed on the head", p)
	}
}

func TestPackGangIsAllOrNothing(t *testing.T) {
	g := Gang{Strategy: pb.PlacementStrategy_STRICT_SPREAD, Bundles: []map[string]float64{{"CPU": 1}, {"CPU": 1}, {"CPU": 1}}}
	p := Packer{Types: testTypes, Room: map[string]int{"cpu": 2}, Budget: 10}.Pack(nil, []Gang{g}, nil)
	if len(p.Launch) != 0 || len(p.Unmet) != 1 {
		t.Fatalf("plan = %+v, want no launch (2 of 3 nodes are no use) and the group unmet", p)
	}
}

func TestPackReportsInfeasibleAndLimited(t *testing.T) {
	p := Packer{Types: testTypes, Room: map[string]int{"cpu": 1}, Budget: 10}.Pack(nil, nil, []Demand{
		{Shape: map[string]float64{"TPU": 1}, Count: 2},
		{Shape: map[string]float64{"CPU": 4}, Count: 3},
	})
	if p.Launch["cpu"] != 1 {
		t.Fatalf("launch = %v, want the 1 cpu node max_count allows", p.Launch)
	}
	if len(p.Infeasible) != 1 || p.Infeasible[0].Count != 2 || len(p.Unmet) != 1 || p.Unmet[0].Count != 2 {
		t.Fatalf("infeasible %+v unmet %+v", p.Infeasible, p.Unmet)
	}
}

// BenchmarkPack is the bin-packer on 1,000 pending shapes and 100 node
// types; decisions/s is shapes placed per second.
func BenchmarkPack(b *testing.B) {
	var types []NodeType
	for i := range 100 {
		types = append(types, NodeType{Name: fmt.Sprint("t", i), MaxCount: 1000,
			Resources: map[string]float64{"CPU": float64(1 + i%16), fmt.Sprint("r", i%10): 4, "memory": float64(1+i%8) * 1e9}})
	}
	var demands []Demand
	for i := range 1000 {
		demands = append(demands, Demand{Count: 1, Shape: map[string]float64{"CPU": float64(1 + i%4), fmt.Sprint("r", i%10): 1, "memory": 5e8}})
	}
	rm := map[string]int{}
	for _, t := range types {
		rm[t.Name] = 1000
	}
	pk := Packer{Types: types, Room: rm, Budget: 100000}
	b.ResetTimer()
	for range b.N {
		p := pk.Pack(nil, nil, demands)
		if len(p.Launch) == 0 {
			b.Fatal("nothing launched")
		}
	}
	b.ReportMetric(float64(b.N*len(demands))/b.Elapsed().Seconds(), "decisions/s")
}

// A task that needs node labels goes only to a node, or a node type, that
// has them; none does: it is infeasible, and nothing is launched for it.
func TestPackMatchesLabels(t *testing.T) {
	types := append([]NodeType{{Name: "zoned", Resources: map[string]float64{"CPU": 4}, Labels: map[string]string{"zone": "b"}, MaxCount: 2}}, testTypes...)
	bins := []Bin{{ID: "n1", Free: map[string]float64{"CPU": 4}, Labels: map[string]string{"zone": "a"}}}
	p := Packer{Types: types, Room: map[string]int{"zoned": 2, "cpu": 2}, Budget: 10}.Pack(bins, nil, []Demand{
		{Shape: map[string]float64{"CPU": 1}, Labels: map[string]string{"zone": "b"}, Count: 1},
		{Shape: map[string]float64{"CPU": 1}, Labels: map[string]string{"zone": "a"}, Count: 1},
		{Shape: map[string]float64{"CPU": 1}, Labels: map[string]string{"zone": "c"}, Count: 1},
	})
	if p.Launch["zoned"] != 1 || p.Launch["cpu"] != 0 || !p.Used["n1"] || len(p.Infeasible) != 1 {
		t.Fatalf("plan %+v: want zone b on a new zoned node, zone a on n1, zone c infeasible", p)
	}
}
