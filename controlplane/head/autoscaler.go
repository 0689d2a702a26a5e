package head

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// scalerCluster is the autoscaler's view of this head (it runs only while
// the head leads).
type scalerCluster struct{ h *Head }

func (c scalerCluster) Nodes() []*pb.NodeInfo { return c.h.liveness.decorate(c.h.fsm.Nodes()) }

func (c scalerCluster) Load() ([]*pb.ResourceDemand, map[string]int64) {
	alive := map[string]bool{}
	for _, n := range c.h.fsm.Nodes() {
		if n.State == pb.NodeState_NODE_ALIVE {
			alive[n.NodeId] = true
		}
	}
	byShape := map[string]*pb.ResourceDemand{}
	var order []string
	objects := map[string]int64{}
	for id, ld := range c.h.liveness.loads(alive) {
		objects[id] = ld.objects
		for _, d := range ld.demand {
			k := autoscaler.DemandKey(d.Shape, d.Labels)
			s := byShape[k]
			if s == nil {
				s = &pb.ResourceDemand{Shape: d.Shape, Labels: d.Labels, Source: "tasks"}
				byShape[k] = s
				order = append(order, k)
			}
			s.Count += d.Count
			s.Infeasible = s.Infeasible || d.Infeasible
		}
	}
	out := make([]*pb.ResourceDemand, 0, len(order))
	for _, k := range order {
		out = append(out, byShape[k])
	}
	return out, objects
}

func (c scalerCluster) PlacementGroups() []*pb.PlacementGroupInfo { return c.h.fsm.PlacementGroups() }

func (c scalerCluster) Instances() []*pb.AutoscalerInstance { return c.h.fsm.AutoscalerInstances() }

func (c scalerCluster) RequestedResources() []*pb.Bundle { return c.h.fsm.RequestedResources() }

func (c scalerCluster) Apply(ctx context.Context, t fsm.CommandType, body proto.Message) error {
	_, err := c.h.applier.Apply(ctx, t, "", body)
	return err
}

// scalerAPI serves AutoscalerService.
type scalerAPI struct {
	pb.UnimplementedAutoscalerServiceServer
	h *Head
}

func (a *scalerAPI) RequestResources(ctx context.Context, req *pb.RequestResourcesRequest) (*pb.RequestResourcesResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	for i, b := range req.Bundles {
		if err := checkResources("bundle", b.GetResources()); err != nil {
			return nil, err
		}
		if len(b.GetResources()) == 0 {
			return nil, rpcerr.Wrapf(ErrBadRequest, "bundle %d has no resources", i)
		}
	}
	return onLeaderVia(h, ctx, req, pb.NewAutoscalerServiceClient, pb.AutoscalerServiceClient.RequestResources, func() (*pb.RequestResourcesResponse, error) {
		bundles := make([]*pb.Bundle, len(req.Bundles))
		for i, b := range req.Bundles {
			bundles[i] = &pb.Bundle{Resources: b.Resources}
		}
		r, err := h.applier.Apply(ctx, fsm.CmdRequestResources, req.RequestId, &pb.RequestResourcesCommand{Bundles: bundles})
		if err != nil {
			return nil, err
		}
		return &pb.RequestResourcesResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *scalerAPI) AutoscalerStatus(ctx context.Context, req *pb.AutoscalerStatusRequest) (*pb.AutoscalerStatusResponse, error) {
	h := a.h
	return onLeaderVia(h, ctx, req, pb.NewAutoscalerServiceClient, pb.AutoscalerServiceClient.AutoscalerStatus, func() (*pb.AutoscalerStatusResponse, error) {
		var out *pb.AutoscalerStatusResponse
		if h.scaler != nil {
			out = h.scaler.Status()
		} else {
			out = &pb.AutoscalerStatusResponse{Instances: h.fsm.AutoscalerInstances(), RequestedResources: h.fsm.RequestedResources()}
		}
		out.Decisions = h.fsm.AutoscalerDecisions()
		out.Header = h.header()
		return out, nil
	})
}
