package fsm

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// MaxFinishedInstances bounds the terminated and failed autoscaler
// instances kept for `manta status`; MaxAutoscalerDecisions bounds the
// decision log. Constants: they shape replicated state.
const (
	MaxFinishedInstances   = 64
	MaxAutoscalerDecisions = 64
)

// autoscalerState is what the leader's autoscaler decided: the instances
// it launched (a launch is recorded before the provider is asked, so a new
// leader never launches twice for one demand), the resources requested
// with RequestResources, and a log of recent decisions.
type autoscalerState struct {
	instances map[string]*pb.AutoscalerInstance
	requested []*pb.Bundle
	decisions []*pb.AutoscalerDecision
}

func newAutoscalerState() autoscalerState {
	return autoscalerState{instances: map[string]*pb.AutoscalerInstance{}}
}

func (s *autoscalerState) snapshot() *pb.AutoscalerState {
	if len(s.instances) == 0 && len(s.requested) == 0 && len(s.decisions) == 0 {
		return nil
	}
	return &pb.AutoscalerState{
		Instances:          sortedValues(s.instances, func(i *pb.AutoscalerInstance) string { return i.InstanceId }),
		RequestedResources: s.requested,
		Decisions:          s.decisions,
	}
}

func (s *autoscalerState) restore(st *pb.AutoscalerState) {
	for _, i := range st.GetInstances() {
		s.instances[i.InstanceId] = i
	}
	s.requested = st.GetRequestedResources()
	s.decisions = st.GetDecisions()
}

func instanceFinished(st pb.InstanceState) bool {
	return st == pb.InstanceState_INSTANCE_TERMINATED || st == pb.InstanceState_INSTANCE_FAILED
}

// decide appends to the bounded decision log (a new slice: snapshots
// share the old one).
func (s *autoscalerState) decide(d *pb.AutoscalerDecision) {
	keep := s.decisions
	if len(keep) >= MaxAutoscalerDecisions {
		keep = keep[len(keep)-MaxAutoscalerDecisions+1:]
	}
	s.decisions = append(append(make([]*pb.AutoscalerDecision, 0, len(keep)+1), keep...), d)
}

// evictFinished drops the oldest finished instances beyond the bound.
func (s *autoscalerState) evictFinished() {
	var done []*pb.AutoscalerInstance
	for _, i := range s.instances {
		if instanceFinished(i.State) {
			done = append(done, i)
		}
	}
	if len(done) <= MaxFinishedInstances {
		return
	}
	sort.Slice(done, func(a, b int) bool {
		if done[a].Index != done[b].Index {
			return done[a].Index < done[b].Index
		}
		return done[a].InstanceId < done[b].InstanceId
	})
	for _, i := range done[:len(done)-MaxFinishedInstances] {
		delete(s.instances, i.InstanceId)
	}
}

func applyAutoscalerLaunch(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.AutoscalerLaunchCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	if r.InstanceId == "" || r.NodeType == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "launch needs an instance ID and a node type"))
	}
	if _, ok := f.scaler.instances[r.InstanceId]; ok {
		return errResult(rpcerr.Wrapf(ErrInstanceExists, "instance %s", r.InstanceId))
	}
	f.scaler.instances[r.InstanceId] = &pb.AutoscalerInstance{
		InstanceId: r.InstanceId, NodeType: r.NodeType, State: pb.InstanceState_INSTANCE_PENDING,
		LaunchedUnixNano: c.timeNanos, UpdatedUnixNano: c.timeNanos, Reason: r.Reason, Index: c.index,
	}
	f.scaler.decide(&pb.AutoscalerDecision{UnixNano: c.timeNanos, Action: "launch", NodeType: r.NodeType,
		InstanceId: r.InstanceId, Reason: r.Reason})
	return okResult()
}

func applyAutoscalerInstance(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.AutoscalerInstanceCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	old := f.scaler.instances[r.InstanceId]
	if old == nil {
		return errResult(rpcerr.Wrapf(ErrInstanceNotFound, "instance %s", r.InstanceId))
	}
	if instanceFinished(old.State) {
		// Finished is final: a late report of a terminated instance changes nothing.
		return &pb.CommandResult{Flag: false}
	}
	n := proto.Clone(old).(*pb.AutoscalerInstance)
	n.State, n.UpdatedUnixNano, n.Index = r.State, c.timeNanos, c.index
	if r.NodeId != "" {
		n.NodeId = r.NodeId
	}
	if r.Reason != "" {
		n.Reason = r.Reason
	}
	f.scaler.instances[r.InstanceId] = n
	if r.State != pb.InstanceState_INSTANCE_RUNNING {
		action := map[pb.InstanceState]string{
			pb.InstanceState_INSTANCE_TERMINATING: "remove",
			pb.InstanceState_INSTANCE_TERMINATED:  "terminated",
			pb.InstanceState_INSTANCE_FAILED:      "failed",
		}[r.State]
		if action == "" {
			action = r.State.String()
		}
		f.scaler.decide(&pb.AutoscalerDecision{UnixNano: c.timeNanos, Action: action, NodeType: n.NodeType,
			InstanceId: n.InstanceId, Reason: r.Reason})
	}
	f.scaler.evictFinished()
	return &pb.CommandResult{Flag: true}
}

func applyRequestResources(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.RequestResourcesCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	f.scaler.requested = r.Bundles
	f.scaler.decide(&pb.AutoscalerDecision{UnixNano: c.timeNanos, Action: "request_resources",
		Reason: requestReason(r.Bundles)})
	return okResult()
}

func requestReason(b []*pb.Bundle) string {
	if len(b) == 0 {
		return "requested resources cleared"
	}
	return fmt.Sprintf("resources requested: %d bundles", len(b))
}

// AutoscalerInstances lists the autoscaler's instances by ID. The messages
// are shared: callers must not change them.
func (f *FSM) AutoscalerInstances() []*pb.AutoscalerInstance {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.scaler.instances, func(i *pb.AutoscalerInstance) string { return i.InstanceId })
}

// RequestedResources is the last RequestResources' bundles.
func (f *FSM) RequestedResources() []*pb.Bundle {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.scaler.requested
}

// AutoscalerDecisions is the recent decision log, oldest first.
func (f *FSM) AutoscalerDecisions() []*pb.AutoscalerDecision {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.scaler.decisions
}
