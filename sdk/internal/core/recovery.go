package core

// Recovery (Ray's ObjectRecoveryManager with the lineage part of its
// TaskManager): the owner's lineage, recorded and replayed. It owns the
// retained entries under its own lock (taken before the object table's,
// never after) and the lineage recorder; it reaches the object table
// (recoveryObjects), the control plane (recordSink) and the resolver that
// runs a task again (resolve) through small interfaces and funcs.
//
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
// The index. Most tasks' lineage is never needed: their outputs are inline
// and nobody passes them on. Such a task keeps no entry and no place in the
// by-task index; its task (which the refs of its returns point to, through
// their handles) is enough to make the entry later. The entry is made and
// indexed when its lineage is first needed: a task that takes one of its
// returns is submitted (the returns' handles lead to it), or a run of it
// stores a return (persist). Tasks with reference arguments make their
// entry at submission (their original arguments are kept before the
// resolver replaces them) and index it if they take an owned output.
// Releases and ended runs before that are not tracked: indexing reads them
// back (which returns are still in the object table, whether a run ended),
// so releases skip recovery's lock entirely while the index is empty.
//
import (
	"context"
	"fmt"
	"math/bits"
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

// recordSink is what recovery needs of the control plane's lineage table
// (a *lineage.Recorder).
type recordSink interface {
	Record(ctx context.Context, rec *cpb.TaskRecord) error
	Update(ctx context.Context, u *cpb.TaskUpdate) error
	Release(ctx context.Context, objects ...ids.ObjectID) error
	WaitCommitted(ctx context.Context, tasks ...ids.TaskID) error
	Flush(ctx context.Context) error
}

// recoveryObjects is what recovery needs of the object table.
type recoveryObjects interface {
	Get(id ids.ObjectID) *object
	// Renew replaces a lost stored object by a pending one.
	Renew(id ids.ObjectID) bool
	// PinOrCreate counts a reference to an owned object, making it again
	// (pending) if it was freed.
	PinOrCreate(id ids.ObjectID) (o *object, created bool)
	Complete(objs []ids.ObjectID, vals []*pb.ObjectValue)
}

// recovery is an owner's lineage: the recorder (opened on first use: a
// worker makes its control-plane client lazily) and the retained entries.
type recovery struct {
	off   bool
	owner string // this process's address: what it owns
	jobID string
	log   *zap.Logger
	ctx   context.Context // ends when the Worker closes
	objs  recoveryObjects
	// open makes the recorder (nil: lineage is not recorded); spawn runs
	// a goroutine the Worker owns; resolve resolves a task's arguments and
	// queues it (the Worker's resolver); fail fails a task (the task
	// manager's).
	open    func() recordSink
	spawn   func(func())
	resolve func(t *task)
	fail    func(t *task, e *pb.TaskError)

	once sync.Once
	rec  recordSink
	// mu guards the retained entries; it is taken before the object
	// table's lock, never after.
	mu       sync.Mutex
	tasks    map[ids.TaskID]*lineageEntry
	indexed  atomic.Int64 // len(tasks), read without the lock
	rebuilds atomic.Int64 // rebuild resubmissions (tests)
}

// lineageEntry is a retained task: what is needed to run it again. Once
// indexed its fields are guarded by r.mu (sent is also read without it).
type lineageEntry struct {
	t    *task         // its latest run (spec, retries left)
	args []*pb.TaskArg // as submitted: reference arguments carry only their ID
	res  resources.Set // its resource shape
	// gone marks its returns no longer in the object table (bit i for
	// return i+1; a task has at most 64, the API makes at most 2): live()
	// counts the others. dependents counts the retained tasks that take
	// one of its outputs as an argument.
	gone       uint64
	dependents int
	// The retained producers of its owned reference arguments.
	deps []ids.TaskID
	// A run of it has not finished yet: a freed return it is about to make
	// again must not start another.
	inflight bool
	// What its record needs besides the spec.
	maxRetries int32
	retryExc   bool
	node       string // where its last attempt ran
	// A generator's items in the object table, and one past the highest
	// index made (items are the task's returns 2..).
	items, itemEnd int
	// indexed: it went into the index (it may have left it since).
	indexed bool
	// sent: its record went to the control plane. Returns released before
	// that are released there right after the record.
	sent          atomic.Bool
	releasedEarly []ids.ObjectID
}

// live is how many of the task's returns are in the object table.
func (e *lineageEntry) live() int { return len(e.t.returns) - bits.OnesCount64(e.gone) + e.items }

// isItem says whether id is one of a generator task's items rather than
// one of its returns.
func (e *lineageEntry) isItem(id ids.ObjectID) bool { return int(id.Index()) > len(e.t.returns) }

// newEntry makes the entry of task t whose arguments as submitted are args.
func newEntry(t *task, args []*pb.TaskArg) *lineageEntry {
	return &lineageEntry{t: t, args: args, res: t.st.Res, inflight: true, maxRetries: t.maxRetries, retryExc: t.retryExceptions}
}

// openRecorder makes the Worker's lineage recorder, nil when no control
// plane is reachable from this process.
func (c *Worker) openRecorder() recordSink {
	cp, err := c.controlPlane()
	if err != nil {
		c.log.Warn("lineage is not recorded: no control plane", zap.Error(err))
		return nil
	}
	// Batches larger than the default: under a stream of small tasks
	// the recorder's cost per batch (a Raft round, and copying what
	// stays queued) dominates; 16k items measured twice the
	// multi-client task rate of 2k.
	return lineage.NewRecorder(cp, lineage.Options{Logger: c.log, CloseTimeout: recorderCloseTimeout, MaxBatch: recorderMaxBatch})
}

// recorder returns the lineage recorder, nil when lineage is off or no
// control plane is reachable.
func (r *recovery) recorder() recordSink {
	if r.off {
		return nil
	}
	r.once.Do(func() {
		if rec := r.open(); rec != nil {
			r.rec = rec
		}
	})
	return r.rec
}

// close flushes and stops the recorder, if one was made.
func (r *recovery) close() {
	r.once.Do(func() {}) // none may be made from now on
	if c, ok := r.rec.(interface{ Close() error }); ok {
		if err := c.Close(); err != nil {
			r.log.Debug("lineage recorder closed with an error", zap.Error(err))
		}
	}
}

// stats returns the recorder's counters (tests).
func (r *recovery) stats() lineage.Stats {
	if s, ok := r.recorder().(interface{ Stats() lineage.Stats }); ok {
		return s.Stats()
	}
	return lineage.Stats{}
}

// recordTask notes a newly submitted task's lineage: the handles of its
// returns lead to it, and a task with reference arguments keeps its
// original arguments (the spec's are as encodeArgs made them, not resolved
// yet) and, when it takes owned outputs, is indexed with its producers.
// Its record is sent later, if ever (persist). args are the submission's
// (their handles lead to the producers), keys its returns'.
func (r *recovery) recordTask(t *task, o *CallOptions, args []Arg, keys []ObjectKey) {
	if r.off {
		return
	}
	t.lineage, t.maxRetries = true, int32(o.MaxRetries)
	for _, k := range keys {
		k.H.producer = t
	}
	if len(t.d().refs) == 0 {
		return // its entry is made if its lineage is ever needed
	}
	// The resolver replaces resolved arguments in t.spec.Args (it never
	// changes a TaskArg): a copy of the slice keeps the originals.
	e := newEntry(t, slices.Clone(t.spec.Args))
	t.lin.Store(e)
	owned := false
	for _, k := range t.d().refKeys {
		owned = owned || (k.Owner == r.owner && !k.ID.IsPut())
	}
	if !owned {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for j, i := range t.d().refs {
		k := t.d().refKeys[j]
		if k.Owner != r.owner || k.ID.IsPut() {
			continue
		}
		ptid := k.ID.Task()
		p := r.tasks[ptid]
		if h := args[i].H; p == nil && h != nil && h.producer != nil {
			p = r.indexLocked(h.producer)
		}
		if p != nil && r.tasks[ptid] == p {
			p.dependents++
			e.deps = append(e.deps, ptid)
		}
	}
	if len(e.deps) > 0 {
		r.indexLocked(t)
	}
}

// indexLocked returns the entry of task t (made if it has none yet) and
// puts it in the index if it never was: what happened to it before is
// read back (which of its returns are still in the object table; whether
// a run ended). r.mu is held.
func (r *recovery) indexLocked(t *task) *lineageEntry {
	e := t.lin.Load()
	if e == nil {
		// A task without reference arguments: its spec's are as submitted.
		e = newEntry(t, t.spec.Args)
		t.lin.Store(e)
	}
	if e.indexed {
		return e
	}
	e.indexed = true
	// After t.lin is set: runEnded sets ended, then looks at t.lin, so
	// either it is seen here or runEnded takes the lock after this.
	if t.ended.Load() {
		e.inflight = false
	}
	for i, ret := range e.t.returns {
		if i < 64 && r.objs.Get(ret) == nil {
			// Released before: the control plane hears of it with the record.
			e.gone |= 1 << i
			e.releasedEarly = append(e.releasedEarly, ret)
		}
	}
	if r.tasks == nil {
		r.tasks = map[ids.TaskID]*lineageEntry{}
	}
	r.tasks[t.st.ID] = e
	r.indexed.Add(1)
	return e
}

// persist records a finished attempt of t that stored a return, before its
// returns are completed: the task itself (or an update, when it was
// recorded before) and every retained task upstream of it not recorded
// yet. It reports whether it sent the task's record.
func (r *recovery) persist(t *task, node string) bool {
	if r.off || !t.lineage {
		return false
	}
	rec := r.recorder()
	r.mu.Lock()
	e := r.indexLocked(t)
	e.node = node
	if e.t != t || e.sent.Load() {
		r.mu.Unlock()
		return false
	}
	var recs []*cpb.TaskRecord
	var early []ids.ObjectID
	r.persistLocked(e, true, &recs, &early)
	// Its returns may all have been released while it ran.
	r.maybeForgetLocked(t.st.ID, e)
	r.mu.Unlock()
	if rec == nil {
		return true
	}
	for _, tr := range recs {
		if err := rec.Record(r.ctx, tr); err != nil && r.ctx.Err() == nil {
			r.log.Warn("lineage record failed", zap.String("function", tr.Function), zap.Error(err))
		}
	}
	r.releaseLineage(early)
	return true
}

// persistLocked appends the records of e's unsent producers (first) and
// of e, marking them sent; finished says e's run just ended. r.mu is held.
func (r *recovery) persistLocked(e *lineageEntry, finished bool, recs *[]*cpb.TaskRecord, early *[]ids.ObjectID) {
	e.sent.Store(true)
	for _, d := range e.deps {
		if p := r.tasks[d]; p != nil && !p.sent.Load() {
			r.persistLocked(p, false, recs, early)
		}
	}
	t := e.t
	tr := &cpb.TaskRecord{TaskId: t.spec.TaskId, JobId: r.jobID, Function: t.spec.Function,
		Args: make([]*cpb.LineageArg, len(e.args)), NumReturns: t.spec.NumReturns, OwnerAddress: r.owner,
		Resources: e.res, MaxRetries: e.maxRetries, Attempts: t.spec.Attempt + 1, NodeId: e.node,
		State: cpb.TaskState_TASK_FINISHED}
	if e.inflight && !finished {
		tr.State = cpb.TaskState_TASK_RUNNING // an upstream run still going (a rebuild)
	}
	for i, a := range e.args {
		if a.Value != nil {
			tr.Args[i] = &cpb.LineageArg{Value: a.Value.Data, Format: int32(a.Value.Format)}
		}
	}
	for j, i := range t.d().refs {
		tr.Args[i] = &cpb.LineageArg{ObjectId: e.args[i].ObjectId, OwnerAddress: t.d().refKeys[j].Owner}
	}
	if e.retryExc {
		tr.Options = map[string]string{"retry_exceptions": "true"}
	}
	*recs = append(*recs, tr)
	*early = append(*early, e.releasedEarly...)
	e.releasedEarly = nil
}

// reportFinished reports a finished attempt of a task recorded before
// (a rebuild, or a retry of a recorded task) and waits, a bounded while,
// until it is committed: the record shows the attempt that made the
// returns, and where, before anyone reads them. Others send nothing.
func (r *recovery) reportFinished(t *task, node string) {
	if !r.reportAttempt(t, cpb.TaskState_TASK_FINISHED, node, "") {
		return
	}
	if rec := r.recorder(); rec != nil {
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		defer cancel()
		if err := rec.Flush(ctx); err != nil && r.ctx.Err() == nil {
			r.log.Debug("lineage update not committed", zap.Error(err))
		}
	}
}

// reportAttempt sends the outcome (or start) of an attempt of a task
// already recorded in the control plane, and says whether it did;
// unrecorded tasks send nothing.
func (r *recovery) reportAttempt(t *task, state cpb.TaskState, node, why string) bool {
	if e := t.lin.Load(); e == nil || !e.sent.Load() {
		return false
	}
	rec := r.recorder()
	if rec == nil {
		return false
	}
	u := &cpb.TaskUpdate{TaskId: t.spec.TaskId, Attempt: t.spec.Attempt + 1, State: state, NodeId: node, Error: why}
	if err := rec.Update(r.ctx, u); err != nil && r.ctx.Err() == nil {
		r.log.Debug("lineage update failed", zap.Error(err))
	}
	return true
}

// runEnded notes that a run of a retained task finished, before its
// returns complete: a rebuild asked for after that starts a new run.
func (r *recovery) runEnded(t *task) {
	t.ended.Store(true) // before t.lin is read: see indexLocked
	e := t.lin.Load()
	if e == nil {
		return
	}
	r.mu.Lock()
	if e.t == t {
		e.inflight = false
	}
	r.mu.Unlock()
}

// waitCommitted waits until the records of the producers of a task's
// stored, owned arguments are committed (commit before consume).
func (r *recovery) waitCommitted(ctx context.Context, producers []ids.TaskID) {
	if len(producers) == 0 {
		return
	}
	rec := r.recorder()
	if rec == nil {
		return
	}
	if err := rec.WaitCommitted(ctx, producers...); err != nil && ctx.Err() == nil {
		// The records are lost: the task may still run, but its inputs
		// could not be rebuilt by anyone but this owner.
		r.log.Warn("lineage not committed; consuming the outputs anyway", zap.Error(err))
	}
}

// producerToWait is the task whose record must commit before v (an object
// id owned by owner) is handed to another process, if any.
func (r *recovery) producerToWait(id ids.ObjectID, owner string, v *pb.ObjectValue) (ids.TaskID, bool) {
	if r.off || v == nil || v.Location == "" || owner != r.owner || id.IsPut() {
		return ids.TaskID{}, false
	}
	return id.Task(), true
}

// released is the object table's report that an owned object's last
// reference went: the task's spec may outlive the object, the bytes not.
func (r *recovery) released(id ids.ObjectID) {
	if r.off || id.IsPut() || r.indexed.Load() == 0 {
		// Not indexed: indexing reads the release back.
		return
	}
	r.mu.Lock()
	tell := r.releasedLocked(id)
	r.mu.Unlock()
	if tell {
		r.releaseLineage([]ids.ObjectID{id})
	}
}

// releasedLocked is called when an owned object's count reached zero and it
// left the object table; it reports whether the control plane must be told of the
// release (its task is recorded there). r.mu is held.
func (r *recovery) releasedLocked(id ids.ObjectID) bool {
	if r.off || id.IsPut() {
		return false
	}
	tid := id.Task()
	e := r.tasks[tid]
	if e != nil && e.isItem(id) {
		e.items--
		r.maybeForgetLocked(tid, e)
		return false
	}
	bit := uint64(1) << (id.Index() - 1)
	if e == nil || id.Index() == 0 || id.Index() > 64 || e.gone&bit != 0 {
		// Not indexed (or read back as released already when it was).
		return false
	}
	e.gone |= bit
	sent := e.sent.Load()
	if !sent {
		// Not in the control plane yet: released there if it ever is.
		e.releasedEarly = append(e.releasedEarly, id)
	}
	r.maybeForgetLocked(tid, e)
	return sent
}

// maybeForgetLocked drops a retained entry that nothing needs any more and,
// in cascade, producers only it needed. r.mu is held.
func (r *recovery) maybeForgetLocked(tid ids.TaskID, e *lineageEntry) {
	for e != nil && e.live() <= 0 && e.dependents <= 0 && r.tasks[tid] == e {
		delete(r.tasks, tid)
		r.indexed.Add(-1)
		deps := e.deps
		e.deps = nil
		e = nil
		for _, d := range deps {
			p := r.tasks[d]
			if p == nil {
				continue
			}
			p.dependents--
			r.maybeForgetLocked(d, p)
		}
	}
}

// releaseLineage tells the control plane about released return objects.
func (r *recovery) releaseLineage(objs []ids.ObjectID) {
	if len(objs) == 0 {
		return
	}
	if rec := r.recorder(); rec != nil {
		if err := rec.Release(r.ctx, objs...); err != nil && r.ctx.Err() == nil {
			r.log.Debug("lineage release failed", zap.Error(err))
		}
	}
}

// itemMade notes item idx of generator task t in the object table: the
// task's lineage is kept (indexed) while any of its items lives, so a lost
// one can be rebuilt by running the generator again.
func (r *recovery) itemMade(t *task, idx int) {
	if r.off || !t.lineage {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.indexLocked(t)
	e.items++
	e.itemEnd = max(e.itemEnd, idx+1)
}

// recoverObject is called when owned object id was found lost while seen
// was its entry. It returns the object to wait on instead: the current one
// when a rebuild already replaced seen, or the one a rebuild it starts now
// will complete. It fails when the object cannot be rebuilt.
func (r *recovery) recoverObject(id ids.ObjectID, seen *object) (*object, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.objs.Get(id)
	if o == nil || !o.Owned() {
		return nil, fmt.Errorf("%w: object %s was released", ErrObjectNotFound, id)
	}
	if o != seen {
		return o, nil
	}
	if id.IsPut() {
		return nil, lostError(id, "was made by Put: it cannot be rebuilt")
	}
	e := r.tasks[id.Task()]
	if e == nil {
		return nil, lostError(id, "cannot be rebuilt: lineage released (or not recorded)")
	}
	if e.inflight && e.isItem(id) {
		// Its running generator will not yield it again.
		return nil, lostError(id, "was lost while its generator still runs; items are rebuilt once it ended")
	}
	if err := r.rebuildLocked(id, e); err != nil {
		return nil, err
	}
	return r.objs.Get(id), nil
}

// rebuildLocked resubmits a retained task to make its outputs again: its
// stored returns still referenced are replaced by pending objects (so
// everyone waiting for them waits for this run), and its owned arguments
// freed since are made again first, recursively. r.mu is held.
// id is the object that asked for it.
func (r *recovery) rebuildLocked(id ids.ObjectID, e *lineageEntry) error {
	tid := id.Task()
	old := e.t
	if old.retriesLeft <= 0 {
		return lostError(id, fmt.Sprintf("cannot be rebuilt: its task %s (%s) is out of retries", tid, old.spec.Function))
	}
	for _, ret := range old.returns {
		// Released, already pending, or inline (never lost) ones stay.
		r.objs.Renew(ret)
	}
	// A generator's run yields every item again: its stored items wait
	// for it (the others may have been lost with the same node; the new
	// values replace them).
	for i := range e.itemEnd {
		r.objs.Renew(ids.ReturnID(tid, uint32(i+2)))
	}
	t := newTask(&pb.TaskSpec{TaskId: old.spec.TaskId, JobId: old.spec.JobId, Function: old.spec.Function,
		NumReturns: old.spec.NumReturns, OwnerAddress: old.spec.OwnerAddress, NumCpus: old.spec.NumCpus,
		Attempt: old.spec.Attempt + 1, Args: slices.Clone(e.args)}, e.res)
	t.returns, t.retriesLeft, t.retryExceptions = old.returns, old.retriesLeft-1, old.retryExceptions
	if od := old.d(); len(od.refs) > 0 {
		d := t.dm()
		d.refs, d.refKeys = od.refs, od.refKeys
	}
	t.lineage, t.maxRetries = true, old.maxRetries
	t.lin.Store(e)
	e.t, e.inflight = t, true
	for _, k := range t.d().refKeys {
		if k.Owner != r.owner {
			continue
		}
		if _, created := r.objs.PinOrCreate(k.ID); created {
			r.remakeLocked(k.ID)
		}
		t.dm().pinned = append(t.dm().pinned, k.ID)
	}
	r.rebuilds.Add(1)
	r.log.Info("rebuilding lost objects from lineage", zap.Stringer("task", tid), zap.String("function", t.spec.Function),
		zap.Int32("attempt", t.spec.Attempt+1))
	r.spawn(func() {
		r.reportAttempt(t, cpb.TaskState_TASK_RUNNING, "", "")
		r.resolve(t)
	})
	return nil
}

// remakeLocked brings back a freed owned object an argument needs, which
// the object table holds again as pending (PinOrCreate): its retained task
// runs again, or it fails at once when it cannot be rebuilt. r.mu is
// held.
func (r *recovery) remakeLocked(id ids.ObjectID) {
	var err error
	if id.IsPut() {
		err = lostError(id, "was released and made by Put: it cannot be rebuilt")
	} else if p := r.tasks[id.Task()]; p == nil {
		err = lostError(id, "was released and cannot be rebuilt: lineage released")
	} else {
		p.gone &^= uint64(1) << (id.Index() - 1) // made again
		if !p.inflight {
			err = r.rebuildLocked(id, p)
		}
	}
	if err != nil {
		r.objs.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: err.Error()}}})
	}
}

// lostArg handles a task whose worker could not read an argument this
// process owns: the argument is rebuilt and the task pushed again, without
// consuming its retries. It reports false when the error is not that.
func (r *recovery) lostArg(t *task, e *pb.TaskError) bool {
	if (e.Kind != pb.ErrorKind_ERROR_OBJECT_LOST && e.Kind != pb.ErrorKind_ERROR_OBJECT_NOT_FOUND) ||
		len(e.ObjectId) == 0 || t.d().lostRounds >= maxLostArgRounds || r.off {
		return false
	}
	id, err := ids.ObjectFromBytes(e.ObjectId)
	if err != nil {
		return false
	}
	d := t.d()
	j := slices.IndexFunc(d.refKeys, func(k ObjectKey) bool { return k.ID == id && k.Owner == r.owner })
	if j < 0 || j >= len(d.argObjs) || d.argObjs[j] == nil {
		return false
	}
	d.lostRounds++ // d is the task's own: it has reference arguments
	seen := d.argObjs[j]
	r.spawn(func() {
		if _, err := r.recoverObject(id, seen); err != nil {
			r.fail(t, &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: fmt.Sprintf("argument: %v", err), ObjectId: e.ObjectId})
			return
		}
		r.resolve(t)
	})
	return true
}

// retained is how many task specs are retained (tests).
func (r *recovery) retained() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tasks)
}
