package core

// The task manager (Ray's TaskManager): the owner's record of each normal
// task it submitted until the task ends. It decides what an attempt's
// outcome means: a result completes the task's returns (after recovery
// recorded its lineage if a return was stored), a lost worker or a
// retryable error runs it again while it has retries left (a cancelled
// task never), a lost argument is recovery's to rebuild, anything else
// fails the returns. Its own state is the table of cancel marks and, in a
// worker, of the tasks each running task submitted (for a recursive
// cancel), under its own lock; a task's attempt and retries are touched
// only by whoever holds the task (the submitter hands it back once).
// Its neighbours are small interfaces: the object table (returnStore), the
// submitter (taskQueue) and recovery (taskLineage).

import (
	"sync"
	"sync/atomic"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/internal/memstore"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// object is an entry of the object table.
type object = memstore.Object

// ObjectKey names an object and its owner; H is the handle of a ref just
// made for an owned object (nil otherwise).
type ObjectKey struct {
	ID    ids.ObjectID
	Owner string
	H     *Handle
}

// task is a submitted task in its owner (Ray's TaskManager entry): what it
// returns, its retries, its arguments, its lineage, and the submitter's
// view of it (st).
type task struct {
	spec            *pb.TaskSpec
	st              *submitter.Task
	returns         []ids.ObjectID
	retriesLeft     int
	retryExceptions bool
	// returnReplicas: ReturnReplicas (0 or 1: none).
	returnReplicas int
	// parent is the task that submitted it, inside a worker (recursive
	// cancel); zero in a driver.
	parent ids.TaskID

	// deps are its reference arguments and pins, nil for a task that has
	// none (most of a million queued trivial ones: five empty slices were
	// half of each task's own size).
	deps *taskDeps

	// Lineage (recovery.go): lineage says it is recorded (lineage was on
	// when it was submitted), with maxRetries as submitted. lin is its
	// entry, made only once its lineage is needed (a reference argument,
	// a stored return, a task taking one of its returns); ended is set
	// when a run of it ended.
	lineage    bool
	maxRetries int32
	lin        atomic.Pointer[lineageEntry]
	ended      atomic.Bool
}

// taskDeps are a task's reference arguments and the objects it pins.
type taskDeps struct {
	pinned     []ids.ObjectID // owned reference arguments (refs.go)
	borrowPins []ids.ObjectID // borrowed ones, and refs inside values
	// Reference arguments: their indexes in spec.Args, their objects, and
	// the entries they were last resolved from (recovery.go).
	refs    []int
	refKeys []ObjectKey
	argObjs []*object
	// lostRounds counts the pushes again after an argument was rebuilt.
	lostRounds int
}

// noDeps is what d returns for a task without deps: read it, never write.
var noDeps taskDeps

// d is the task's deps for reading (empty if it has none).
func (t *task) d() *taskDeps {
	if t.deps == nil {
		return &noDeps
	}
	return t.deps
}

// dm is the task's deps for writing, made if need be.
func (t *task) dm() *taskDeps {
	if t.deps == nil {
		t.deps = &taskDeps{}
	}
	return t.deps
}

// newTask makes a task of spec for the resource shape res.
func newTask(spec *pb.TaskSpec, res resources.Set) *task {
	tid, _ := ids.TaskFromBytes(spec.TaskId)
	t := &task{spec: spec}
	t.st = &submitter.Task{Spec: spec, ID: tid, Res: res, Data: t}
	return t
}

// returnStore is what the task manager needs of the object table.
type returnStore interface {
	// Complete sets the values of pending objects.
	Complete(objs []ids.ObjectID, vals []*pb.ObjectValue)
	// DecRef drops a reference a task's argument held.
	DecRef(id ids.ObjectID)
}

// taskQueue is what the task manager needs of the submitter.
type taskQueue interface {
	Submit(t *submitter.Task)
	Cancel(id ids.TaskID, force, recursive bool) submitter.CancelOutcome
}

// taskLineage is what the task manager needs of recovery.
type taskLineage interface {
	// runEnded notes that a run of t ended, before its returns complete.
	runEnded(t *task)
	// persist records a finished attempt that stored a return and says
	// whether it sent the task's record.
	persist(t *task, node string) bool
	// reportFinished and reportAttempt update a task recorded before.
	reportFinished(t *task, node string)
	reportAttempt(t *task, state cpb.TaskState, node, why string) bool
	// lostArg takes over a task whose worker could not read an owned
	// argument: it rebuilds it and runs the task again.
	lostArg(t *task, e *pb.TaskError) bool
}

// taskManager tracks the owner's submitted tasks until they end.
type taskManager struct {
	table taskTable
	objs  returnStore
	lin   taskLineage
	// queue returns the submitter (nil while shutting down).
	queue func() taskQueue
	// ev reports what happens to each attempt (events.go).
	ev *eventLog
	// unborrow drops the borrows a task's arguments held (refs.go);
	// resultBorrows registers the borrowers a result reports, before the
	// arguments are unpinned (borrowers.go).
	unborrow      func([]ids.ObjectID)
	resultBorrows func(ids.TaskID, *pb.TaskResult)
	// replicate copies a result's stored returns to more nodes
	// (replicas.go), off the caller's goroutine, then calls done.
	replicate func(t *task, res *pb.TaskResult, done func())
}

// Finished, WorkerLost and Failed take the submitter's reports
// (submitter.Handler).
func (m *taskManager) Finished(st *submitter.Task, res *pb.TaskResult, ran *pb.LeaseReply) {
	if m.resultBorrows != nil {
		m.resultBorrows(st.ID, res)
	}
	t := st.Data.(*task)
	m.ev.ran(t.spec, ran, res.RunNanos, res.Error == nil)
	m.finish(t, res, ran.GetNodeId())
}

func (m *taskManager) WorkerLost(st *submitter.Task, e *pb.TaskError) {
	m.retryOrFail(st.Data.(*task), e)
}

func (m *taskManager) Failed(st *submitter.Task, e *pb.TaskError) { m.fail(st.Data.(*task), e) }

// enqueue hands a task to the submitter, unless it was cancelled.
func (m *taskManager) enqueue(t *task) {
	if m.table.isCancelled(t.st.ID) {
		m.fail(t, submitter.CancelledError(t.spec.Function, "before it was scheduled"))
		return
	}
	q := m.queue()
	if q == nil {
		return // the process is shutting down: its tasks go with it
	}
	q.Submit(t.st)
	// Cancel marks first, then asks the submitter: one that came between
	// the check above and Submit found nothing there to cancel.
	if m.table.isCancelled(t.st.ID) {
		q.Cancel(t.st.ID, false, false)
	}
}

// fail completes a task's returns with an error.
func (m *taskManager) fail(t *task, e *pb.TaskError) {
	if e.Function == "" {
		e.Function = t.spec.Function
	}
	if e.TaskId == "" {
		if tid, err := ids.TaskFromBytes(t.spec.TaskId); err == nil {
			e.TaskId = tid.String()
		}
	}
	m.ev.failed(t.spec, e)
	v := &pb.ObjectValue{Error: e}
	vals := make([]*pb.ObjectValue, len(t.returns))
	for i := range vals {
		vals[i] = v
	}
	m.lin.runEnded(t)
	m.objs.Complete(t.returns, vals)
	m.ended(t)
	m.lin.reportAttempt(t, cpb.TaskState_TASK_FAILED, "", e.Message)
}

// finish completes a task from its result (node ran it), or retries it.
func (m *taskManager) finish(t *task, res *pb.TaskResult, node string) {
	if res.Error != nil {
		if res.Error.Kind == pb.ErrorKind_ERROR_TASK_CANCELLED {
			m.fail(t, res.Error) // never retried, never rebuilt
			return
		}
		if m.lin.lostArg(t, res.Error) {
			return
		}
		if res.Error.Kind == pb.ErrorKind_ERROR_WORKER_CRASHED {
			// The worker could not store its result (its node's store
			// went away): a system failure, retried as a lost worker.
			m.retryOrFail(t, res.Error)
			return
		}
		if t.retryExceptions && (res.Error.Kind == pb.ErrorKind_ERROR_APPLICATION || res.Error.Kind == pb.ErrorKind_ERROR_PANIC) {
			m.retryOrFail(t, res.Error)
		} else {
			m.fail(t, res.Error)
		}
		return
	}
	if t.returnReplicas > 1 && m.replicate != nil && storesAny(res) {
		m.replicate(t, res, func() { m.complete(t, res, node) })
		return
	}
	m.complete(t, res, node)
}

// complete records a finished task's lineage and completes its returns.
func (m *taskManager) complete(t *task, res *pb.TaskResult, node string) {
	// A stored return can be lost with its node: record the task before
	// anyone can consume the returns (recovery.go).
	sent := storesAny(res) && m.lin.persist(t, node)
	if !sent {
		m.lin.reportFinished(t, node)
	}
	m.lin.runEnded(t)
	completeReturns(m.objs, t.returns, t.spec.Function, res, "the task")
	m.ended(t)
}

// ended forgets a task that completed and drops its arguments' pins.
func (m *taskManager) ended(t *task) {
	pinned, borrowed := t.d().pinned, t.d().borrowPins
	if t.deps != nil {
		t.deps.pinned, t.deps.borrowPins = nil, nil
	}
	m.table.ended(t)
	unpin(m.objs, pinned)
	if len(borrowed) > 0 {
		m.unborrow(borrowed)
	}
}

// retryOrFail runs a task again after a failed attempt while it has
// retries left (a cancelled one never).
func (m *taskManager) retryOrFail(t *task, e *pb.TaskError) {
	if t.retriesLeft > 0 && !m.table.isCancelled(t.st.ID) {
		t.retriesLeft--
		m.ev.failed(t.spec, e)
		t.spec.Attempt++
		m.ev.submitted(t.spec, cpb.TaskType_NORMAL_TASK, t.parent, t.st.Res, false)
		m.enqueue(t)
		return
	}
	if m.table.isCancelled(t.st.ID) {
		e = submitter.CancelledError(t.spec.Function, "while it ran (its worker died)")
	}
	m.fail(t, e)
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

// completeReturns completes a finished task's or call's return objects
// from its result; any it did not return fail with a bad-argument error.
func completeReturns(objs returnStore, returns []ids.ObjectID, function string, res *pb.TaskResult, what string) {
	vals := res.Returns
	if len(vals) < len(returns) {
		vals = append(vals[:len(vals):len(vals)], make([]*pb.ObjectValue, len(returns)-len(vals))...)
		for j := len(res.Returns); j < len(returns); j++ {
			vals[j] = &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_BAD_ARGUMENT,
				Function: function, Message: what + " returned too few values"}}
		}
	}
	objs.Complete(returns, vals[:len(returns)])
}

// unpin drops the references pinArgs took.
func unpin(objs returnStore, pinned []ids.ObjectID) {
	for _, id := range pinned {
		objs.DecRef(id)
	}
}

// taskTable is the part of the task manager that cancel needs: the tasks
// cancelled and not ended yet, and, in a worker, the tasks each running
// task submitted (for a recursive cancel). It has its own lock, held only
// for map operations.
type taskTable struct {
	mu        sync.Mutex
	cancelled map[ids.TaskID]struct{}
	children  map[ids.TaskID]map[ids.TaskID]struct{}
	// entries counts both maps' entries, so that the common case (no
	// cancel, no nested task) takes no lock per task.
	entries atomic.Int64
}

func (tt *taskTable) markCancelled(id ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.cancelled == nil {
		tt.cancelled = map[ids.TaskID]struct{}{}
	}
	if _, ok := tt.cancelled[id]; !ok {
		tt.cancelled[id] = struct{}{}
		tt.entries.Add(1)
	}
}

func (tt *taskTable) unmarkCancelled(id ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if _, ok := tt.cancelled[id]; ok {
		delete(tt.cancelled, id)
		tt.entries.Add(-1)
	}
}

func (tt *taskTable) isCancelled(id ids.TaskID) bool {
	if tt.entries.Load() == 0 {
		return false
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	_, ok := tt.cancelled[id]
	return ok
}

// ended forgets a task that completed (with a value or an error).
func (tt *taskTable) ended(t *task) {
	if tt.entries.Load() == 0 {
		return
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if _, ok := tt.cancelled[t.st.ID]; ok {
		delete(tt.cancelled, t.st.ID)
		tt.entries.Add(-1)
	}
	if kids := tt.children[t.parent]; kids != nil {
		if _, ok := kids[t.st.ID]; ok {
			delete(kids, t.st.ID)
			tt.entries.Add(-1)
		}
	}
}

// addChild notes that running task parent submitted child.
func (tt *taskTable) addChild(parent, child ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.children == nil {
		tt.children = map[ids.TaskID]map[ids.TaskID]struct{}{}
	}
	kids := tt.children[parent]
	if kids == nil {
		kids = map[ids.TaskID]struct{}{}
		tt.children[parent] = kids
	}
	if _, ok := kids[child]; !ok {
		kids[child] = struct{}{}
		tt.entries.Add(1)
	}
}

// takeChildren returns the unfinished tasks parent submitted and forgets
// them (as its children: they are being cancelled, or it ended).
func (tt *taskTable) takeChildren(parent ids.TaskID) []ids.TaskID {
	if tt.entries.Load() == 0 {
		return nil
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	kids := tt.children[parent]
	if len(kids) == 0 {
		return nil
	}
	delete(tt.children, parent)
	tt.entries.Add(-int64(len(kids)))
	out := make([]ids.TaskID, 0, len(kids))
	for k := range kids {
		out = append(out, k)
	}
	return out
}
