package autoscaler

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// eps absorbs float rounding in resource arithmetic.
const eps = 1e-9

// Demand is Count requests of one resource shape.
type Demand struct {
	Shape map[string]float64
	// Labels the node must have (a NODE_LABELS strategy's hard labels).
	Labels map[string]string
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
	Labels   map[string]string
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

// Inside Pack, resources are dense vectors indexed by name (vec) and
// shapes also sparse lists of what they ask (need): fits and takes are
// then a few slice reads, not map lookups, which is most of the work.
type vec []float64

type need struct {
	i int
	v float64
}

type bin struct {
	id       string
	nodeType string
	free     vec
	labels   map[string]string
	fresh    bool // launched by this plan
}

type nodeType struct {
	name   string
	total  vec
	kinds  []int // the resources it has
	labels map[string]string
}

type planner struct {
	index  map[string]int
	types  []nodeType // in order of preference for equal fits
	room   map[string]int
	budget int
	bins   []*bin
	plan   *Plan
	shape  vec // scratch: the shape being placed, dense
}

// Pack places gangs first (they need whole nodes more often), then demands
// largest first, onto bins, then onto new nodes: first fit, and a new node
// of the type that fits with the fewest resource kinds the shape does not
// ask for (no GPU node for CPU work), then the smallest.
func (pk Packer) Pack(bins []Bin, gangs []Gang, demands []Demand) *Plan {
	p := &planner{index: map[string]int{}, room: map[string]int{}, budget: pk.Budget,
		plan: &Plan{Launch: map[string]int{}, Used: map[string]bool{}, Reasons: map[string]string{}}}
	names := func(m map[string]float64) {
		for _, k := range sortedKeys(m) {
			if _, ok := p.index[k]; !ok {
				p.index[k] = len(p.index)
			}
		}
	}
	for _, t := range pk.Types {
		names(t.Resources)
	}
	for _, b := range bins {
		names(b.Free)
	}
	for _, g := range gangs {
		for _, b := range g.Bundles {
			names(b)
		}
	}
	for _, d := range demands {
		names(d.Shape)
	}
	p.shape = make(vec, len(p.index))
	types := append([]NodeType(nil), pk.Types...)
	sort.SliceStable(types, func(a, b int) bool { return size(types[a].Resources) < size(types[b].Resources) })
	for _, t := range types {
		nt := nodeType{name: t.Name, total: p.dense(t.Resources), labels: t.Labels}
		for i, v := range nt.total {
			if v > 0 {
				nt.kinds = append(nt.kinds, i)
			}
		}
		p.types = append(p.types, nt)
	}
	for k, v := range pk.Room {
		p.room[k] = v
	}
	for _, b := range bins {
		p.bins = append(p.bins, &bin{id: b.ID, nodeType: b.NodeType, free: p.dense(b.Free), labels: b.Labels})
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

func (p *planner) dense(m map[string]float64) vec {
	v := make(vec, len(p.index))
	for k, x := range m {
		v[p.index[k]] = x
	}
	return v
}

func (p *planner) sparse(m map[string]float64) []need {
	out := make([]need, 0, len(m))
	for _, k := range sortedKeys(m) {
		if m[k] > 0 {
			out = append(out, need{p.index[k], m[k]})
		}
	}
	return out
}

func (p *planner) demand(d Demand) {
	n := p.sparse(d.Shape)
	for i := 0; i < d.Count; i++ {
		if _, why := p.place(n, d.Shape, d.Labels, nil, d.Source); why != placed {
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
		b *bin
		n []need
	}
	var done []took
	nbins, budget := len(p.bins), p.budget
	launch, room, reasons := maps.Clone(p.plan.Launch), maps.Clone(p.room), maps.Clone(p.plan.Reasons)
	used := map[*bin]bool{}
	for _, shape := range bundles {
		var exclude map[*bin]bool
		if g.Strategy == pb.PlacementStrategy_STRICT_SPREAD {
			exclude = used
		}
		n := p.sparse(shape)
		b, why := p.place(n, shape, nil, exclude, g.Source)
		if why != placed {
			for _, t := range done {
				for _, x := range t.n {
					t.b.free[x.i] += x.v
				}
			}
			p.bins = p.bins[:nbins]
			p.plan.Launch, p.room, p.budget, p.plan.Reasons = launch, room, budget, reasons
			p.miss(Demand{Shape: shape, Count: 1, Source: g.Source}, why)
			return
		}
		used[b] = true
		done = append(done, took{b, n})
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

// place takes the shape n from the first bin it fits (not in exclude),
// else from a new node.
func (p *planner) place(n []need, shape map[string]float64, labels map[string]string, exclude map[*bin]bool, source string) (*bin, outcome) {
	for _, b := range p.bins {
		if !exclude[b] && fitsVec(b.free, n) && hasLabels(b.labels, labels) {
			takeVec(b.free, n)
			if !b.fresh {
				p.plan.Used[b.id] = true
			}
			return b, placed
		}
	}
	for _, x := range n {
		p.shape[x.i] = x.v
	}
	defer func() {
		for _, x := range n {
			p.shape[x.i] = 0
		}
	}()
	var best *nodeType
	bestExtra := 0
	anyFits := false
	for i := range p.types {
		t := &p.types[i]
		if !fitsVec(t.total, n) || !hasLabels(t.labels, labels) {
			continue
		}
		anyFits = true
		if p.room[t.name] <= 0 || p.budget <= 0 {
			continue
		}
		extra := 0
		for _, k := range t.kinds {
			if p.shape[k] == 0 {
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
	p.room[best.name]--
	p.budget--
	p.plan.Launch[best.name]++
	if _, ok := p.plan.Reasons[best.name]; !ok {
		p.plan.Reasons[best.name] = fmt.Sprintf("%s needs {%s}", source, ShapeKey(shape))
	}
	b := &bin{id: fmt.Sprintf("new-%d", len(p.bins)), nodeType: best.name, free: slices.Clone(best.total), labels: best.labels, fresh: true}
	takeVec(b.free, n)
	p.bins = append(p.bins, b)
	return b, placed
}

// hasLabels says whether a node's labels include every wanted one.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func fitsVec(free vec, n []need) bool {
	for _, x := range n {
		if free[x.i]+eps < x.v {
			return false
		}
	}
	return true
}

func takeVec(free vec, n []need) {
	for _, x := range n {
		free[x.i] -= x.v
	}
}

func size(m map[string]float64) float64 {
	s := 0.0
	for _, v := range m {
		s += v
	}
	return s
}

// DemandKey names a shape with the labels it needs.
func DemandKey(shape map[string]float64, labels map[string]string) string {
	k := ShapeKey(shape)
	if len(labels) > 0 {
		k += " on " + LabelsKey(labels)
	}
	return k
}

// LabelsKey is a stable text form of labels ("a=1,b=2").
func LabelsKey(m map[string]string) string {
	var sb strings.Builder
	for i, k := range sortedKeys(m) {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(k + "=" + m[k])
	}
	return sb.String()
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
