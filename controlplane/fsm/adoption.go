package fsm

import (
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/durable"
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
// records of a job's driver (the job ends with its driver; Ray's rule),
// except in a job that ends retained (below), whose records are all
// adopted. An adopted record goes when its job ends (or its retention
// does), or by the lineage bound.

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
		if r.AdoptedUnixNano != 0 || !f.jobKeepsLineageLocked(r.JobId) {
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

// jobKeepsLineageLocked says whether job's lineage is kept: it runs, or
// it ended retained.
func (f *FSM) jobKeepsLineageLocked(job string) bool {
	j := f.jobs[job]
	return j == nil || j.State == pb.JobState_JOB_RUNNING || j.Retained
}

func (f *FSM) jobRetainedLocked(job string) bool {
	j := f.jobs[job]
	return j != nil && j.Retained
}

// Retained jobs. When a driver ends, the job ends (Ray's rule) but its
// objects may live on in what detached actors hold: the job's own detached
// actors, or, for a detached job (JobLifetime(Detached)), any detached
// actor, since refs cross jobs through named actors and the KV. Borrowers
// register with owners, not here, so the control plane cannot tell which
// refs a detached actor holds; it keeps all the job's unreleased lineage,
// adopted, while such a holder lives, and raylets keep the job's objects
// (Puts too: their copies are all there is). When the last holder dies the
// job's retention ends and everything goes, as at a plain job end.

// detachedHoldersLocked says whether detached actors that may hold job j's
// refs are alive (or about to be).
func (f *FSM) detachedHoldersLocked(j *pb.JobInfo) bool {
	for _, a := range f.actors {
		if a.Detached && a.State != pb.ActorState_DEAD && (j.Detached || a.JobId == j.JobId) {
			return true
		}
	}
	return false
}

// adoptJobLineageLocked adopts every record of a job that ends retained:
// its driver and workers are gone or going, and the control plane answers
// for their objects from now on.
func (f *FSM) adoptJobLineageLocked(c *applyCtx, job string) {
	l := &f.lineage
	jl := l.jobs[job]
	if jl == nil {
		return
	}
	tasks := make([]ids.TaskID, 0, len(jl.tasks))
	for id := range jl.tasks {
		tasks = append(tasks, id)
	}
	sortTaskIDs(tasks)
	for _, id := range tasks {
		r := l.records[id]
		if r.AdoptedUnixNano != 0 {
			continue
		}
		n := shallowRecord(r)
		n.AdoptedUnixNano = c.timeNanos
		l.replace(id, n)
	}
}

// endRetentionLocked ends the retention of the jobs no detached actor can
// hold refs of any more; a detached actor's death calls it.
func (f *FSM) endRetentionLocked(c *applyCtx) {
	var ended []*pb.JobInfo
	for _, j := range f.jobs {
		if j.Retained && !f.detachedHoldersLocked(j) {
			ended = append(ended, j)
		}
	}
	sort.Slice(ended, func(a, b int) bool { return ended[a].JobId < ended[b].JobId })
	for _, old := range ended {
		j := proto.Clone(old).(*pb.JobInfo)
		j.Retained = false
		f.jobs[j.JobId] = j
		f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_JOB, Job: j})
		f.dropJobLineageLocked(j.JobId)
		f.dropDurableLocked(c, j.JobId)
	}
}

// dropDurableLocked deletes the Durable Put values of an ended job: its
// objects end with it, and a dead owner never deletes its own.
func (f *FSM) dropDurableLocked(c *applyCtx, job string) {
	ns := f.kv[durable.Namespace]
	var keys []string
	for k := range ns {
		if _, j, ok := durable.Parse(k); ok && j == job {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		delete(ns, k)
		f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_KV, KvNamespace: durable.Namespace, KvKey: k, Deleted: true})
	}
	if len(ns) == 0 {
		delete(f.kv, durable.Namespace)
	}
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
