package fsm

import (
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Adoption: objects that outlive their owner. An owner's lineage records
// live here, not only in its memory, so when the owner dies (OwnerDied,
// after the leader checked it itself) the control plane adopts the records
// it still had unreleased: from then on the leader answers for their
// objects (where a copy is; whom to ask to run the task again), from any
// head after a failover, because all of it is in this table.
//
// Not adopted: records of a job that ended (they are dropped with it) and
// records of a job's driver (the job ends with its driver; Ray's rule).
// An adopted record goes when its job ends, or by the lineage bound.

// MaxDeadOwners bounds the remembered dead owners (oldest forgotten
// first). It shapes replicated state, so it is a constant.
const MaxDeadOwners = 1 << 16

// deadOwners remembers the owners declared dead, in the order they died.
type deadOwners struct {
	by    map[string]*pb.DeadOwner
	order []*pb.DeadOwner
}

func (d *deadOwners) add(o *pb.DeadOwner) {
	if d.by == nil {
		d.by = map[string]*pb.DeadOwner{}
	}
	if len(d.order) >= MaxDeadOwners {
		delete(d.by, d.order[0].Address)
		d.order = d.order[1:]
	}
	d.by[o.Address] = o
	d.order = append(d.order, o)
}

func applyOwnerDied(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.OwnerDiedCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	if cmd.OwnerAddress == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "owner_address is empty"))
	}
	if f.dead.by[cmd.OwnerAddress] != nil {
		return okResult() // a retry, or another raylet's report
	}
	f.dead.add(&pb.DeadOwner{Address: cmd.OwnerAddress, UnixNano: c.timeNanos, Index: c.index})
	l := &f.lineage
	// Rebuilds it was running are void: the next borrower to ask gets one.
	var void []ids.TaskID
	for id := range l.rebuilding {
		if l.records[id].Rebuilder == cmd.OwnerAddress {
			void = append(void, id)
		}
	}
	sortTaskIDs(void)
	for _, id := range void {
		n := shallowRecord(l.records[id])
		n.Rebuilder, n.RebuildUnixNano = "", 0
		l.replace(id, n)
	}
	if f.isDriverLocked(cmd.OwnerAddress) {
		return okResult()
	}
	owned := make([]ids.TaskID, 0, len(l.owners[cmd.OwnerAddress]))
	for id := range l.owners[cmd.OwnerAddress] {
		owned = append(owned, id)
	}
	sortTaskIDs(owned)
	var adopted uint64
	for _, id := range owned {
		r := l.records[id]
		if r.AdoptedUnixNano != 0 || !f.jobRunningLocked(r.JobId) {
			continue
		}
		n := shallowRecord(r)
		n.AdoptedUnixNano = c.timeNanos
		l.replace(id, n)
		adopted++
	}
	return &pb.CommandResult{Count: adopted, Flag: true}
}

// isDriverLocked says whether addr is the driver of a job that has not
// ended.
func (f *FSM) isDriverLocked(addr string) bool {
	for _, j := range f.jobs {
		if j.DriverAddress == addr && j.State == pb.JobState_JOB_RUNNING {
			return true
		}
	}
	return false
}

func (f *FSM) jobRunningLocked(job string) bool {
	j := f.jobs[job]
	return j == nil || j.State == pb.JobState_JOB_RUNNING
}

func applyAdoptedRebuild(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.AdoptedRebuildCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	id, err := ids.TaskFromBytes(cmd.TaskId)
	if err != nil {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "task_id: %v", err))
	}
	if cmd.Rebuilder == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "rebuilder is empty"))
	}
	l := &f.lineage
	r, ok := l.records[id]
	if !ok || r.AdoptedUnixNano == 0 {
		return errResult(rpcerr.Wrapf(ErrLineageNotFound, "no adopted record of task %s", id))
	}
	if r.Rebuilder != "" && r.RebuildUnixNano >= cmd.LeaseExpiredBefore {
		return okResult() // a rebuild under way: Flag false
	}
	if r.Rebuilder == "" && r.Attempts != cmd.Attempt {
		return okResult() // rebuilt since the caller looked
	}
	n := shallowRecord(r)
	n.Attempts++
	n.State = pb.TaskState_TASK_RUNNING
	n.FinishedUnixNano, n.FinishedIndex = 0, 0
	n.Rebuilder, n.RebuildUnixNano = cmd.Rebuilder, c.timeNanos
	l.replace(id, n)
	return &pb.CommandResult{Flag: true}
}

// OwnerDead says whether the control plane declared addr dead.
func (f *FSM) OwnerDead(addr string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.dead.by[addr] != nil
}

// IsDriver says whether addr is the driver of a running job.
func (f *FSM) IsDriver(addr string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.isDriverLocked(addr)
}

// Adopted returns, of objs, those whose records the control plane adopted
// and whose owner had not released them: their copies are to be kept.
func (f *FSM) Adopted(objs []ids.ObjectID) []ids.ObjectID {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []ids.ObjectID
	for _, o := range objs {
		if f.adoptedLocked(o) {
			out = append(out, o)
		}
	}
	return out
}

func (f *FSM) adoptedLocked(o ids.ObjectID) bool {
	if o.IsPut() || o.Index() == 0 {
		return false
	}
	r, ok := f.lineage.records[o.Task()]
	if !ok || r.AdoptedUnixNano == 0 {
		return false
	}
	if int(o.Index()) > int(r.NumReturns) {
		return true // a generator's item: kept while the record is
	}
	return !isReleased(r, o.Index())
}
