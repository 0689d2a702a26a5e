package cpclient

import (
	"context"
	"time"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// NodeView is a copy of the leader's list of alive nodes (with their free
// resources) kept fresh by Refresh. After the first whole list it asks
// only for what changed since its last answer, so a thousand raylets
// refreshing often cost the leader what changes, not the whole table each
// time. It is not safe for concurrent use.
type NodeView struct {
	c     *Client
	nodes map[string]*pb.NodeInfo
	epoch uint64
	seq   uint64
	index uint64
}

// NewNodeView returns an empty view; the first Refresh fills it.
func (c *Client) NewNodeView() *NodeView {
	return &NodeView{c: c, nodes: map[string]*pb.NodeInfo{}}
}

// Refresh brings the view up to date. changed reports whether any node
// was added, removed or updated.
func (v *NodeView) Refresh(ctx context.Context) (changed bool, err error) {
	resp, err := v.c.ListNodes(ctx, &pb.ListNodesRequest{AliveOnly: true, View: true, ViewEpoch: v.epoch, ViewSeq: v.seq, ViewIndex: v.index})
	if err != nil {
		return false, err
	}
	if !resp.Delta {
		v.nodes = make(map[string]*pb.NodeInfo, len(resp.Nodes))
		changed = true
	}
	for _, n := range resp.Nodes {
		if n.State == pb.NodeState_NODE_ALIVE {
			v.nodes[n.NodeId] = n
		} else {
			delete(v.nodes, n.NodeId)
		}
		changed = true
	}
	v.epoch, v.seq, v.index = resp.ViewEpoch, resp.ViewSeq, resp.ViewIndex
	return changed, nil
}

// Nodes is the view: alive nodes by ID. The map and its values belong to
// the view; read them, do not keep or modify them across a Refresh.
func (v *NodeView) Nodes() map[string]*pb.NodeInfo { return v.nodes }

// ViewPerNode is how much a view refresh's period grows per node in the
// view: every raylet refreshes, so the leader answers N refreshes per
// period, and a period of at least N × ViewPerNode keeps that under
// 1/ViewPerNode (1,000) answers a second however large the cluster.
const ViewPerNode = time.Millisecond

// Interval is the period to wait before the next Refresh: base, or more in
// a large cluster (see ViewPerNode).
func (v *NodeView) Interval(base time.Duration) time.Duration {
	return max(base, time.Duration(len(v.nodes))*ViewPerNode)
}
