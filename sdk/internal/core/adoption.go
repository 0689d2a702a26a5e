package core

// Borrowers of objects whose owner died (the SDK side of
// controlplane/fsm/adoption.go). A borrower that cannot reach an object's
// owner asks the control plane, which adopted the owner's recorded
// lineage when it found the owner dead. Its answer: the owner is alive
// after all (ask it again); the object is on these raylets (read it
// there); it is lost and this process is to run its task again (the
// leader hands each rebuild to one borrower at a time, by a lease in the
// Raft log); another borrower is rebuilding it (ask again shortly); or it
// is gone, with the reason (never recorded: small values live only in
// their owner's memory; released; its job ended; out of retries).
//
// A rebuild runs the recorded task as its owner would have, with the same
// task and object IDs, so every borrower's refs name the new copies; its
// reference arguments resolve the same way (recursively, when their owner
// is dead too). The rebuilder does not own what it rebuilt: its entries are
// borrowed ones, so it never frees the copies, which live (adopted) until
// their job ends.

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

const (
	// resolveCallTimeout bounds one ResolveObject call with its retries.
	resolveCallTimeout = 30 * time.Second
	// maxOwnerAliveRounds bounds how often a borrower goes back to an
	// owner the control plane still reaches while this process cannot.
	maxOwnerAliveRounds = 3
	// adoptedRebuildRetries is how often a rebuild's task is run again
	// after its worker died, within the one rebuild the leader granted.
	adoptedRebuildRetries = 1
)

// fetchFromOwner asks an object's owner for its value; when the owner
// cannot be reached, the control plane answers for it.
func (c *Worker) fetchFromOwner(k ObjectKey) (*pb.ObjectValue, error) {
	for round := 0; ; round++ {
		cc, err := c.conn(k.Owner)
		if err == nil {
			var v *pb.ObjectValue
			v, err = pb.NewCoreWorkerClient(cc).GetObject(c.ctx, &pb.OwnerGetRequest{ObjectId: k.ID[:]})
			if err == nil || !unreachable(err) {
				return v, err
			}
		}
		if c.ctx.Err() != nil || round >= maxOwnerAliveRounds {
			return ownerDiedValue(k, err), nil
		}
		if v := c.adoptedValue(k, nil); v != nil {
			return v, nil
		}
	}
}

// unreachable says whether a call failed because its peer is gone.
func unreachable(err error) bool { return status.Code(err) == codes.Unavailable }

// adoptedValue asks the control plane for an object whose owner this
// process cannot reach; failed are raylets it could not read it from. It
// returns nil when the leader still reaches the owner.
func (c *Worker) adoptedValue(k ObjectKey, failed []string) *pb.ObjectValue {
	cp, err := c.controlPlane()
	if err != nil {
		return ownerDiedValue(k, err)
	}
	for {
		ctx, cancel := context.WithTimeout(c.ctx, resolveCallTimeout)
		rep, err := cp.ResolveObject(ctx, &cpb.ResolveObjectRequest{ObjectId: k.ID[:], OwnerAddress: k.Owner,
			Requester: c.address, FailedLocations: failed})
		cancel()
		if err != nil {
			return ownerDiedValue(k, fmt.Errorf("and the control plane could not say who answers for it now: %w", err))
		}
		switch rep.State {
		case cpb.ResolveState_RESOLVE_OWNER_ALIVE:
			return nil
		case cpb.ResolveState_RESOLVE_AVAILABLE:
			if rep.HasValue {
				return &pb.ObjectValue{Data: rep.Value, Format: pb.Format(rep.Format)}
			}
			if len(rep.Locations) == 0 {
				return ownerDiedValue(k, fmt.Errorf("the control plane named no copy"))
			}
			return &pb.ObjectValue{Location: rep.Locations[0], Copies: rep.Locations[1:]}
		case cpb.ResolveState_RESOLVE_REBUILD:
			return c.rebuildAdopted(k, rep.Record)
		case cpb.ResolveState_RESOLVE_REBUILDING:
			t := time.NewTimer(time.Duration(max(rep.RetryAfterMs, 10)) * time.Millisecond)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
				return ownerDiedValue(k, c.ctx.Err())
			}
		default:
			return &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OWNER_DIED, Message: rep.Reason, ObjectId: k.ID[:]}}
		}
	}
}

// rebuildAdopted runs an adopted record's task again (this process was
// granted the rebuild) and returns the value of k once its returns are
// made; the record is updated with the outcome, which ends the rebuild's
// lease for the other borrowers.
func (c *Worker) rebuildAdopted(k ObjectKey, rec *cpb.TaskRecord) *pb.ObjectValue {
	tid, err := ids.TaskFromBytes(rec.GetTaskId())
	if err != nil {
		return lostValue(k.ID, fmt.Sprintf("its adopted record is malformed: %v", err))
	}
	spec := &pb.TaskSpec{TaskId: rec.TaskId, JobId: rec.JobId, Function: rec.Function, NumReturns: rec.NumReturns,
		OwnerAddress: c.address, NumCpus: rec.Resources[resources.CPU], Attempt: max(rec.Attempts-1, 0),
		Args: make([]*pb.TaskArg, len(rec.Args))}
	t := newTask(spec, resources.Set(rec.Resources))
	for i, a := range rec.Args {
		if len(a.ObjectId) == 0 {
			spec.Args[i] = &pb.TaskArg{Value: &pb.ObjectValue{Data: a.Value, Format: pb.Format(a.Format)}}
			continue
		}
		id, err := ids.ObjectFromBytes(a.ObjectId)
		if err != nil {
			return lostValue(k.ID, fmt.Sprintf("its adopted record has a malformed argument: %v", err))
		}
		spec.Args[i] = &pb.TaskArg{ObjectId: a.ObjectId}
		d := t.dm()
		d.refs = append(d.refs, i)
		d.refKeys = append(d.refKeys, ObjectKey{ID: id, Owner: a.OwnerAddress})
	}
	t.retriesLeft, t.retryExceptions = adoptedRebuildRetries, rec.Options["retry_exceptions"] == "true"
	// Entries for every return, borrowed ones: the task manager completes
	// them (an object with no entry would have its new copy freed).
	t.returns = make([]ids.ObjectID, rec.NumReturns)
	var added []ids.ObjectID
	for i := range t.returns {
		t.returns[i] = ids.ReturnID(tid, uint32(i+1))
		if _, ok := c.mem.Fetching(t.returns[i]); ok && t.returns[i] != k.ID {
			added = append(added, t.returns[i])
		}
	}
	o := c.mem.Get(k.ID)
	c.log.Info("rebuilding an object whose owner died, from its adopted lineage", zap.Stringer("object", k.ID),
		zap.String("function", rec.Function), zap.String("owner", k.Owner), zap.Int32("attempt", spec.Attempt+1))
	c.resolveAndEnqueue(t)
	var v *pb.ObjectValue
	if o == nil {
		v = lostValue(k.ID, "released while it was rebuilt")
	} else {
		select {
		case <-o.Ready():
			v = c.mem.Value(o)
		case <-c.ctx.Done():
			return ownerDiedValue(k, c.ctx.Err())
		}
	}
	for _, id := range added {
		// Returns nobody here asked for: only the copies stay.
		if e := c.mem.Get(id); e != nil && e.IsReady() {
			c.mem.Forget(id)
		}
	}
	u := &cpb.TaskUpdate{TaskId: rec.TaskId, Attempt: spec.Attempt + 1, State: cpb.TaskState_TASK_FINISHED}
	if v.Error != nil {
		u.State, u.Error = cpb.TaskState_TASK_FAILED, v.Error.Message
	}
	if r := c.lin.recorder(); r != nil {
		ctx, cancel := context.WithTimeout(c.ctx, resolveCallTimeout)
		err := r.Update(ctx, u)
		if err == nil {
			err = r.Flush(ctx)
		}
		cancel()
		if err != nil && c.ctx.Err() == nil {
			c.log.Warn("the outcome of a rebuild was not recorded; other borrowers wait for its lease to expire", zap.Error(err))
		}
	}
	return v
}

// ownerGone says whether an owner no longer answers this process.
func (c *Worker) ownerGone(owner string) bool {
	cc, err := c.conn(owner)
	if err != nil {
		return true
	}
	for range 2 {
		ctx, cancel := context.WithTimeout(c.ctx, 500*time.Millisecond)
		_, err = pb.NewCoreWorkerClient(cc).Ping(ctx, &pb.PingRequest{})
		cancel()
		if err == nil {
			return false
		}
	}
	return c.ctx.Err() == nil
}
