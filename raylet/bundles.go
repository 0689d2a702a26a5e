package raylet

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// A placement-group bundle is a pool of the node's resources set aside for
// one bundle of a group: the leader prepares it (the resources leave the
// node's free pool), then commits it (leases of the group may draw from
// it). Leases of a bundle take from and give back to its pool, never the
// node's. Releasing a bundle kills the workers leased from it, fails the
// requests waiting for it, and returns its whole reservation to the node.

type bundleKey struct {
	pg    string
	index int32
}

type bundle struct {
	key          bundleKey
	total, avail resources.Set
	committed    bool
}

// reserveLocked sets a bundle's resources aside, once.
func (r *Raylet) reserveLocked(s *pb.BundleSpec) (*bundle, error) {
	k := bundleKey{s.PlacementGroupId, s.Index}
	if b := r.bundles[k]; b != nil {
		return b, nil // a repeated prepare
	}
	want := resources.Set(s.Resources)
	if err := resources.Validate(want); err != nil {
		return nil, err
	}
	if !r.avail.Fits(want) {
		return nil, rpcerr.Wrapf(ErrBundleResources, "bundle %d of placement group %s wants %v; %v free", s.Index, s.PlacementGroupId, want, r.avail)
	}
	r.avail.Sub(want)
	b := &bundle{key: k, total: want.Clone(), avail: want.Clone()}
	r.bundles[k] = b
	return b, nil
}

func (r *Raylet) PrepareBundles(_ context.Context, req *pb.BundlesRequest) (*pb.BundlesReply, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var done []*bundle
	for _, s := range req.Bundles {
		had := r.bundles[bundleKey{s.PlacementGroupId, s.Index}] != nil
		b, err := r.reserveLocked(s)
		if err != nil {
			// All or nothing per request: undo this request's own.
			for _, d := range done {
				r.dropBundleLocked(d)
			}
			return nil, err
		}
		if !had {
			done = append(done, b)
		}
	}
	return &pb.BundlesReply{}, nil
}

func (r *Raylet) CommitBundles(_ context.Context, req *pb.BundlesRequest) (*pb.BundlesReply, error) {
	r.mu.Lock()
	for _, s := range req.Bundles {
		b, err := r.reserveLocked(s)
		if err != nil {
			r.mu.Unlock()
			return nil, err
		}
		b.committed = true
	}
	r.mu.Unlock()
	r.wake() // requests may wait for these bundles
	return &pb.BundlesReply{}, nil
}

func (r *Raylet) ReleaseBundles(_ context.Context, req *pb.ReleaseBundlesRequest) (*pb.BundlesReply, error) {
	want := map[int32]bool{}
	for _, i := range req.Indexes {
		want[i] = true
	}
	why := req.Reason
	if why == "" {
		why = "its placement group bundle was released"
	}
	r.mu.Lock()
	var gone []*lease
	n := 0
	for k, b := range r.bundles {
		if k.pg != req.PlacementGroupId || (len(want) > 0 && !want[k.index]) {
			continue
		}
		n++
		for _, l := range r.leases {
			if l.bundle == b {
				gone = append(gone, l)
			}
		}
		r.dropBundleLocked(b)
	}
	// Requests for a bundle of the group are failed only when the whole
	// group goes; a reschedule releases single bundles.
	if len(want) == 0 {
		keep := r.queue[:0:0]
		for _, q := range r.queue {
			if s := q.req.GetStrategy(); s.GetPlacementGroupId() == req.PlacementGroupId {
				q.finish(leaseResult{err: rpcerr.Wrapf(ErrUnschedulable, "%s", why)})
				continue
			}
			keep = append(keep, q)
		}
		r.queue = keep
	}
	r.mu.Unlock()
	for _, l := range gone {
		r.pool.Kill(l.worker)
	}
	if n > 0 {
		r.log.Info("released placement group bundles", zap.String("placement_group", req.PlacementGroupId),
			zap.Int("bundles", n), zap.Int("killed_workers", len(gone)), zap.String("why", why))
	}
	r.wake()
	return &pb.BundlesReply{}, nil
}

// dropBundleLocked returns a bundle's whole reservation to the node. Its
// leases' resources are part of it: when they end they give back to the
// dropped pool, which nobody reads.
func (r *Raylet) dropBundleLocked(b *bundle) {
	delete(r.bundles, b.key)
	r.avail.Add(b.total)
}

func (r *Raylet) ListBundles(context.Context, *pb.ListBundlesRequest) (*pb.ListBundlesReply, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &pb.ListBundlesReply{NodeId: r.cfg.NodeID}
	for _, b := range r.bundles {
		out.Bundles = append(out.Bundles, &pb.HeldBundle{PlacementGroupId: b.key.pg, Index: b.key.index,
			Resources: b.total.Clone(), Available: b.avail.Clone(), Committed: b.committed})
	}
	sort.Slice(out.Bundles, func(i, j int) bool {
		a, b := out.Bundles[i], out.Bundles[j]
		return a.PlacementGroupId < b.PlacementGroupId || (a.PlacementGroupId == b.PlacementGroupId && a.Index < b.Index)
	})
	return out, nil
}

// placeInGroupLocked schedules a request of a placement group: from a
// committed bundle of the group here when one fits, else to the node that
// holds one (from the control plane's group table), else it waits while
// the group is being placed.
func (r *Raylet) placeInGroupLocked(q *leaseReq) placement {
	s := q.req.Strategy
	var fitsTotal bool
	var local []*bundle
	for k, b := range r.bundles {
		if k.pg == s.PlacementGroupId && (s.BundleIndex < 0 || k.index == s.BundleIndex) && b.committed {
			local = append(local, b)
		}
	}
	sort.Slice(local, func(i, j int) bool { return local[i].key.index < local[j].key.index })
	for _, b := range local {
		if b.avail.Fits(q.res) {
			return placement{kind: placeLocal, bundle: b}
		}
		fitsTotal = fitsTotal || b.total.Fits(q.res)
	}
	if fitsTotal {
		return placement{kind: placeWait}
	}
	g, known := r.groups[s.PlacementGroupId]
	if !known {
		// The table here may lag the group's creation; a group still
		// unknown after the grace was removed and forgotten.
		if time.Since(q.arrived) < affinityGrace {
			return placement{kind: placeWait}
		}
		return placement{kind: placeFail, err: rpcerr.Wrapf(ErrUnschedulable, "placement group %s is unknown (removed)", s.PlacementGroupId)}
	}
	if g.removed {
		return placement{kind: placeFail, err: rpcerr.Wrapf(ErrUnschedulable, "placement group %s was removed", s.PlacementGroupId)}
	}
	anyFits := false
	var remote []*remoteNode
	for i, b := range g.bundles {
		if s.BundleIndex >= 0 && int32(i) != s.BundleIndex {
			continue
		}
		if !b.res.Fits(q.res) {
			continue
		}
		anyFits = true
		if n := r.view[b.node]; n != nil {
			remote = append(remote, n)
		}
	}
	if !anyFits {
		return placement{kind: placeFail, err: rpcerr.Wrapf(ErrUnschedulable,
			"the request %v fits no bundle %d of placement group %s", q.res, s.BundleIndex, s.PlacementGroupId)}
	}
	if len(remote) == 0 {
		return placement{kind: placeWait} // not placed yet, or being rescheduled
	}
	return placement{kind: placeSpill, node: remote[r.rr%len(remote)], spillAny: true}
}

// groupView is what a raylet knows of a placement group from the control
// plane: where its bundles are.
type groupView struct {
	removed bool
	bundles []bundleView
}

type bundleView struct {
	res  resources.Set
	node string
}

func (b *bundle) String() string { return fmt.Sprintf("%s[%d]", b.key.pg, b.key.index) }
