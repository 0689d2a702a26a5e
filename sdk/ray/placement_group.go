package ray

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/manta-ray/manta/controlplane/fsm"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// PlacementStrategy says how a placement group's bundles spread over nodes.
type PlacementStrategy int

const (
	// Pack puts the bundles on as few nodes as it can (best effort).
	Pack PlacementStrategy = iota + 1
	// SpreadPG puts the bundles on different nodes where it can (best
	// effort); Ray's "SPREAD" for placement groups.
	SpreadPG
	// StrictPack puts every bundle on one node, or waits.
	StrictPack
	// StrictSpread puts every bundle on a different node, or waits.
	StrictSpread
)

// Bundle is one bundle's resources, e.g. {"CPU": 2, "GPU": 1}.
type Bundle = map[string]float64

// ErrPlacementGroupRemoved: the placement group was removed (Remove, or
// its job ended) before it was ready.
var ErrPlacementGroupRemoved = errors.New("ray: placement group removed")

// PlacementGroup is a handle on a gang of resource bundles reserved across
// the cluster (Ray's placement group). The control plane's leader reserves
// every bundle on a node, all or none; tasks and actors run in a bundle
// with InPlacementGroup.
type PlacementGroup struct {
	id      string
	bundles int
}

// ID is the group's ID.
func (pg *PlacementGroup) ID() string { return pg.id }

// BundleCount is how many bundles the group has.
func (pg *PlacementGroup) BundleCount() int { return pg.bundles }

// NewPlacementGroup asks for a placement group of bundles placed by
// strategy. Options: Name (and Namespace) to find it with
// GetPlacementGroup, Lifetime(Detached) to outlive the job (else it is
// removed when the job ends). It returns at once; Ready waits for the
// reservation. Empty bundles, a bundle with a quantity <= 0, an unknown
// strategy: ErrInvalidOption (InvalidArgument); a taken name:
// AlreadyExists. Nothing is reserved then.
func NewPlacementGroup(ctx context.Context, bundles []Bundle, strategy PlacementStrategy, opts ...CallOption) (*PlacementGroup, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	o := newCallOptions(opts)
	if o.Err != nil {
		return nil, o.Err
	}
	if strategy < Pack || strategy > StrictSpread {
		return nil, fmt.Errorf("%w: unknown placement strategy %d", ErrInvalidOption, strategy)
	}
	if len(bundles) == 0 {
		return nil, fmt.Errorf("%w: a placement group needs at least one bundle", ErrInvalidOption)
	}
	g := &cpb.PlacementGroupInfo{Name: o.Name, Namespace: o.Namespace, Detached: o.Detached,
		Strategy: cpb.PlacementStrategy(strategy), JobId: c.RuntimeContext(ctx).JobID}
	for i, b := range bundles {
		if len(b) == 0 {
			return nil, fmt.Errorf("%w: bundle %d is empty", ErrInvalidOption, i)
		}
		res := make(map[string]float64, len(b))
		for k, q := range b {
			if !(q > 0) {
				return nil, fmt.Errorf("%w: bundle %d: %s=%v; quantities must be > 0", ErrInvalidOption, i, k, q)
			}
			res[k] = q
		}
		g.Bundles = append(g.Bundles, &cpb.Bundle{Resources: res})
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return nil, err
	}
	id, err := cp.CreatePlacementGroup(ctx, g)
	if err != nil {
		return nil, fmt.Errorf("ray: create placement group: %w", err)
	}
	return &PlacementGroup{id: id, bundles: len(bundles)}, nil
}

// GetPlacementGroup finds a live placement group by name (in the
// Namespace option's namespace).
func GetPlacementGroup(ctx context.Context, name string, opts ...CallOption) (*PlacementGroup, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	o := newCallOptions(opts)
	cp, err := c.ControlPlane()
	if err != nil {
		return nil, err
	}
	g, err := cp.GetPlacementGroup(ctx, &cpb.GetPlacementGroupRequest{Name: name, Namespace: o.Namespace})
	if err != nil {
		return nil, err
	}
	return &PlacementGroup{id: g.PlacementGroupId, bundles: len(g.Bundles)}, nil
}

// PlacementGroupInfo is a group as the control plane records it.
type PlacementGroupInfo struct {
	ID, Name, State, Reason string
	// BundleNodes is the node of each bundle ("" while not placed).
	BundleNodes []string
}

// Info reads the group's state and where its bundles are.
func (pg *PlacementGroup) Info(ctx context.Context) (PlacementGroupInfo, error) {
	g, err := pg.get(ctx)
	if err != nil {
		return PlacementGroupInfo{}, err
	}
	info := PlacementGroupInfo{ID: g.PlacementGroupId, Name: g.Name, State: pgStateName(g.State), Reason: g.Reason}
	for _, b := range g.Bundles {
		info.BundleNodes = append(info.BundleNodes, b.NodeId)
	}
	return info, nil
}

func pgStateName(s cpb.PlacementGroupState) string {
	switch s {
	case cpb.PlacementGroupState_PG_PENDING:
		return "PENDING"
	case cpb.PlacementGroupState_PG_CREATED:
		return "CREATED"
	case cpb.PlacementGroupState_PG_RESCHEDULING:
		return "RESCHEDULING"
	case cpb.PlacementGroupState_PG_REMOVED:
		return "REMOVED"
	case cpb.PlacementGroupState_PG_INFEASIBLE:
		return "INFEASIBLE"
	}
	return s.String()
}

func (pg *PlacementGroup) get(ctx context.Context) (*cpb.PlacementGroupInfo, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return nil, err
	}
	return cp.GetPlacementGroup(ctx, &cpb.GetPlacementGroupRequest{PlacementGroupId: pg.id})
}

// Ready waits until every bundle is reserved (CREATED). It fails with
// ErrPlacementGroupRemoved when the group is removed first; a group that
// cannot be placed (PENDING, INFEASIBLE) waits until ctx ends.
func (pg *PlacementGroup) Ready(ctx context.Context) error {
	backoff := 2 * time.Millisecond
	for {
		g, err := pg.get(ctx)
		switch {
		case errors.Is(err, fsm.ErrPlacementGroupNotFound):
			return fmt.Errorf("%w: %s", ErrPlacementGroupRemoved, pg.id)
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			return err
		case g.State == cpb.PlacementGroupState_PG_CREATED:
			return nil
		case g.State == cpb.PlacementGroupState_PG_REMOVED:
			return fmt.Errorf("%w: %s: %s", ErrPlacementGroupRemoved, pg.id, g.Reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("placement group %s is %s (%s): %w", pg.id, pgStateName(g.State), g.Reason, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// Remove removes the group: its actors die, its queued tasks fail with
// ErrTaskUnschedulable, and every reserved resource is returned.
func (pg *PlacementGroup) Remove(ctx context.Context) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return err
	}
	return cp.RemovePlacementGroup(ctx, pg.id)
}
