package raylet

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// Scheduling strategies (a lease request's SchedulingStrategy) other than
// the default hybrid policy (policy.go). Each decides like the hybrid one:
// grant here, spill to a node, wait, or wait as infeasible; and some can
// fail a request whose strategy can never be met.

// affinityGrace is how long a hard node-affinity request waits for its
// node to appear in the cluster view before it fails: the view lags a
// node's registration by up to ViewInterval, more across a failover.
const affinityGrace = 3 * time.Second

func (r *Raylet) placeLocked(q *leaseReq) placement {
	switch q.req.GetStrategy().GetKind() {
	case cpb.SchedulingStrategy_SPREAD:
		return r.placeSpreadLocked(q)
	case cpb.SchedulingStrategy_NODE_AFFINITY:
		return r.placeAffinityLocked(q)
	case cpb.SchedulingStrategy_NODE_LABELS:
		return r.placeLabelsLocked(q)
	case cpb.SchedulingStrategy_PLACEMENT_GROUP:
		return r.placeInGroupLocked(q)
	}
	return r.placeHybridLocked(q)
}

// placeSpreadLocked is Ray's SPREAD: round-robin over the nodes (this one
// included) whose free resources fit the request. A request another
// raylet spilled here runs here when it fits, so it does not bounce.
func (r *Raylet) placeSpreadLocked(q *leaseReq) placement {
	if q.req.Hops > 0 && r.avail.Fits(q.res) {
		return placement{kind: placeLocal}
	}
	var now []*remoteNode // nil entry: this node
	ids := []string{}
	if r.avail.Fits(q.res) {
		now = append(now, nil)
		ids = append(ids, r.cfg.NodeID)
	}
	var feasible []*remoteNode
	for _, n := range r.view {
		if !n.total.Fits(q.res) {
			continue
		}
		feasible = append(feasible, n)
		if n.avail.Fits(q.res) {
			now = append(now, n)
			ids = append(ids, n.id)
		}
	}
	if len(now) > 0 {
		sort.Sort(byIDs{now, ids})
		n := now[r.rr%len(now)]
		r.rr++
		if n == nil {
			return placement{kind: placeLocal}
		}
		return placement{kind: placeSpill, node: n}
	}
	if r.total.Fits(q.res) || q.req.Hops >= int32(r.cfg.MaxSpillHops) {
		return placement{kind: placeWait}
	}
	if len(feasible) > 0 {
		return placement{kind: placeSpill, node: feasible[rand.IntN(len(feasible))]}
	}
	return placement{kind: placeInfeasible}
}

// byIDs sorts candidate nodes by ID, so the round-robin order is stable.
type byIDs struct {
	n   []*remoteNode
	ids []string
}

func (b byIDs) Len() int           { return len(b.n) }
func (b byIDs) Less(i, j int) bool { return b.ids[i] < b.ids[j] }
func (b byIDs) Swap(i, j int) {
	b.n[i], b.n[j] = b.n[j], b.n[i]
	b.ids[i], b.ids[j] = b.ids[j], b.ids[i]
}

// placeAffinityLocked runs the request on the node it names. Hard: it
// waits there for resources, and fails when that node is dead (absent
// from the view after affinityGrace) or can never fit it. Soft: when the
// node is dead, cannot fit it, or is busy, the hybrid policy decides.
func (r *Raylet) placeAffinityLocked(q *leaseReq) placement {
	s := q.req.Strategy
	if s.NodeId == r.cfg.NodeID {
		switch {
		case r.avail.Fits(q.res):
			return placement{kind: placeLocal}
		case r.total.Fits(q.res) && !s.Soft:
			return placement{kind: placeWait}
		case s.Soft:
			return r.placeHybridLocked(q)
		}
		return placement{kind: placeFail, err: rpcerr.Wrapf(ErrUnschedulable,
			"node affinity: node %s can never fit the request %v (it has %v)", s.NodeId, q.res, r.total)}
	}
	if n := r.view[s.NodeId]; n != nil {
		switch {
		case n.total.Fits(q.res) && (!s.Soft || n.avail.Fits(q.res)):
			return placement{kind: placeSpill, node: n}
		case s.Soft:
			return r.placeHybridLocked(q)
		}
		return placement{kind: placeFail, err: rpcerr.Wrapf(ErrUnschedulable,
			"node affinity: node %s can never fit the request %v (it has %v)", s.NodeId, q.res, n.total)}
	}
	if s.Soft {
		return r.placeHybridLocked(q)
	}
	if time.Since(q.arrived) < affinityGrace {
		return placement{kind: placeWait}
	}
	return placement{kind: placeFail, err: rpcerr.Wrapf(ErrUnschedulable, "node affinity: node %s is dead or unknown", s.NodeId)}
}

// placeLabelsLocked runs the request on a node whose labels match the
// hard selector, preferring those that match the soft one; among them the
// hybrid preference holds (here if it fits, else the least utilised node
// that fits now). No alive node with the labels: it waits as infeasible.
func (r *Raylet) placeLabelsLocked(q *leaseReq) placement {
	s := q.req.Strategy
	selfOK := r.total.Fits(q.res) && resources.LabelsMatch(r.cfg.Labels, s.HardLabels)
	var cands []*remoteNode
	for _, n := range r.view {
		if n.total.Fits(q.res) && resources.LabelsMatch(n.labels, s.HardLabels) {
			cands = append(cands, n)
		}
	}
	if !selfOK && len(cands) == 0 {
		return placement{kind: placeInfeasible}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].id < cands[j].id })
	tiers := [][]*remoteNode{cands}
	selfTier := []bool{selfOK}
	if len(s.SoftLabels) > 0 {
		var pref []*remoteNode
		for _, n := range cands {
			if resources.LabelsMatch(n.labels, s.SoftLabels) {
				pref = append(pref, n)
			}
		}
		tiers = [][]*remoteNode{pref, cands}
		selfTier = []bool{selfOK && resources.LabelsMatch(r.cfg.Labels, s.SoftLabels), selfOK}
	}
	canSpill := q.req.Hops < int32(r.cfg.MaxSpillHops)
	for i, tier := range tiers {
		if selfTier[i] && r.avail.Fits(q.res) {
			return placement{kind: placeLocal}
		}
		if !canSpill {
			continue
		}
		var best *remoteNode
		bestU := 2.0
		for _, n := range tier {
			if !n.avail.Fits(q.res) {
				continue
			}
			if u := resources.Utilization(n.total, n.avail, q.res); u < bestU {
				best, bestU = n, u
			}
		}
		if best != nil {
			return placement{kind: placeSpill, node: best}
		}
	}
	if selfOK || !canSpill {
		return placement{kind: placeWait}
	}
	return placement{kind: placeSpill, node: cands[rand.IntN(len(cands))]}
}
