package head

import (
	"errors"
	"slices"
	"testing"

	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/raylet/resources"
)

func TestAssignBundles(t *testing.T) {
	cpu := func(n float64) resources.Set { return resources.Set{resources.CPU: n} }
	group := func(s cpb.PlacementStrategy, placed []string, cpus ...float64) *cpb.PlacementGroupInfo {
		g := &cpb.PlacementGroupInfo{Strategy: s}
		for i, c := range cpus {
			b := &cpb.Bundle{Resources: cpu(c)}
			if i < len(placed) {
				b.NodeId = placed[i]
			}
			g.Bundles = append(g.Bundles, b)
		}
		return g
	}
	three := map[string]resources.Set{"a": cpu(4), "b": cpu(4), "c": cpu(2)}
	for _, tc := range []struct {
		name string
		g    *cpb.PlacementGroupInfo
		have map[string]resources.Set
		want []string // nil: cannot be placed
	}{
		{"strict pack on the first node that holds all", group(cpb.PlacementStrategy_STRICT_PACK, nil, 2, 2), three, []string{"a", "a"}},
		{"strict pack too big for any node", group(cpb.PlacementStrategy_STRICT_PACK, nil, 3, 3), three, nil},
		{"pack falls back to several nodes", group(cpb.PlacementStrategy_PACK, nil, 3, 3), three, []string{"a", "b"}},
		{"strict spread on distinct nodes", group(cpb.PlacementStrategy_STRICT_SPREAD, nil, 1, 1, 1), three, []string{"a", "b", "c"}},
		{"strict spread with more bundles than nodes", group(cpb.PlacementStrategy_STRICT_SPREAD, nil, 1, 1, 1, 1), three, nil},
		{"spread shares nodes when it must", group(cpb.PlacementStrategy_SPREAD, nil, 1, 1, 1, 1), three, []string{"a", "b", "c", "a"}},
		{"a reschedule keeps placed bundles and avoids their nodes", group(cpb.PlacementStrategy_STRICT_SPREAD, []string{"a", ""}, 1, 1), three, []string{"a", "b"}},
		{"a bundle no node fits", group(cpb.PlacementStrategy_SPREAD, nil, 8), three, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := assignBundles(tc.g, tc.have)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("assigned %v; want %v", got, tc.want)
			}
		})
	}
}

func TestCheckPlacementGroupRefusesBadInput(t *testing.T) {
	ok := func() *cpb.PlacementGroupInfo {
		return &cpb.PlacementGroupInfo{JobId: "00000001", Strategy: cpb.PlacementStrategy_PACK,
			Bundles: []*cpb.Bundle{{Resources: map[string]float64{"CPU": 1}}}}
	}
	if err := checkPlacementGroup(ok()); err != nil {
		t.Fatalf("a good group: %v", err)
	}
	for name, edit := range map[string]func(g *cpb.PlacementGroupInfo){
		"no bundles":          func(g *cpb.PlacementGroupInfo) { g.Bundles = nil },
		"an empty bundle":     func(g *cpb.PlacementGroupInfo) { g.Bundles[0].Resources = nil },
		"a zero quantity":     func(g *cpb.PlacementGroupInfo) { g.Bundles[0].Resources["CPU"] = 0 },
		"a negative quantity": func(g *cpb.PlacementGroupInfo) { g.Bundles[0].Resources["GPU"] = -1 },
		"an unknown strategy": func(g *cpb.PlacementGroupInfo) { g.Strategy = 9 },
		"no strategy":         func(g *cpb.PlacementGroupInfo) { g.Strategy = 0 },
		"no job":              func(g *cpb.PlacementGroupInfo) { g.JobId = "" },
	} {
		g := ok()
		edit(g)
		if err := checkPlacementGroup(g); !errors.Is(err, rpcerr.ErrInvalidArgument) {
			t.Errorf("%s: %v; want InvalidArgument", name, err)
		}
	}
}
