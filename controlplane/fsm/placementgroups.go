package fsm

import (
	"container/heap"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// The placement-group table. A group's bundles are reserved on raylets by
// the leader's placement routine (controlplane/head/placement.go), which
// records the outcome here, so whichever head leads next knows which
// reservations are real:
//
//	PENDING/INFEASIBLE --PlacementGroupPlaced--> CREATED
//	CREATED --a node holding bundles dies--> RESCHEDULING --Placed--> CREATED
//	any state --RemovePlacementGroup (or its job ends)--> REMOVED
//
// Names are indexed per namespace while their group is not REMOVED.

// MaxRemovedPlacementGroups bounds how many REMOVED groups the store keeps
// for listings; it shapes replicated state, so it is a constant.
const MaxRemovedPlacementGroups = 1000

func applyCreatePlacementGroup(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var g pb.PlacementGroupInfo
	if err := decode(body, &g); err != nil {
		return errResult(err)
	}
	if g.PlacementGroupId == "" || len(g.Bundles) == 0 {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "placement group without id or bundles"))
	}
	if _, ok := f.groups[g.PlacementGroupId]; ok {
		return errResult(rpcerr.Wrapf(ErrPlacementGroupExists, "%s", g.PlacementGroupId))
	}
	if g.Name != "" {
		if id, taken := f.groupNames[nameKey(g.Namespace, g.Name)]; taken {
			return errResult(rpcerr.Wrapf(ErrPlacementGroupNameTaken, "%q in namespace %q is placement group %s", g.Name, g.Namespace, id))
		}
	}
	if j := f.jobs[g.JobId]; j != nil && j.State != pb.JobState_JOB_RUNNING && !g.Detached {
		return errResult(rpcerr.Wrapf(ErrJobNotFound, "job %s has ended", g.JobId))
	}
	g.State = pb.PlacementGroupState_PG_PENDING
	for _, b := range g.Bundles {
		b.NodeId = ""
	}
	g.Reason, g.RemovedIndex, g.Reschedules = "", 0, 0
	g.CreatedUnixNano = c.timeNanos
	f.putGroup(c, &g)
	return &pb.CommandResult{Id: g.PlacementGroupId, Flag: true}
}

func waitsForPlacement(s pb.PlacementGroupState) bool {
	return s == pb.PlacementGroupState_PG_PENDING || s == pb.PlacementGroupState_PG_INFEASIBLE || s == pb.PlacementGroupState_PG_RESCHEDULING
}

func applyPlacementGroupPlaced(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.PlacementGroupPlacedCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.groups[cmd.PlacementGroupId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrPlacementGroupNotFound, "%q", cmd.PlacementGroupId))
	}
	if !waitsForPlacement(old.State) || len(cmd.NodeIds) != len(old.Bundles) {
		return &pb.CommandResult{Flag: false}
	}
	for i, id := range cmd.NodeIds {
		n := f.nodes[id]
		if n == nil || n.State != pb.NodeState_NODE_ALIVE {
			return &pb.CommandResult{Flag: false}
		}
		// A bundle that stayed placed through a reschedule stays where it is.
		if b := old.Bundles[i]; b.NodeId != "" && b.NodeId != id {
			return &pb.CommandResult{Flag: false}
		}
	}
	g := proto.Clone(old).(*pb.PlacementGroupInfo)
	for i, id := range cmd.NodeIds {
		g.Bundles[i].NodeId = id
	}
	g.State = pb.PlacementGroupState_PG_CREATED
	g.Reason = ""
	f.putGroup(c, g)
	return &pb.CommandResult{Flag: true}
}

func applyPlacementGroupPending(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.PlacementGroupPendingCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.groups[cmd.PlacementGroupId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrPlacementGroupNotFound, "%q", cmd.PlacementGroupId))
	}
	state := old.State
	switch {
	case !waitsForPlacement(state):
		return &pb.CommandResult{Flag: false}
	case state == pb.PlacementGroupState_PG_RESCHEDULING:
		// It stays RESCHEDULING (some bundles are still held); only the
		// reason changes.
	case cmd.Infeasible:
		state = pb.PlacementGroupState_PG_INFEASIBLE
	default:
		state = pb.PlacementGroupState_PG_PENDING
	}
	if state == old.State && cmd.Reason == old.Reason {
		return &pb.CommandResult{Flag: false}
	}
	g := proto.Clone(old).(*pb.PlacementGroupInfo)
	g.State, g.Reason = state, cmd.Reason
	f.putGroup(c, g)
	return &pb.CommandResult{Flag: true}
}

func applyRemovePlacementGroup(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.RemovePlacementGroupCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.groups[cmd.PlacementGroupId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrPlacementGroupNotFound, "%q", cmd.PlacementGroupId))
	}
	return &pb.CommandResult{Flag: f.removeGroupLocked(c, old, cmd.Reason)}
}

// removeGroupLocked marks a group REMOVED and ends the actors placed in
// it (without restart: their bundle is gone).
func (f *FSM) removeGroupLocked(c *applyCtx, old *pb.PlacementGroupInfo, reason string) bool {
	if old.State == pb.PlacementGroupState_PG_REMOVED {
		return false
	}
	g := proto.Clone(old).(*pb.PlacementGroupInfo)
	g.State = pb.PlacementGroupState_PG_REMOVED
	g.Reason = reason
	g.RemovedIndex = c.index
	f.putGroup(c, g)
	for _, a := range sortedValues(f.actors, func(a *pb.ActorInfo) string { return a.ActorId }) {
		if a.GetStrategy().GetPlacementGroupId() == g.PlacementGroupId && a.State != pb.ActorState_DEAD {
			f.failActorLocked(c, a, "its placement group "+g.PlacementGroupId+" was removed", true)
		}
	}
	// Ordered by (index, ID) like DEAD actors, so a head that restored a
	// snapshot drops the same groups as one that applied the whole log.
	heap.Push(&f.removedGroups, deadKey{g.RemovedIndex, g.PlacementGroupId})
	for f.removedGroups.Len() > f.maxRemovedGroups {
		k := heap.Pop(&f.removedGroups).(deadKey)
		delete(f.groups, k.id)
	}
	return true
}

// rescheduleGroupsOfNodeLocked unplaces the bundles a dead node held: their
// groups go RESCHEDULING, in ID order so every head emits the same events.
func (f *FSM) rescheduleGroupsOfNodeLocked(c *applyCtx, nodeID string) {
	for _, old := range sortedValues(f.groups, func(g *pb.PlacementGroupInfo) string { return g.PlacementGroupId }) {
		if old.State != pb.PlacementGroupState_PG_CREATED && old.State != pb.PlacementGroupState_PG_RESCHEDULING {
			continue
		}
		hit := false
		for _, b := range old.Bundles {
			hit = hit || b.NodeId == nodeID
		}
		if !hit {
			continue
		}
		g := proto.Clone(old).(*pb.PlacementGroupInfo)
		for _, b := range g.Bundles {
			if b.NodeId == nodeID {
				b.NodeId = ""
			}
		}
		if g.State == pb.PlacementGroupState_PG_CREATED {
			g.Reschedules++
		}
		g.State = pb.PlacementGroupState_PG_RESCHEDULING
		g.Reason = "node " + nodeID + " holding bundles died"
		f.putGroup(c, g)
	}
}

// removeJobGroupsLocked removes the non-detached groups of an ended job.
func (f *FSM) removeJobGroupsLocked(c *applyCtx, jobID string) {
	for _, g := range sortedValues(f.groups, func(g *pb.PlacementGroupInfo) string { return g.PlacementGroupId }) {
		if g.JobId == jobID && !g.Detached {
			f.removeGroupLocked(c, g, "its job "+jobID+" ended")
		}
	}
}

func (f *FSM) putGroup(c *applyCtx, g *pb.PlacementGroupInfo) {
	f.groups[g.PlacementGroupId] = g
	if g.Name != "" {
		k := nameKey(g.Namespace, g.Name)
		if g.State == pb.PlacementGroupState_PG_REMOVED {
			if f.groupNames[k] == g.PlacementGroupId {
				delete(f.groupNames, k)
			}
		} else {
			f.groupNames[k] = g.PlacementGroupId
		}
	}
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_PLACEMENT_GROUP, PlacementGroup: g})
}

// restoreGroups rebuilds the table and its derived indexes from a snapshot.
func (f *FSM) restoreGroups(gs []*pb.PlacementGroupInfo) {
	for _, g := range gs {
		f.groups[g.PlacementGroupId] = g
		if g.State == pb.PlacementGroupState_PG_REMOVED {
			f.removedGroups = append(f.removedGroups, deadKey{g.RemovedIndex, g.PlacementGroupId})
		} else if g.Name != "" {
			f.groupNames[nameKey(g.Namespace, g.Name)] = g.PlacementGroupId
		}
	}
	heap.Init(&f.removedGroups)
}

// ---- reads ------------------------------------------------------------------

// PlacementGroups lists groups by ID. The messages are shared: clone
// before changing.
func (f *FSM) PlacementGroups() []*pb.PlacementGroupInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.groups, func(g *pb.PlacementGroupInfo) string { return g.PlacementGroupId })
}

// PlacementGroup returns one group, or nil.
func (f *FSM) PlacementGroup(id string) *pb.PlacementGroupInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.groups[id]
}

// NamedPlacementGroup returns the live group of a name in a namespace.
func (f *FSM) NamedPlacementGroup(namespace, name string) (*pb.PlacementGroupInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, ok := f.groupNames[nameKey(namespace, name)]
	if !ok {
		return nil, rpcerr.Wrapf(ErrPlacementGroupNotFound, "no placement group named %q in namespace %q", name, namespace)
	}
	return f.groups[id], nil
}
