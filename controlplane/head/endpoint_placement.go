package head

import (
	"context"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// maxBundles bounds a group's bundles (a group is one Raft command).
const maxBundles = 1024

// checkPlacementGroup refuses a group that could never mean anything:
// bad input fails here, before anything is recorded or reserved.
func checkPlacementGroup(g *pb.PlacementGroupInfo) error {
	if g == nil {
		return rpcerr.Wrapf(ErrBadRequest, "group is required")
	}
	if err := checkID("job_id", g.JobId); err != nil {
		return err
	}
	if len(g.Name) > maxIDLen || len(g.Namespace) > maxIDLen {
		return rpcerr.Wrapf(ErrBadRequest, "placement group name and namespace are at most %d bytes", maxIDLen)
	}
	if g.Strategy < pb.PlacementStrategy_PACK || g.Strategy > pb.PlacementStrategy_STRICT_SPREAD {
		return rpcerr.Wrapf(ErrBadRequest, "unknown placement strategy %d", g.Strategy)
	}
	if len(g.Bundles) == 0 || len(g.Bundles) > maxBundles {
		return rpcerr.Wrapf(ErrBadRequest, "a placement group has 1 to %d bundles; got %d", maxBundles, len(g.Bundles))
	}
	for i, b := range g.Bundles {
		if b == nil || len(b.Resources) == 0 {
			return rpcerr.Wrapf(ErrBadRequest, "bundle %d is empty", i)
		}
		for name, q := range b.Resources {
			if name == "" || len(name) > maxIDLen {
				return rpcerr.Wrapf(ErrBadRequest, "bundle %d: resource name %q is empty or too long", i, name)
			}
			if !(q > 0) || math.IsInf(q, 0) {
				return rpcerr.Wrapf(ErrBadRequest, "bundle %d: resource %q has quantity %v; want a finite number > 0", i, name, q)
			}
		}
	}
	return nil
}

// checkStrategy refuses a scheduling strategy that names nothing, or a
// bundle its placement group does not have.
func (h *Head) checkStrategy(s *pb.SchedulingStrategy) error {
	if s == nil {
		return nil
	}
	switch s.Kind {
	case pb.SchedulingStrategy_DEFAULT, pb.SchedulingStrategy_SPREAD, pb.SchedulingStrategy_NODE_LABELS:
		return nil
	case pb.SchedulingStrategy_NODE_AFFINITY:
		return checkID("node_id of the node affinity", s.NodeId)
	case pb.SchedulingStrategy_PLACEMENT_GROUP:
		g := h.fsm.PlacementGroup(s.PlacementGroupId)
		if g == nil || g.State == pb.PlacementGroupState_PG_REMOVED {
			return rpcerr.Wrapf(fsm.ErrPlacementGroupNotFound, "%q (or it was removed)", s.PlacementGroupId)
		}
		if s.BundleIndex < -1 || int(s.BundleIndex) >= len(g.Bundles) {
			return rpcerr.Wrapf(ErrBadRequest, "bundle index %d is out of range: the group has %d bundles", s.BundleIndex, len(g.Bundles))
		}
		return nil
	}
	return rpcerr.Wrapf(ErrBadRequest, "unknown scheduling strategy kind %d", s.Kind)
}

func (a *api) CreatePlacementGroup(ctx context.Context, req *pb.CreatePlacementGroupRequest) (*pb.CreatePlacementGroupResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if err := checkPlacementGroup(req.Group); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.CreatePlacementGroup, func() (*pb.CreatePlacementGroupResponse, error) {
		// The leader stamps the ID; a retry with the same request ID gets
		// the first answer back from the duplicate table.
		g := proto.Clone(req.Group).(*pb.PlacementGroupInfo)
		g.PlacementGroupId = auth.RandomHex(9)
		r, err := h.applier.Apply(ctx, fsm.CmdCreatePlacementGroup, req.RequestId, g)
		if err != nil {
			return nil, err
		}
		return &pb.CreatePlacementGroupResponse{Header: h.headerAt(r.Index), PlacementGroupId: r.Id}, nil
	})
}

func (a *api) GetPlacementGroup(ctx context.Context, req *pb.GetPlacementGroupRequest) (*pb.GetPlacementGroupResponse, error) {
	h := a.h
	if req.PlacementGroupId == "" && req.Name == "" {
		return nil, rpcerr.Wrapf(ErrBadRequest, "placement_group_id or name is required")
	}
	read := func() (*pb.GetPlacementGroupResponse, error) {
		var g *pb.PlacementGroupInfo
		if req.PlacementGroupId != "" {
			if g = h.fsm.PlacementGroup(req.PlacementGroupId); g == nil {
				return nil, rpcerr.Wrapf(fsm.ErrPlacementGroupNotFound, "%q", req.PlacementGroupId)
			}
		} else {
			var err error
			if g, err = h.fsm.NamedPlacementGroup(req.Namespace, req.Name); err != nil {
				return nil, err
			}
		}
		return &pb.GetPlacementGroupResponse{Header: h.header(), Group: g}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.GetPlacementGroup, func() (*pb.GetPlacementGroupResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

func (a *api) ListPlacementGroups(ctx context.Context, req *pb.ListPlacementGroupsRequest) (*pb.ListPlacementGroupsResponse, error) {
	h := a.h
	read := func() (*pb.ListPlacementGroupsResponse, error) {
		var out []*pb.PlacementGroupInfo
		for _, g := range h.fsm.PlacementGroups() {
			if req.JobId == "" || g.JobId == req.JobId {
				out = append(out, g)
			}
		}
		return &pb.ListPlacementGroupsResponse{Header: h.header(), Groups: out}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ListPlacementGroups, func() (*pb.ListPlacementGroupsResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

func (a *api) RemovePlacementGroup(ctx context.Context, req *pb.RemovePlacementGroupRequest) (*pb.RemovePlacementGroupResponse, error) {
	h := a.h
	if err := checkID("placement_group_id", req.PlacementGroupId); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.RemovePlacementGroup, func() (*pb.RemovePlacementGroupResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdRemovePlacementGroup, req.RequestId,
			&pb.RemovePlacementGroupCommand{PlacementGroupId: req.PlacementGroupId, Reason: "removed by its user"})
		if err != nil {
			return nil, err
		}
		// The placement routine releases its bundles on their raylets.
		h.placement.kick()
		return &pb.RemovePlacementGroupResponse{Header: h.headerAt(r.Index)}, nil
	})
}
