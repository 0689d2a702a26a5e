package ray

// Lineage in the owner: recording and reconstruction (Ray's lineage
// reconstruction, owner side).
//
// Recording. Every normal task an owner submits is retained in the owner
// (below) from its original spec (inline arguments as values, reference
// arguments by object ID and owner, never their resolved locations). Its
// TaskRecord goes to the control plane (batched by a per-core
// lineage.Recorder) when its outputs can be lost without the owner: when an
// attempt finishes with a return stored in a raylet, the task is recorded
// (state, attempts and node included) together with every retained task
// upstream of it not recorded yet, before the returns are completed, so
// before anyone can consume them. A task whose outputs are all inline is
// never recorded: its outputs live and die with the owner, so nobody could
// ever need its lineage except as an ancestor of a stored object, when it
// is recorded then. This keeps streams of small tasks free of Raft writes
// (recording every task cost 45-56 % of tasks_async here). Later attempts of
// a recorded task (rebuilds) are updates. Actor creations and actor calls
// are not recorded: running an
// actor method again means nothing without the actor's state at the time of
// the call, and a restarted actor reruns its constructor from the actor table.
//
// Commit before consume. An output stored in a raylet (ObjectValue.Location
// set) can be lost with its node and rebuilt from lineage, so its record must
// be committed before anyone but the owner reads it: the resolver waits for
// the producers' records before pushing a task that takes such an object, and
// GetObject waits before serving a borrower. Inline outputs live in the owner
// and die with it, so no one can ever need their lineage: they need no wait,
// which keeps chains of small tasks as fast as without lineage.
//
// Retention. The owner keeps each recorded task's original spec (a
// lineageEntry) while any of its return objects is referenced (live > 0) or a
// retained task takes one of its outputs as an argument (dependents > 0); when
// both are zero the entry goes and its producers lose a dependent (cascade).
// This is the control plane's rule too, so both forget a task together: the
// owner tells the Recorder of each return object its count dropped to zero.
// A workload whose outputs are dropped (no chains) keeps no entries.
//
// Reconstruction. An owned return object found lost (a Get reading it, a task
// whose worker could not read it as an argument, or a freed argument a
// resubmitted task needs) is rebuilt by resubmitting its task with the same
// task ID, so the same object IDs. Deduplication is by object generation: the
// rebuild replaces the lost object in the object table by a fresh pending one, so
// whoever saw the lost one afterwards finds a different object and waits on
// it; every waiter gets the one outcome, value or error. A rebuild consumes
// one of the task's retries (MaxRetries); a task resubmitted because one of
// its arguments vanished does not (its own run did not fail), but such rounds
// are bounded (maxLostArgRounds) so a flapping node cannot livelock it.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/lineage"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

const (
	// maxLostArgRounds bounds how often a task is pushed again because an
	// argument it could not read was rebuilt.
	maxLostArgRounds = 3
	// maxGetRebuilds bounds how often one Get waits for a rebuild of the
	// object it reads.
	maxGetRebuilds = 3
	// recorderCloseTimeout bounds the final lineage flush at shutdown: the
	// job ends right after, and its lineage with it.
	recorderCloseTimeout = 2 * time.Second
	// recorderMaxBatch is the most lineage items in one control-plane write.
	recorderMaxBatch = 16384
)

// RecordLineage turns lineage on (the default) or off. Off, tasks are not
// recorded in the control plane and the owner keeps no specs, so an output
// lost with its node stays lost (Get returns ErrObjectLost). It applies to
// the driver; tasks submitted by workers record their lineage regardless.
func RecordLineage(on bool) InitOption { return func(o *initOptions) { o.noLineage = !on } }

// lineageState is a core's lineage: the recorder (made on first use: a
// worker makes its control-plane client lazily) and the retained entries.
type lineageState struct {
	off  bool
	once sync.Once
	rec  *lineage.Recorder
	// mu guards the retained entries; it is taken before the object
	// table's lock, never after.
	mu     sync.Mutex
	tasks  map[ids.TaskID]*lineageEntry
	rebuil atomic.Int64 // rebuild resubmissions (tests)
}

// lineageEntry is a retained task: what is needed to run it again.
type lineageEntry struct {
	t    *task         // its latest run (spec, retries left)
	args []*pb.TaskArg // as submitted: reference arguments carry only their ID
	res  resources.Set // its resource shape
	// The task's return objects still in the object table, and the retained tasks
	// that take one of its outputs as an argument.
	live, dependents int
	// The retained producers of its owned reference arguments.
	deps []ids.TaskID
	// A run of it has not finished yet: a freed return it is about to make
	// again must not start another.
	inflight bool
	// What its record needs besides the spec.
	maxRetries int32
	retryExc   bool
	node       string // where its last attempt ran
	// sent: its record went to the control plane. Returns released before
	// that are released there right after the record.
	sent          bool
	releasedEarly []ids.ObjectID
}

// recorder returns the core's lineage recorder, nil when lineage is off or
// no control plane is reachable from this process.
func (c *core) recorder() *lineage.Recorder {
	if c.lin.off {
		return nil
	}
	c.lin.once.Do(func() {
		cp, err := c.controlPlane()
		if err != nil {
			c.log.Warn("lineage is not recorded: no control plane", zap.Error(err))
			return
		}
		// Batches larger than the default: under a stream of small tasks
		// the recorder's cost per batch (a Raft round, and copying what
		// stays queued) dominates; 16k items measured twice the
		// multi-client task rate of 2k.
		c.lin.rec = lineage.NewRecorder(cp, lineage.Options{Logger: c.log, CloseTimeout: recorderCloseTimeout, MaxBatch: recorderMaxBatch})
	})
	return c.lin.rec
}

// closeRecorder flushes and stops the recorder, if one was made.
func (c *core) closeRecorder() {
	c.lin.once.Do(func() {}) // none may be made from now on
	if c.lin.rec != nil {
		if err := c.lin.rec.Close(); err != nil {
			c.log.Debug("lineage recorder closed with an error", zap.Error(err))
		}
	}
}

// recordTask retains a newly submitted task's spec; its record is sent
// later, if ever (persist). The spec's arguments are as encodeArgs made
// them (not resolved yet).
func (c *core) recordTask(t *task, o *callOptions) {
	if c.lin.off {
		return
	}
	e := &lineageEntry{t: t, args: t.spec.Args, res: o.res, live: len(t.returns), inflight: true,
		maxRetries: int32(o.maxRetries), retryExc: o.retryExceptions}
	if len(t.refs) > 0 {
		// The resolver replaces resolved arguments in t.spec.Args (it never
		// changes a TaskArg): a copy of the slice keeps the originals.
		e.args = slices.Clone(t.spec.Args)
	}
	tid, _ := ids.TaskFromBytes(t.spec.TaskId)
	c.lin.mu.Lock()
	if c.lin.tasks == nil {
		c.lin.tasks = map[ids.TaskID]*lineageEntry{}
	}
	for _, k := range t.refKeys {
		if k.owner != c.address || k.id.IsPut() {
			continue
		}
		if p := c.lin.tasks[k.id.Task()]; p != nil {
			p.dependents++
			e.deps = append(e.deps, k.id.Task())
		}
	}
	c.lin.tasks[tid] = e
	t.lin = e
	c.lin.mu.Unlock()
}

// storesAny says whether a result has a return stored in a raylet.
func storesAny(res *pb.TaskResult) bool {
	for _, v := range res.Returns {
		if v.GetLocation() != "" {
			return true
		}
	}
	return false
}

// persist records a finished attempt of t that stored a return, before its
// returns are completed: the task itself (or an update, when it was
// recorded before) and every retained task upstream of it not recorded
// yet. It reports whether it sent the task's record.
func (c *core) persist(t *task, node string) bool {
	if c.lin.off || t.lin == nil {
		return false
	}
	rec := c.recorder()
	c.lin.mu.Lock()
	e := t.lin
	e.node = node
	if e.t != t || e.sent {
		c.lin.mu.Unlock()
		return false
	}
	var recs []*cpb.TaskRecord
	var early []ids.ObjectID
	c.persistLocked(e, true, &recs, &early)
	c.lin.mu.Unlock()
	if rec == nil {
		return true
	}
	for _, r := range recs {
		if err := rec.Record(c.ctx, r); err != nil && c.ctx.Err() == nil {
			c.log.Warn("lineage record failed", zap.String("function", r.Function), zap.Error(err))
		}
	}
	c.releaseLineage(early)
	return true
}

// persistLocked appends the records of e's unsent producers (first) and
// of e, marking them sent; finished says e's run just ended. c.lin.mu is held.
func (c *core) persistLocked(e *lineageEntry, finished bool, recs *[]*cpb.TaskRecord, early *[]ids.ObjectID) {
	e.sent = true
	for _, d := range e.deps {
		if p := c.lin.tasks[d]; p != nil && !p.sent {
			c.persistLocked(p, false, recs, early)
		}
	}
	t := e.t
	r := &cpb.TaskRecord{TaskId: t.spec.TaskId, JobId: c.jobID, Function: t.spec.Function,
		Args: make([]*cpb.LineageArg, len(e.args)), NumReturns: t.spec.NumReturns, OwnerAddress: c.address,
		Resources: e.res, MaxRetries: e.maxRetries, Attempts: t.spec.Attempt + 1, NodeId: e.node,
		State: cpb.TaskState_TASK_FINISHED}
	if e.inflight && !finished {
		r.State = cpb.TaskState_TASK_RUNNING // an upstream run still going (a rebuild)
	}
	for i, a := range e.args {
		if a.Value != nil {
			r.Args[i] = &cpb.LineageArg{Value: a.Value.Data, Format: int32(a.Value.Format)}
		}
	}
	for j, i := range t.refs {
		r.Args[i] = &cpb.LineageArg{ObjectId: e.args[i].ObjectId, OwnerAddress: t.refKeys[j].owner}
	}
	if e.retryExc {
		r.Options = map[string]string{"retry_exceptions": "true"}
	}
	*recs = append(*recs, r)
	*early = append(*early, e.releasedEarly...)
	e.releasedEarly = nil
}

// reportFinished reports a finished attempt of a task recorded before
// (a rebuild, or a retry of a recorded task) and waits, a bounded while,
// until it is committed: the record shows the attempt that made the
// returns, and where, before anyone reads them. Others send nothing.
func (c *core) reportFinished(t *task, node string) {
	if !c.reportAttempt(t, cpb.TaskState_TASK_FINISHED, node, "") {
		return
	}
	if rec := c.recorder(); rec != nil {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		if err := rec.Flush(ctx); err != nil && c.ctx.Err() == nil {
			c.log.Debug("lineage update not committed", zap.Error(err))
		}
	}
}

// reportAttempt sends the outcome (or start) of an attempt of a task
// already recorded in the control plane, and says whether it did;
// unrecorded tasks send nothing.
func (c *core) reportAttempt(t *task, state cpb.TaskState, node, why string) bool {
	if t.lin == nil {
		return false
	}
	c.lin.mu.Lock()
	sent := t.lin.sent
	c.lin.mu.Unlock()
	if !sent {
		return false
	}
	rec := c.recorder()
	if rec == nil {
		return false
	}
	u := &cpb.TaskUpdate{TaskId: t.spec.TaskId, Attempt: t.spec.Attempt + 1, State: state, NodeId: node, Error: why}
	if err := rec.Update(c.ctx, u); err != nil && c.ctx.Err() == nil {
		c.log.Debug("lineage update failed", zap.Error(err))
	}
	return true
}

// runEnded notes that a run of a retained task finished, before its
// returns complete: a rebuild asked for after that starts a new run.
func (c *core) runEnded(t *task) {
	if t.lin == nil {
		return
	}
	c.lin.mu.Lock()
	if t.lin.t == t {
		t.lin.inflight = false
	}
	c.lin.mu.Unlock()
}

// waitCommitted waits until the records of the producers of a task's
// stored, owned arguments are committed (commit before consume).
func (c *core) waitCommitted(ctx context.Context, producers []ids.TaskID) {
	if len(producers) == 0 {
		return
	}
	rec := c.recorder()
	if rec == nil {
		return
	}
	if err := rec.WaitCommitted(ctx, producers...); err != nil && ctx.Err() == nil {
		// The records are lost: the task may still run, but its inputs
		// could not be rebuilt by anyone but this owner.
		c.log.Warn("lineage not committed; consuming the outputs anyway", zap.Error(err))
	}
}

// producerToWait is the task whose record must commit before v (an object
// id owned by owner) is handed to another process, if any.
func (c *core) producerToWait(id ids.ObjectID, owner string, v *pb.ObjectValue) (ids.TaskID, bool) {
	if c.lin.off || v == nil || v.Location == "" || owner != c.address || id.IsPut() {
		return ids.TaskID{}, false
	}
	return id.Task(), true
}

// releasedLocked is called when an owned object's count reached zero and it
// left the object table; it reports whether the control plane must be told of the
// release (its task is recorded there). c.lin.mu is held.
func (c *core) releasedLocked(id ids.ObjectID) bool {
	if c.lin.off || id.IsPut() {
		return false
	}
	tid := id.Task()
	e := c.lin.tasks[tid]
	if e == nil {
		return false
	}
	e.live--
	sent := e.sent
	if !sent {
		// Not in the control plane yet: released there if it ever is.
		e.releasedEarly = append(e.releasedEarly, id)
	}
	c.maybeForgetLocked(tid, e)
	return sent
}

// maybeForgetLocked drops a retained entry that nothing needs any more and,
// in cascade, producers only it needed. c.lin.mu is held.
func (c *core) maybeForgetLocked(tid ids.TaskID, e *lineageEntry) {
	for e != nil && e.live <= 0 && e.dependents <= 0 && c.lin.tasks[tid] == e {
		delete(c.lin.tasks, tid)
		deps := e.deps
		e.deps = nil
		e = nil
		for _, d := range deps {
			p := c.lin.tasks[d]
			if p == nil {
				continue
			}
			p.dependents--
			c.maybeForgetLocked(d, p)
		}
	}
}

// releaseLineage tells the control plane about released return objects.
func (c *core) releaseLineage(objs []ids.ObjectID) {
	if len(objs) == 0 {
		return
	}
	if rec := c.recorder(); rec != nil {
		if err := rec.Release(c.ctx, objs...); err != nil && c.ctx.Err() == nil {
			c.log.Debug("lineage release failed", zap.Error(err))
		}
	}
}

// lostError is an ErrObjectLost for object id, for Get and task errors.
func lostError(id ids.ObjectID, why string) error {
	return fmt.Errorf("%w: object %s %s", ErrObjectLost, id, why)
}

// recoverObject is called when owned object id was found lost while seen
// was its entry. It returns the object to wait on instead: the current one
// when a rebuild already replaced seen, or the one a rebuild it starts now
// will complete. It fails when the object cannot be rebuilt.
func (c *core) recoverObject(id ids.ObjectID, seen *object) (*object, error) {
	c.lin.mu.Lock()
	defer c.lin.mu.Unlock()
	o := c.mem.Get(id)
	if o == nil || !o.Owned() {
		return nil, fmt.Errorf("%w: object %s was released", ErrObjectNotFound, id)
	}
	if o != seen {
		return o, nil
	}
	if id.IsPut() {
		return nil, lostError(id, "was made by Put: it cannot be rebuilt")
	}
	e := c.lin.tasks[id.Task()]
	if e == nil {
		return nil, lostError(id, "cannot be rebuilt: lineage released (or not recorded)")
	}
	if err := c.rebuildLocked(id, e); err != nil {
		return nil, err
	}
	return c.mem.Get(id), nil
}

// rebuildLocked resubmits a retained task to make its outputs again: its
// stored returns still referenced are replaced by pending objects (so
// everyone waiting for them waits for this run), and its owned arguments
// freed since are made again first, recursively. c.lin.mu is held.
// id is the object that asked for it.
func (c *core) rebuildLocked(id ids.ObjectID, e *lineageEntry) error {
	tid := id.Task()
	old := e.t
	if old.retriesLeft <= 0 {
		return lostError(id, fmt.Sprintf("cannot be rebuilt: its task %s (%s) is out of retries", tid, old.spec.Function))
	}
	for _, r := range old.returns {
		// Released, already pending, or inline (never lost) ones stay.
		c.mem.Renew(r)
	}
	t := newTask(&pb.TaskSpec{TaskId: old.spec.TaskId, JobId: old.spec.JobId, Function: old.spec.Function,
		NumReturns: old.spec.NumReturns, OwnerAddress: old.spec.OwnerAddress, NumCpus: old.spec.NumCpus,
		Attempt: old.spec.Attempt + 1, Args: slices.Clone(e.args)}, e.res)
	t.returns, t.retriesLeft, t.retryExceptions = old.returns, old.retriesLeft-1, old.retryExceptions
	t.refs, t.refKeys, t.lin = old.refs, old.refKeys, e
	e.t, e.inflight = t, true
	for _, k := range t.refKeys {
		if k.owner != c.address {
			continue
		}
		if _, created := c.mem.PinOrCreate(k.id); created {
			c.remakeLocked(k.id)
		}
		t.pinned = append(t.pinned, k.id)
	}
	c.lin.rebuil.Add(1)
	c.log.Info("rebuilding lost objects from lineage", zap.Stringer("task", tid), zap.String("function", t.spec.Function),
		zap.Int32("attempt", t.spec.Attempt+1))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.reportAttempt(t, cpb.TaskState_TASK_RUNNING, "", "")
		c.resolveAndEnqueue(t)
	}()
	return nil
}

// remakeLocked brings back a freed owned object an argument needs, which
// the object table holds again as pending (PinOrCreate): its retained task
// runs again, or it fails at once when it cannot be rebuilt. c.lin.mu is
// held.
func (c *core) remakeLocked(id ids.ObjectID) {
	var err error
	if id.IsPut() {
		err = lostError(id, "was released and made by Put: it cannot be rebuilt")
	} else if p := c.lin.tasks[id.Task()]; p == nil {
		err = lostError(id, "was released and cannot be rebuilt: lineage released")
	} else {
		p.live++
		if !p.inflight {
			err = c.rebuildLocked(id, p)
		}
	}
	if err != nil {
		c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: err.Error()}}})
	}
}

// lostArg handles a task whose worker could not read an argument this
// process owns: the argument is rebuilt and the task pushed again, without
// consuming its retries. It reports false when the error is not that.
func (c *core) lostArg(t *task, e *pb.TaskError) bool {
	if (e.Kind != pb.ErrorKind_ERROR_OBJECT_LOST && e.Kind != pb.ErrorKind_ERROR_OBJECT_NOT_FOUND) ||
		len(e.ObjectId) == 0 || t.lostRounds >= maxLostArgRounds || c.lin.off {
		return false
	}
	id, err := ids.ObjectFromBytes(e.ObjectId)
	if err != nil {
		return false
	}
	j := slices.IndexFunc(t.refKeys, func(k objectKey) bool { return k.id == id && k.owner == c.address })
	if j < 0 || j >= len(t.argObjs) || t.argObjs[j] == nil {
		return false
	}
	t.lostRounds++
	seen := t.argObjs[j]
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if _, err := c.recoverObject(id, seen); err != nil {
			c.fail(t, &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: fmt.Sprintf("argument: %v", err), ObjectId: e.ObjectId})
			return
		}
		c.resolveAndEnqueue(t)
	}()
	return true
}

// lineageRebuilds is how many tasks this process resubmitted to rebuild
// lost objects (tests count them).
func lineageRebuilds() int64 {
	c, err := current()
	if err != nil {
		return 0
	}
	return c.lin.rebuil.Load()
}

// retainedTasks is how many task specs this process retains (tests).
func retainedTasks() int {
	c, err := current()
	if err != nil {
		return 0
	}
	c.lin.mu.Lock()
	defer c.lin.mu.Unlock()
	return len(c.lin.tasks)
}

// recorderStats returns the lineage recorder's counters (tests).
func recorderStats() lineage.Stats {
	c, err := current()
	if err != nil || c.recorder() == nil {
		return lineage.Stats{}
	}
	return c.lin.rec.Stats()
}
