package core

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/internal/memstore"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

const (
	testJob   = "job-1"
	testOwner = "127.0.0.1:7001"
)

var taskCounter atomic.Uint64

// newTestTask makes a task of function fn with n returns and the given
// arguments, as Submit would, with retries left.
func newTestTask(fn string, n, retries int, args []Arg) *task {
	tid := ids.NewTaskID(testJob, ids.DriverTaskID(testJob), taskCounter.Add(1))
	t := newTask(&pb.TaskSpec{TaskId: tid[:], JobId: testJob, Function: fn, NumReturns: int32(n),
		OwnerAddress: testOwner, NumCpus: 1}, resources.Set{resources.CPU: 1})
	t.retriesLeft = retries
	t.dm().refs, t.dm().refKeys = encodeArgs(t.spec, args)
	for i := range n {
		t.returns = append(t.returns, ids.ReturnID(tid, uint32(i+1)))
	}
	return t
}

// events is an ordered log the fakes write to, so a test can assert what
// happened in which order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

// fakeStore is the object table as the task manager sees it.
type fakeStore struct {
	ev   *events
	vals map[ids.ObjectID]*pb.ObjectValue
	refs map[ids.ObjectID]int
}

func newFakeStore(ev *events) *fakeStore {
	return &fakeStore{ev: ev, vals: map[ids.ObjectID]*pb.ObjectValue{}, refs: map[ids.ObjectID]int{}}
}

func (s *fakeStore) Complete(objs []ids.ObjectID, vals []*pb.ObjectValue) {
	for i, id := range objs {
		s.vals[id] = vals[i]
	}
	s.ev.add("complete %d", len(objs))
}

func (s *fakeStore) DecRef(id ids.ObjectID) {
	s.refs[id]--
	s.ev.add("decref")
}

// fakeQueue is the submitter as the task manager sees it.
type fakeQueue struct {
	ev        *events
	submitted []*submitter.Task
	cancelled []ids.TaskID
}

func (q *fakeQueue) Submit(t *submitter.Task) {
	q.submitted = append(q.submitted, t)
	q.ev.add("submit attempt %d", t.Spec.Attempt)
}

func (q *fakeQueue) Cancel(id ids.TaskID, force, recursive bool) submitter.CancelOutcome {
	q.cancelled = append(q.cancelled, id)
	q.ev.add("cancel")
	return submitter.Removed
}

// fakeLineage is recovery as the task manager sees it.
type fakeLineage struct {
	ev           *events
	takesLostArg bool // what lostArg answers
}

func (l *fakeLineage) runEnded(*task) { l.ev.add("run ended") }
func (l *fakeLineage) persist(_ *task, node string) bool {
	l.ev.add("persist on %s", node)
	return true
}
func (l *fakeLineage) reportFinished(_ *task, node string) { l.ev.add("report finished on %s", node) }
func (l *fakeLineage) reportAttempt(_ *task, st cpb.TaskState, _, _ string) bool {
	l.ev.add("report %s", st)
	return false
}
func (l *fakeLineage) lostArg(*task, *pb.TaskError) bool {
	l.ev.add("lost arg")
	return l.takesLostArg
}

// newTestManager is a task manager over fakes.
func newTestManager() (*taskManager, *fakeStore, *fakeQueue, *fakeLineage, *events) {
	ev := &events{}
	st, q, lin := newFakeStore(ev), &fakeQueue{ev: ev}, &fakeLineage{ev: ev}
	m := &taskManager{objs: st, lin: lin, queue: func() taskQueue { return q }}
	return m, st, q, lin, ev
}

// fakeSink is the control plane's lineage table as recovery sees it.
type fakeSink struct {
	mu       sync.Mutex
	records  []*cpb.TaskRecord
	updates  []*cpb.TaskUpdate
	released []ids.ObjectID
	waited   []ids.TaskID
}

func (s *fakeSink) Record(_ context.Context, r *cpb.TaskRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, r)
	return nil
}

func (s *fakeSink) Update(_ context.Context, u *cpb.TaskUpdate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates = append(s.updates, u)
	return nil
}

func (s *fakeSink) Release(_ context.Context, objs ...ids.ObjectID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = append(s.released, objs...)
	return nil
}

func (s *fakeSink) WaitCommitted(_ context.Context, tasks ...ids.TaskID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waited = append(s.waited, tasks...)
	return nil
}

func (s *fakeSink) Flush(context.Context) error { return nil }

// testRecovery is recovery over a fake sink and a real object table (an
// in-memory map with no neighbours of its own): what it resubmits is
// collected, and the goroutines it would start are run by the test.
type testRecovery struct {
	*recovery
	store    *memstore.Store
	sink     *fakeSink
	handles  map[ids.ObjectID]*Handle // the refs the test holds
	spawned  []func()
	resolved []*task
	failed   []*pb.TaskError
}

func newTestRecovery(t *testing.T) *testRecovery {
	t.Helper()
	tr := &testRecovery{sink: &fakeSink{}, handles: map[ids.ObjectID]*Handle{}}
	tr.store = memstore.New(memstore.Config{OnReleased: func(id ids.ObjectID) { tr.released(id) }})
	tr.recovery = &recovery{owner: testOwner, jobID: testJob, log: zap.NewNop(), ctx: context.Background(),
		objs: tr.store, open: func() recordSink { return tr.sink },
		spawn:   func(fn func()) { tr.spawned = append(tr.spawned, fn) },
		resolve: func(t *task) { tr.resolved = append(tr.resolved, t) },
		fail:    func(_ *task, e *pb.TaskError) { tr.failed = append(tr.failed, e) }}
	return tr
}

// runSpawned runs the goroutines recovery started, as the Worker would.
func (tr *testRecovery) runSpawned() {
	for len(tr.spawned) > 0 {
		fn := tr.spawned[0]
		tr.spawned = tr.spawned[1:]
		fn()
	}
}

// submit makes a task whose returns are in the object table (one handle
// reference each, held in tr.handles) and notes its lineage, as Submit
// does; owned reference arguments are pinned until release(t).
func (tr *testRecovery) submit(fn string, n, retries int, args ...Arg) *task {
	t := newTestTask(fn, n, retries, args)
	tr.store.NewOwned(t.returns, "")
	var owned []ids.ObjectID
	for _, k := range t.d().refKeys {
		owned = append(owned, k.ID)
	}
	t.dm().pinned = tr.store.AddRefs(owned)
	keys := make([]ObjectKey, n)
	for i, id := range t.returns {
		keys[i] = ObjectKey{ID: id, Owner: testOwner, H: &Handle{}}
		tr.handles[id] = keys[i].H
	}
	o := CallOptions{Res: resources.Set{resources.CPU: 1}, MaxRetries: retries}
	tr.recordTask(t, &o, args, keys)
	return t
}

// finish ends a run of t whose returns are stored on node (or inline when
// node is ""), as the task manager does, and drops its arguments' pins.
func (tr *testRecovery) finish(t *task, node string) {
	vals := make([]*pb.ObjectValue, len(t.returns))
	for i := range vals {
		vals[i] = &pb.ObjectValue{Data: []byte("v"), Location: node}
	}
	if node != "" {
		tr.persist(t, node)
	}
	tr.runEnded(t)
	tr.store.Complete(t.returns, vals)
	for _, id := range t.d().pinned {
		tr.store.DecRef(id)
	}
	t.dm().pinned = nil
}

// drop releases the test's ref to an object (its handle's reference).
func (tr *testRecovery) drop(id ids.ObjectID) { tr.store.DecRef(id) }

// ref is a reference argument to an object this test's owner owns,
// through the ref the test holds.
func (tr *testRecovery) ref(id ids.ObjectID) Arg {
	return Arg{Ref: true, ID: id, Owner: testOwner, H: tr.handles[id]}
}
