package head

import (
	"context"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func (a *api) RegisterNode(ctx context.Context, req *pb.RegisterNodeRequest) (*pb.RegisterNodeResponse, error) {
	h := a.h
	n := req.GetNode()
	if n == nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "node is required")
	}
	if err := checkID("node_id", n.NodeId); err != nil {
		return nil, err
	}
	if n.Address == "" {
		return nil, rpcerr.Wrapf(ErrBadRequest, "node %s: address is required", n.NodeId)
	}
	if err := checkResources("node "+n.NodeId, n.Resources); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.RegisterNode, func() (*pb.RegisterNodeResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdRegisterNode, req.RequestId, n)
		if err != nil {
			return nil, err
		}
		// Registration counts as the first heartbeat: all is free.
		_ = h.liveness.heartbeat(n.NodeId, n.Resources)
		return &pb.RegisterNodeResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *api) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	h := a.h
	if err := checkID("node_id", req.NodeId); err != nil {
		return nil, err
	}
	if err := checkResources("heartbeat of "+req.NodeId, req.Available); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.Heartbeat, func() (*pb.HeartbeatResponse, error) {
		n := h.fsm.Node(req.NodeId)
		switch {
		case n == nil:
			return nil, rpcerr.Wrapf(fsm.ErrNodeNotFound, "node %s is not registered; register it first", req.NodeId)
		case n.State == pb.NodeState_NODE_DEAD:
			return nil, rpcerr.Wrapf(fsm.ErrNodeDead, "node %s: %s", req.NodeId, n.DeathReason)
		}
		if err := h.liveness.heartbeat(req.NodeId, req.Available); err != nil {
			return nil, err
		}
		h.liveness.report(req.NodeId, nodeLoad{demand: req.Demand, objects: req.Objects})
		return &pb.HeartbeatResponse{Header: h.header(), TimeoutMillis: h.cfg.NodeTimeout.Milliseconds()}, nil
	})
}

func (a *api) UnregisterNode(ctx context.Context, req *pb.UnregisterNodeRequest) (*pb.UnregisterNodeResponse, error) {
	h := a.h
	if err := checkID("node_id", req.NodeId); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.UnregisterNode, func() (*pb.UnregisterNodeResponse, error) {
		reason := req.Reason
		if reason == "" {
			reason = "unregistered"
		}
		r, err := h.applier.Apply(ctx, fsm.CmdMarkNodeDead, req.RequestId, &pb.MarkNodeDeadCommand{NodeId: req.NodeId, Reason: reason})
		if err != nil {
			return nil, err
		}
		return &pb.UnregisterNodeResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *api) ListNodes(ctx context.Context, req *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	h := a.h
	filter := func(ns []*pb.NodeInfo) []*pb.NodeInfo {
		if !req.AliveOnly {
			return ns
		}
		out := ns[:0:0]
		for _, n := range ns {
			if n.State == pb.NodeState_NODE_ALIVE {
				out = append(out, n)
			}
		}
		return out
	}
	if req.Stale {
		return &pb.ListNodesResponse{Header: h.header(), Nodes: filter(h.fsm.Nodes())}, nil
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ListNodes, func() (*pb.ListNodesResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return &pb.ListNodesResponse{Header: h.header(), Nodes: h.liveness.decorate(filter(h.fsm.Nodes()))}, nil
	})
}
