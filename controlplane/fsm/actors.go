package fsm

import (
	"container/heap"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// The actor table. An actor's state machine lives here, so whichever head
// leads can finish a placement or restart another leader began:
//
//	PENDING_CREATION --ActorAlive--> ALIVE --ActorFailed--> RESTARTING --ActorAlive--> ALIVE
//	       any state --ActorFailed (no restarts left, or a kill)--> DEAD
//
// Names are indexed per namespace while their actor is not DEAD.

func nameKey(namespace, name string) string { return namespace + "\x00" + name }

func applyRegisterActor(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var a pb.ActorInfo
	if err := decode(body, &a); err != nil {
		return errResult(err)
	}
	if a.ActorId == "" || a.ClassName == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "actor without id or class"))
	}
	if _, ok := f.actors[a.ActorId]; ok {
		return errResult(rpcerr.Wrapf(ErrActorExists, "actor %s", a.ActorId))
	}
	if a.Name != "" {
		if id, taken := f.actorNames[nameKey(a.Namespace, a.Name)]; taken {
			return errResult(rpcerr.Wrapf(ErrActorNameTaken, "%q in namespace %q is actor %s", a.Name, a.Namespace, id))
		}
	}
	if j := f.jobs[a.JobId]; j != nil && j.State != pb.JobState_JOB_RUNNING && !a.Detached {
		return errResult(rpcerr.Wrapf(ErrJobNotFound, "job %s has ended", a.JobId))
	}
	// An actor whose constructor takes references not ready yet waits as
	// DEPENDENCIES_UNREADY (its name already taken) until its owner says
	// they are (ActorDepsResolved); every other starts PENDING_CREATION.
	if a.State != pb.ActorState_DEPENDENCIES_UNREADY {
		a.State = pb.ActorState_PENDING_CREATION
	}
	a.NodeId, a.WorkerId, a.WorkerAddress, a.DeathCause, a.PendingReason = "", "", "", "", ""
	a.NumRestarts = 0
	a.CreatedUnixNano = c.timeNanos
	f.putActor(c, &a)
	return &pb.CommandResult{Id: a.ActorId, Flag: true}
}

func applyActorDepsResolved(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.ActorDepsResolvedCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.actors[cmd.ActorId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrActorNotFound, "%q", cmd.ActorId))
	}
	if old.State != pb.ActorState_DEPENDENCIES_UNREADY {
		return &pb.CommandResult{Flag: false} // killed meanwhile, or a repeat
	}
	a := proto.Clone(old).(*pb.ActorInfo)
	a.State = pb.ActorState_PENDING_CREATION
	a.InitArgs = cmd.InitArgs
	f.putActor(c, a)
	return &pb.CommandResult{Flag: true}
}

func applyActorAlive(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.ActorAliveCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.actors[cmd.ActorId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrActorNotFound, "%q", cmd.ActorId))
	}
	// Only the placement of the current incarnation counts: a late or
	// repeated report (an old leader's) changes nothing, and says so.
	if (old.State != pb.ActorState_PENDING_CREATION && old.State != pb.ActorState_RESTARTING) || old.NumRestarts != cmd.NumRestarts {
		return &pb.CommandResult{Flag: false}
	}
	a := proto.Clone(old).(*pb.ActorInfo)
	a.State = pb.ActorState_ALIVE
	a.NodeId, a.WorkerId, a.WorkerAddress, a.PendingReason = cmd.NodeId, cmd.WorkerId, cmd.WorkerAddress, ""
	f.putActor(c, a)
	return &pb.CommandResult{Flag: true}
}

func applyActorFailed(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.ActorFailedCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.actors[cmd.ActorId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrActorNotFound, "%q", cmd.ActorId))
	}
	if old.State == pb.ActorState_DEAD {
		return &pb.CommandResult{Flag: false}
	}
	if cmd.WorkerId != "" && (old.State != pb.ActorState_ALIVE || cmd.WorkerId != old.WorkerId) {
		return &pb.CommandResult{Flag: false} // about an older incarnation
	}
	f.failActorLocked(c, old, cmd.Cause, cmd.NoRestart)
	return &pb.CommandResult{Flag: true}
}

// failActorLocked restarts the actor if it may, else marks it DEAD.
func (f *FSM) failActorLocked(c *applyCtx, old *pb.ActorInfo, cause string, noRestart bool) {
	a := proto.Clone(old).(*pb.ActorInfo)
	a.WorkerAddress = ""
	canRestart := a.MaxRestarts < 0 || a.NumRestarts < a.MaxRestarts
	// A placement under way (never ALIVE in this incarnation) is simply
	// redone: it costs no restart.
	if !noRestart && old.State != pb.ActorState_ALIVE {
		a.PendingReason = cause
		f.putActor(c, a)
		return
	}
	if !noRestart && canRestart {
		a.State = pb.ActorState_RESTARTING
		a.NumRestarts++
		a.PendingReason = cause
	} else {
		a.State = pb.ActorState_DEAD
		a.DeathCause = cause
		a.PendingReason = ""
		a.DeadIndex = c.index
	}
	f.putActor(c, a)
	if a.State == pb.ActorState_DEAD {
		f.rememberDeadLocked(a)
		if a.Detached {
			f.endRetentionLocked(c)
		}
	}
}

// MaxDeadActors bounds how many DEAD actors the store keeps (Ray caps its
// cache of destroyed actors the same way); older ones are dropped so the
// table and snapshots stay bounded under a long-running workload. It shapes
// replicated state, so it is a constant, not an option.
const MaxDeadActors = 10000

// deadKey orders DEAD actors by death: the index they died at, then ID
// (several may die in one entry). Both parts are in the replicated state,
// so a head that restored a snapshot drops the same actors as one that
// applied the whole log.
type deadKey struct {
	index uint64
	id    string
}

type deadHeap []deadKey

func (h deadHeap) Len() int { return len(h) }
func (h deadHeap) Less(i, j int) bool {
	return h[i].index < h[j].index || (h[i].index == h[j].index && h[i].id < h[j].id)
}
func (h deadHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *deadHeap) Push(x any)   { *h = append(*h, x.(deadKey)) }
func (h *deadHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	*h = old[:len(old)-1]
	return k
}

// rememberDeadLocked records a newly DEAD actor and drops the oldest DEAD
// ones past the bound.
func (f *FSM) rememberDeadLocked(a *pb.ActorInfo) {
	heap.Push(&f.deadActors, deadKey{a.DeadIndex, a.ActorId})
	for f.deadActors.Len() > f.maxDeadActors {
		k := heap.Pop(&f.deadActors).(deadKey)
		delete(f.actors, k.id)
	}
}

func applyActorPending(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.ActorPendingCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.actors[cmd.ActorId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrActorNotFound, "%q", cmd.ActorId))
	}
	if old.State == pb.ActorState_ALIVE || old.State == pb.ActorState_DEAD || old.PendingReason == cmd.Reason {
		return &pb.CommandResult{Flag: false}
	}
	a := proto.Clone(old).(*pb.ActorInfo)
	a.PendingReason = cmd.Reason
	f.putActor(c, a)
	return &pb.CommandResult{Flag: true}
}

// killJobActorsLocked ends the non-detached actors of an ended job, in ID
// order so every head emits the same events.
func (f *FSM) killJobActorsLocked(c *applyCtx, jobID, why string) {
	for _, a := range sortedValues(f.actors, func(a *pb.ActorInfo) string { return a.ActorId }) {
		if a.JobId == jobID && !a.Detached && a.State != pb.ActorState_DEAD {
			f.failActorLocked(c, a, why, true)
		}
	}
}

// putActor stores a new version of an actor, keeps the name index in step
// and records the change.
func (f *FSM) putActor(c *applyCtx, a *pb.ActorInfo) {
	f.actors[a.ActorId] = a
	if a.Name != "" {
		k := nameKey(a.Namespace, a.Name)
		if a.State == pb.ActorState_DEAD {
			if f.actorNames[k] == a.ActorId {
				delete(f.actorNames, k) // the name is free again, as in Ray
			}
		} else {
			f.actorNames[k] = a.ActorId
		}
	}
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_ACTOR, Actor: a})
}

// ---- reads ------------------------------------------------------------------

// Actors lists actors by ID. The messages are shared: clone before changing.
func (f *FSM) Actors() []*pb.ActorInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.actors, func(a *pb.ActorInfo) string { return a.ActorId })
}

// Actor returns one actor, or nil.
func (f *FSM) Actor(id string) *pb.ActorInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.actors[id]
}

// NamedActor returns the live actor of a name in a namespace.
func (f *FSM) NamedActor(namespace, name string) (*pb.ActorInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	id, ok := f.actorNames[nameKey(namespace, name)]
	if !ok {
		return nil, rpcerr.Wrapf(ErrActorNotFound, "no actor named %q in namespace %q", name, namespace)
	}
	return f.actors[id], nil
}
