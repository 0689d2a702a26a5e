package autoscaler

import (
	"fmt"
	"sort"
	"strings"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// eps absorbs float rounding in resource arithmetic.
const eps = 1e-9

// Demand is Count requests of one resource shape.
type Demand struct {
	Shape  map[string]float64
	Count  int
	Source string
}

// Gang is a placement group's bundles: they are placed together or not at
// all (STRICT_SPREAD: each on its own node; STRICT_PACK: all on one).
type Gang struct {
	Bundles  []map[string]float64
	Strategy pb.PlacementStrategy
	Source   string
}

// Bin is a node's room while planning: an alive node (its free or its
// total resources), a pending launch (its type's resources) or a node the
// plan launches.
type Bin struct {
	ID       string
	NodeType string // "" for a node the autoscaler did not launch
	Free     map[string]float64
}

// Plan is what the bin-packer decided.
type Plan struct {
	// Launch is how many nodes of each type to launch.
	Launch map[string]int
	// Infeasible demand fits no node type at all.
	Infeasible []Demand
	// Unmet demand fits a node type, but limits (max_count, max_nodes,
	// upscaling speed, launch backoff) kept it from launching now.
	Unmet []Demand
	// Used names the given bins that received demand.
	Used map[string]bool
	// Reasons says, per launched type, the first demand that needed it.
	Reasons map[string]string
}

// Packer bin-packs demand onto existing bins and new nodes. Room says how
// many nodes of each type may still launch and Budget how many in all.
type Packer struct {
	Types  []NodeType
	Room   map[string]int
	Budget int
}

type bin struct {
	id       string
	nodeType string
	free     map[string]float64
	fresh    bool // launched by this plan
}

type planner struct {
	types  []*NodeType // in order of preference for equal fits
	room   map[string]int
	budget int
	bins   []*bin
	plan   *Plan
}

// Pack places gangs first (they need whole nodes more often), then demands
// largest first, onto bins, then onto new nodes: first fit, and a new node
// of the type that fits with the fewest resource kinds the shape does not
// ask for (no GPU node for CPU work), then the smallest.
func (pk Packer) Pack(bins []Bin, gangs []Gang, demands []Demand) *Plan {
	p := &planner{room: map[string]int{}, budget: pk.Budget, plan: &Plan{Launch: map[string]int{}, Used: map[string]bool{}, Reasons: map[string]string{}}}
	for i := range pk.Types {
		p.types = append(p.types, &pk.Types[i])
	}
	sort.SliceStable(p.types, func(a, b int) bool { return size(p.types[a].Resources) < size(p.types[b].Resources) })
	for k, v := range pk.Room {
		p.room[k] = v
	}
	for _, b := range bins {
		p.bins = append(p.bins, &bin{id: b.ID, nodeType: b.NodeType, free: clone(b.Free)})
	}
	for _, g := range gangs {
		p.gang(g)
	}
	ds := append([]Demand(nil), demands...)
	sort.SliceStable(ds, func(a, b int) bool { return size(ds[a].Shape) > size(ds[b].Shape) })
	for _, d := range ds {
		p.demand(d)
	}
	return p.plan
}

func (p *planner) demand(d Demand) {
	for i := 0; i < d.Count; i++ {
		if _, why := p.place(d.Shape, nil, d.Source); why != placed {
			rest := d
			rest.Count = d.Count - i
			p.miss(rest, why)
			return
		}
	}
}

func (p *planner) gang(g Gang) {
	bundles := g.Bundles
	if g.Strategy == pb.PlacementStrategy_STRICT_PACK {
		sum := map[string]float64{}
		for _, b := range bundles {
			for k, v := range b {
				sum[k] += v
			}
		}
		bundles = []map[string]float64{sum}
	}
	// Undo everything if one bundle cannot be placed: half a group is no
	// use, and nodes launched for it would idle.
	type took struct {
		b     *bin
		shape map[string]float64
	}
	var done []took
	nbins, launch, room, budget := len(p.bins), clone(intsToFloats(p.plan.Launch)), clone(intsToFloats(p.room)), p.budget
	used := map[*bin]bool{}
	for _, shape := range bundles {
		var exclude map[*bin]bool
		if g.Strategy == pb.PlacementStrategy_STRICT_SPREAD {
			exclude = used
		}
		b, why := p.place(shape, exclude, g.Source)
		if why != placed {
			for _, t := range done {
				for k, v := range t.shape {
					t.b.free[k] += v
				}
			}
			p.bins = p.bins[:nbins]
			p.plan.Launch, p.room, p.budget = floatsToInts(launch), floatsToInts(room), budget
			p.miss(Demand{Shape: shape, Count: 1, Source: g.Source}, why)
			return
		}
		used[b] = true
		done = append(done, took{b, shape})
	}
	for _, t := range done {
		if !t.b.fresh {
			p.plan.Used[t.b.id] = true
		}
	}
}

type outcome int

const (
	placed  outcome = iota
	noType          // no node type can hold the shape
	limited         // a type could, but may not launch now
)

func (p *planner) miss(d Demand, why outcome) {
	if why == noType {
		p.plan.Infeasible = append(p.plan.Infeasible, d)
	} else {
		p.plan.Unmet = append(p.plan.Unmet, d)
	}
}

// place takes shape from the first bin it fits (not in exclude), else from
// a new node.
func (p *planner) place(shape map[string]float64, exclude map[*bin]bool, source string) (*bin, outcome) {
	for _, b := range p.bins {
		if !exclude[b] && fits(b.free, shape) {
			take(b.free, shape)
			if !b.fresh {
				p.plan.Used[b.id] = true
			}
			return b, placed
		}
	}
	var best *NodeType
	bestExtra := 0
	anyFits := false
	for _, t := range p.types {
		if !fits(t.Resources, shape) {
			continue
		}
		anyFits = true
		if p.room[t.Name] <= 0 || p.budget <= 0 {
			continue
		}
		extra := 0
		for k := range t.Resources {
			if shape[k] == 0 {
				extra++
			}
		}
		if best == nil || extra < bestExtra {
			best, bestExtra = t, extra
		}
	}
	if best == nil {
		if anyFits {
			return nil, limited
		}
		return nil, noType
	}
	p.room[best.Name]--
	p.budget--
	p.plan.Launch[best.Name]++
	if _, ok := p.plan.Reasons[best.Name]; !ok {
		p.plan.Reasons[best.Name] = fmt.Sprintf("%s needs {%s}", source, ShapeKey(shape))
	}
	b := &bin{id: fmt.Sprintf("new-%d", len(p.bins)), nodeType: best.Name, free: clone(best.Resources), fresh: true}
	take(b.free, shape)
	p.bins = append(p.bins, b)
	return b, placed
}

func fits(free, shape map[string]float64) bool {
	for k, v := range shape {
		if v > 0 && free[k]+eps < v {
			return false
		}
	}
	return true
}

func take(free, shape map[string]float64) {
	for k, v := range shape {
		free[k] -= v
	}
}

func size(m map[string]float64) float64 {
	s := 0.0
	for _, v := range m {
		s += v
	}
	return s
}

func clone(m map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func intsToFloats(m map[string]int) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = float64(v)
	}
	return out
}

func floatsToInts(m map[string]float64) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

// ShapeKey is a stable text form of a resource shape ("CPU=1,big=1").
func ShapeKey(m map[string]float64) string {
	var sb strings.Builder
	for i, k := range sortedKeys(m) {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%s=%g", k, m[k])
	}
	return sb.String()
}
