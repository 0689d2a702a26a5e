package raylet

import (
	"math/rand/v2"
	"sort"

	"github.com/manta-ray/manta/raylet/resources"
)

// spreadThreshold is the utilisation above which the hybrid policy looks
// for a less-loaded node instead of packing this one (Ray's default 0.5).
const spreadThreshold = 0.5

// spreadAmong is how many of the least-utilised nodes a spill picks from.
const spreadAmong = 3

type placeKind int

const (
	placeWait       placeKind = iota // feasible here: wait for resources
	placeLocal                       // grant a local worker now
	placeSpill                       // send the owner to node
	placeInfeasible                  // no live node could ever run it
	placeFail                        // its strategy can never be met: fail it
)

type placement struct {
	kind placeKind
	node *remoteNode
	// bundle is the placement-group pool a local grant draws from (nil:
	// the node's free pool).
	bundle *bundle
	// err fails the request (placeFail).
	err error
	// spillAny: the target's free resources are not the node's pool (a
	// bundle's), so the view is not debited.
	spillAny bool
}

// placeHybridLocked is the hybrid scheduling policy (Ray's): a request that fits
// here runs here while this node is under spreadThreshold utilisation;
// above it, a less utilised node whose free resources fit is preferred
// (a random one of the spreadAmong least utilised), within MaxSpillHops;
// else it runs here when it fits or waits. A request this node can never
// run goes to a node that fits now, else to one that could, else it is
// infeasible until such a node joins.
func (r *Raylet) placeHybridLocked(q *leaseReq) placement {
	maxHops := int32(r.cfg.MaxSpillHops)
	if r.total.Fits(q.res) {
		fits := r.avail.Fits(q.res)
		util := resources.Utilization(r.total, r.avail, q.res)
		if fits && (util < spreadThreshold || q.req.Hops >= maxHops) {
			return placement{kind: placeLocal}
		}
		if q.req.Hops < maxHops {
			if n := r.pickRemoteLocked(q.res, util); n != nil {
				return placement{kind: placeSpill, node: n}
			}
		}
		if fits {
			return placement{kind: placeLocal}
		}
		return placement{kind: placeWait}
	}
	if n := r.pickRemoteLocked(q.res, 2); n != nil {
		return placement{kind: placeSpill, node: n}
	}
	var feasible []*remoteNode
	for _, v := range r.view {
		if v.total.Fits(q.res) {
			feasible = append(feasible, v)
		}
	}
	if len(feasible) > 0 {
		return placement{kind: placeSpill, node: feasible[rand.IntN(len(feasible))]}
	}
	return placement{kind: placeInfeasible}
}

// pickRemoteLocked picks, among the other nodes whose free resources fit
// req and whose utilisation is below maxUtil, one of the least utilised few
// at random.
func (r *Raylet) pickRemoteLocked(req resources.Set, maxUtil float64) *remoteNode {
	type cand struct {
		n *remoteNode
		u float64
	}
	var cs []cand
	for _, n := range r.view {
		if !n.avail.Fits(req) {
			continue
		}
		if u := resources.Utilization(n.total, n.avail, req); u < maxUtil {
			cs = append(cs, cand{n, u})
		}
	}
	if len(cs) == 0 {
		return nil
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].u < cs[j].u || (cs[i].u == cs[j].u && cs[i].n.id < cs[j].n.id) })
	return cs[rand.IntN(min(len(cs), spreadAmong))].n
}
