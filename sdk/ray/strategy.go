package ray

import (
	"fmt"

	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// Scheduling strategies: where a task or actor may run. Without one, the
// hybrid policy decides (run on the submitting node while it is under half
// used, else spread to the least used nodes).

// Spread runs the task or actor on the nodes that fit it in round-robin
// order (Ray's "SPREAD"): replicas go to different nodes where they can.
func Spread() CallOption {
	return func(o *core.CallOptions) {
		o.Strategy = &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_SPREAD}
	}
}

// NodeAffinity runs the task or actor on the node nodeID (a NodeInfo.ID).
// Hard (soft false): it waits there for resources, and fails with
// ErrTaskUnschedulable (an actor dies) when that node is dead or can never
// fit it. Soft: it prefers that node and runs elsewhere when it is dead,
// too small or busy.
func NodeAffinity(nodeID string, soft bool) CallOption {
	return func(o *core.CallOptions) {
		if nodeID == "" {
			o.Err = fmt.Errorf("%w: NodeAffinity needs a node ID", ErrInvalidOption)
		}
		o.Strategy = &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_NODE_AFFINITY, NodeId: nodeID, Soft: soft}
	}
}

// NodeLabels runs the task or actor on a node whose labels (manta start
// --labels k=v,...) hold every entry of selector. Hard (soft false): only
// there; while no alive node has them it waits as infeasible. Soft: nodes
// with the labels are preferred, others used when none fits.
func NodeLabels(selector map[string]string, soft bool) CallOption {
	return func(o *core.CallOptions) {
		s := &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_NODE_LABELS}
		sel := make(map[string]string, len(selector))
		for k, v := range selector {
			if k == "" {
				o.Err = fmt.Errorf("%w: NodeLabels with an empty key", ErrInvalidOption)
			}
			sel[k] = v
		}
		if soft {
			s.SoftLabels = sel
		} else {
			s.HardLabels = sel
		}
		o.Strategy = s
	}
}

// InPlacementGroup runs the task or actor in bundle bundleIndex of pg
// (-1: any bundle), on that bundle's reserved resources. Its resources
// must fit in the bundle. It waits while the group is not placed yet, and
// fails (ErrTaskUnschedulable; an actor dies) once the group is removed.
func InPlacementGroup(pg *PlacementGroup, bundleIndex int) CallOption {
	return func(o *core.CallOptions) {
		if pg == nil {
			o.Err = fmt.Errorf("%w: InPlacementGroup of a nil group", ErrInvalidOption)
			return
		}
		if bundleIndex < -1 || bundleIndex >= pg.BundleCount() {
			o.Err = fmt.Errorf("%w: bundle index %d is out of range: placement group %s has %d bundles",
				ErrInvalidOption, bundleIndex, pg.ID(), pg.BundleCount())
			return
		}
		o.Strategy = &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_PLACEMENT_GROUP,
			PlacementGroupId: pg.ID(), BundleIndex: int32(bundleIndex)}
	}
}
