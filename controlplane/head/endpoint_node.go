package head

import (
	"context"
	"sort"
	"time"

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
		// A view refresh skips the quorum round that
		// proves leadership: its answer is a scheduling hint, a deposed
		// leader's is stale by at most an election, and a thousand raylets'
		// refreshes would each cost a round of Raft heartbeats.
		if !req.View {
			if err := h.verifyLeader(); err != nil {
				return nil, err
			}
		}
		if req.ViewEpoch != 0 {
			if resp := h.nodesChanged(req); resp != nil {
				return resp, nil
			}
		}
		if req.View && req.AliveOnly {
			return h.aliveNodes()
		}
		// The position is read before the nodes, so a change racing this
		// answer is sent again in the next delta rather than lost.
		epoch, seq := h.liveness.viewPosition()
		index := h.fsm.AppliedIndex()
		return &pb.ListNodesResponse{Header: h.header(), Nodes: h.liveness.decorate(filter(h.fsm.Nodes())),
			ViewEpoch: epoch, ViewSeq: seq, ViewIndex: index}, nil
	})
}

// aliveNodes is the whole list of alive nodes, shared with the previous
// answer while no node changed (and it is under aliveListMaxAge old):
// cloning and encoding a thousand nodes for each of a thousand raylets
// that start at once is O(nodes²).
func (h *Head) aliveNodes() (*pb.ListNodesResponse, error) {
	l := h.liveness
	// Shared or not, a whole list is as many bytes to send (and for a
	// follower to forward).
	if !l.mayListAll() {
		return nil, rpcerr.Wrapf(ErrViewBusy, "%.0f whole node lists a second at most; keep the current view and ask again", wholeListRate)
	}
	epoch, seq := l.viewPosition()
	l.mu.Lock()
	c := l.alive
	l.mu.Unlock()
	if c.nodes != nil && c.epoch == epoch && c.seq == seq && time.Since(c.at) < aliveListMaxAge {
		if evs, _, ok := h.fsm.EventsSince(c.index, isNodeEvent); ok && len(evs) == 0 {
			return &pb.ListNodesResponse{Header: h.header(), Nodes: c.nodes, ViewEpoch: epoch, ViewSeq: seq, ViewIndex: c.index}, nil
		}
	}
	index := h.fsm.AppliedIndex()
	var alive []*pb.NodeInfo
	for _, n := range h.fsm.Nodes() {
		if n.State == pb.NodeState_NODE_ALIVE {
			alive = append(alive, n)
		}
	}
	nodes := l.decorate(alive)
	l.mu.Lock()
	if l.leading && l.epoch == epoch {
		l.alive = aliveList{epoch: epoch, seq: seq, index: index, at: time.Now(), nodes: nodes}
	}
	l.mu.Unlock()
	return &pb.ListNodesResponse{Header: h.header(), Nodes: nodes, ViewEpoch: epoch, ViewSeq: seq, ViewIndex: index}, nil
}

func isNodeEvent(k pb.EventKind) bool { return k == pb.EventKind_EVENT_NODE }

// nodesChanged answers a view refresh with the nodes that changed since
// its position: in the replicated table (registered, died) or in the
// leader's soft state (free resources). With a thousand raylets each
// refreshing ten times a second, whole lists would cost the leader
// O(nodes²) a second; deltas cost what changed. It returns nil when the
// position is too old or from another leadership: the caller sends the
// whole list.
func (h *Head) nodesChanged(req *pb.ListNodesRequest) *pb.ListNodesResponse {
	soft, seq, ok := h.liveness.changedSince(req.ViewEpoch, req.ViewSeq)
	if !ok {
		return nil
	}
	events, index, ok := h.fsm.EventsSince(req.ViewIndex, isNodeEvent)
	if !ok {
		return nil
	}
	ids := map[string]bool{}
	for _, id := range soft {
		ids[id] = true
	}
	for _, ev := range events {
		if ev.Node != nil {
			ids[ev.Node.NodeId] = true
		}
	}
	nodes := make([]*pb.NodeInfo, 0, len(ids))
	for id := range ids {
		n := h.fsm.Node(id)
		if n == nil { // gone from the table: tell the watcher to drop it
			n = &pb.NodeInfo{NodeId: id, State: pb.NodeState_NODE_DEAD}
		}
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].NodeId < nodes[j].NodeId })
	return &pb.ListNodesResponse{Header: h.header(), Nodes: h.liveness.decorate(nodes), Delta: true,
		ViewEpoch: req.ViewEpoch, ViewSeq: seq, ViewIndex: index}
}
