package core

import (
	"errors"
	"testing"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// TestRecoveryRecordsUpstreamFirstOnlyWhenStored: a chain of inline
// outputs records nothing; the first stored output records its task with
// every unrecorded producer first (a producer still running as RUNNING),
// reference arguments by ID and owner; a second persist sends nothing.
func TestRecoveryRecordsUpstreamFirstOnlyWhenStored(t *testing.T) {
	tr := newTestRecovery(t)
	a := tr.submit("a", 1, 3)
	tr.finish(a, "") // inline: nothing recorded
	b := tr.submit("b", 1, 3, tr.ref(a.returns[0]))
	c := tr.submit("c", 1, 3, tr.ref(b.returns[0]), Arg{Value: &pb.ObjectValue{Data: []byte{7}}})
	if len(tr.sink.records) != 0 {
		t.Fatalf("%d records before any output was stored", len(tr.sink.records))
	}
	tr.finish(c, "node-2") // b's run has not ended: it is recorded RUNNING
	if len(tr.sink.records) != 3 {
		t.Fatalf("%d records, want a, b and c", len(tr.sink.records))
	}
	for i, want := range []struct {
		fn    string
		state cpb.TaskState
	}{{"a", cpb.TaskState_TASK_FINISHED}, {"b", cpb.TaskState_TASK_RUNNING}, {"c", cpb.TaskState_TASK_FINISHED}} {
		r := tr.sink.records[i]
		if r.Function != want.fn || r.State != want.state {
			t.Fatalf("record %d is %s %s, want %s %s", i, r.Function, r.State, want.fn, want.state)
		}
	}
	cr := tr.sink.records[2]
	if cr.NodeId != "node-2" || cr.JobId != testJob || cr.OwnerAddress != testOwner || cr.MaxRetries != 3 {
		t.Fatalf("c's record: node %q job %q owner %q retries %d", cr.NodeId, cr.JobId, cr.OwnerAddress, cr.MaxRetries)
	}
	if id, err := ids.ObjectFromBytes(cr.Args[0].ObjectId); err != nil || id != b.returns[0] || cr.Args[0].OwnerAddress != testOwner {
		t.Fatalf("c's reference argument recorded as %v", cr.Args[0])
	}
	if string(cr.Args[1].Value) != "\x07" {
		t.Fatalf("c's value argument recorded as %v", cr.Args[1])
	}
	if tr.persist(c, "node-2") {
		t.Fatal("a task recorded twice")
	}
}

// TestRecoveryRebuildsLostObjectOnce: an owned stored object found lost
// is replaced by a pending one and its task resubmitted as the next
// attempt, with a retry fewer and the same task ID; whoever saw the same
// lost object afterwards waits for that rebuild instead of starting one.
func TestRecoveryRebuildsLostObjectOnce(t *testing.T) {
	tr := newTestRecovery(t)
	a := tr.submit("a", 1, 2, Arg{Value: &pb.ObjectValue{Data: []byte{1}}})
	tr.finish(a, "node-2")
	id := a.returns[0]
	seen := tr.store.Get(id)
	o, err := tr.recoverObject(id, seen)
	if err != nil {
		t.Fatal(err)
	}
	if o == seen || o.IsReady() {
		t.Fatal("the lost object was not replaced by a pending one")
	}
	again, err := tr.recoverObject(id, seen)
	if err != nil || again != o {
		t.Fatalf("a second reader of the lost object got %p, %v; want the rebuild's %p", again, err, o)
	}
	tr.runSpawned()
	if len(tr.resolved) != 1 || tr.rebuilds.Load() != 1 {
		t.Fatalf("%d resubmissions (%d rebuilds), want 1", len(tr.resolved), tr.rebuilds.Load())
	}
	rt := tr.resolved[0]
	if rt.spec.Attempt != 1 || rt.retriesLeft != 1 || string(rt.spec.TaskId) != string(a.spec.TaskId) {
		t.Fatalf("resubmitted attempt %d with %d retries", rt.spec.Attempt, rt.retriesLeft)
	}
	if len(rt.spec.Args) != 1 || rt.spec.Args[0].Value.Data[0] != 1 {
		t.Fatal("the rebuild does not take the original arguments")
	}
	if n := len(tr.sink.updates); n != 1 || tr.sink.updates[0].State != cpb.TaskState_TASK_RUNNING || tr.sink.updates[0].Attempt != 2 {
		t.Fatalf("updates %v, want the rebuild's attempt 2 RUNNING", tr.sink.updates)
	}
}

// TestRecoveryRefusesWhatCannotBeRebuilt: a Put object, a task out of
// retries, a released object and an unrecorded task are not rebuilt.
func TestRecoveryRefusesWhatCannotBeRebuilt(t *testing.T) {
	tr := newTestRecovery(t)
	put := ids.PutID(ids.DriverTaskID(testJob), 1)
	tr.store.NewOwned([]ids.ObjectID{put}, "")
	tr.store.Complete([]ids.ObjectID{put}, []*pb.ObjectValue{{Location: "node-2"}})
	if _, err := tr.recoverObject(put, tr.store.Get(put)); !errors.Is(err, ErrObjectLost) {
		t.Fatalf("Put object: %v, want ErrObjectLost", err)
	}
	spent := tr.submit("spent", 1, 0)
	tr.finish(spent, "node-2")
	if _, err := tr.recoverObject(spent.returns[0], tr.store.Get(spent.returns[0])); !errors.Is(err, ErrObjectLost) {
		t.Fatalf("out of retries: %v, want ErrObjectLost", err)
	}
	gone := tr.submit("gone", 1, 3)
	tr.finish(gone, "node-2")
	seen := tr.store.Get(gone.returns[0])
	tr.drop(gone.returns[0])
	if _, err := tr.recoverObject(gone.returns[0], seen); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("released: %v, want ErrObjectNotFound", err)
	}
	tr.off = true
	unrec := newTestTask("unrecorded", 1, 3, nil)
	tr.store.NewOwned(unrec.returns, "")
	tr.store.Complete(unrec.returns, []*pb.ObjectValue{{Location: "node-2"}})
	if _, err := tr.recoverObject(unrec.returns[0], tr.store.Get(unrec.returns[0])); !errors.Is(err, ErrObjectLost) {
		t.Fatalf("not recorded: %v, want ErrObjectLost", err)
	}
	tr.runSpawned()
	if len(tr.resolved) != 0 {
		t.Fatalf("%d tasks resubmitted", len(tr.resolved))
	}
}

// TestRecoveryRemakesFreedArgument: rebuilding a task whose owned argument
// was freed since makes the argument again first, from its own retained
// task (kept because a retained task depends on it).
func TestRecoveryRemakesFreedArgument(t *testing.T) {
	tr := newTestRecovery(t)
	a := tr.submit("a", 1, 3)
	tr.finish(a, "node-2")
	b := tr.submit("b", 1, 3, tr.ref(a.returns[0]))
	tr.finish(b, "node-3")
	tr.drop(a.returns[0]) // the driver dropped a's ref
	if tr.store.Get(a.returns[0]) != nil || tr.retained() != 2 {
		t.Fatalf("after a's release: object kept %v, %d retained; want freed, 2", tr.store.Get(a.returns[0]) != nil, tr.retained())
	}
	if len(tr.sink.released) != 1 || tr.sink.released[0] != a.returns[0] {
		t.Fatalf("released in the control plane: %v, want a's return", tr.sink.released)
	}
	if _, err := tr.recoverObject(b.returns[0], tr.store.Get(b.returns[0])); err != nil {
		t.Fatal(err)
	}
	tr.runSpawned()
	var fns []string
	for _, rt := range tr.resolved {
		fns = append(fns, rt.spec.Function)
	}
	if len(fns) != 2 || fns[0] != "a" || fns[1] != "b" {
		t.Fatalf("resubmitted %v, want a then b", fns)
	}
	if o := tr.store.Get(a.returns[0]); o == nil || o.IsReady() {
		t.Fatal("a's return is not pending again for its rebuild")
	}
	if len(tr.resolved[1].d().pinned) != 1 {
		t.Fatal("the rebuild of b does not pin its argument")
	}
}

// TestRecoveryForgetsInCascade: a task's entry goes once its returns are
// released and no retained task takes them, and then its producers' that
// only it kept; a release before the record is sent with the record.
func TestRecoveryForgetsInCascade(t *testing.T) {
	tr := newTestRecovery(t)
	a := tr.submit("a", 1, 3)
	tr.finish(a, "")
	b := tr.submit("b", 1, 3, tr.ref(a.returns[0]))
	tr.finish(b, "")
	tr.drop(a.returns[0])
	if tr.retained() != 2 {
		t.Fatalf("%d retained, want 2: b depends on a", tr.retained())
	}
	if len(tr.sink.released) != 0 {
		t.Fatalf("a release reached the control plane before any record: %v", tr.sink.released)
	}
	c := tr.submit("c", 1, 3, tr.ref(b.returns[0]))
	tr.finish(c, "node-2")
	if len(tr.sink.records) != 3 || len(tr.sink.released) != 1 || tr.sink.released[0] != a.returns[0] {
		t.Fatalf("%d records, released %v; want a, b, c and a's early release", len(tr.sink.records), tr.sink.released)
	}
	tr.drop(b.returns[0])
	if tr.retained() != 3 {
		t.Fatalf("%d retained, want 3: c is referenced", tr.retained())
	}
	tr.drop(c.returns[0])
	if tr.retained() != 0 {
		t.Fatalf("%d retained after every return was released, want 0", tr.retained())
	}
	if len(tr.sink.released) != 3 {
		t.Fatalf("released in the control plane: %v, want a, b and c", tr.sink.released)
	}
}

// TestRecoveryIndexesOnlyWhatIsNeeded: tasks whose outputs stay inline and
// go nowhere are never indexed (their releases take no lock); a stored
// output indexes its task until its returns go; a task whose returns were
// all released while it ran is recorded with the releases, then forgotten.
func TestRecoveryIndexesOnlyWhatIsNeeded(t *testing.T) {
	tr := newTestRecovery(t)
	for range 100 {
		a := tr.submit("a", 2, 3)
		tr.finish(a, "")
		tr.drop(a.returns[0])
		tr.drop(a.returns[1])
		if a.lin.Load() != nil {
			t.Fatal("a task whose lineage was never needed has an entry")
		}
	}
	if tr.retained() != 0 || tr.indexed.Load() != 0 {
		t.Fatalf("%d retained, want 0", tr.retained())
	}
	s := tr.submit("stored", 1, 3)
	tr.finish(s, "node-2")
	if tr.retained() != 1 {
		t.Fatalf("%d retained with a stored output referenced, want 1", tr.retained())
	}
	tr.drop(s.returns[0])
	if tr.retained() != 0 || len(tr.sink.released) != 1 {
		t.Fatalf("%d retained, released %v after the stored output went", tr.retained(), tr.sink.released)
	}
	gone := tr.submit("gone", 2, 3)
	tr.drop(gone.returns[0])
	tr.drop(gone.returns[1])
	tr.finish(gone, "node-2")
	if n := len(tr.sink.records); n != 2 || tr.sink.records[1].Function != "gone" {
		t.Fatalf("%d records, want stored and gone", n)
	}
	if tr.retained() != 0 || len(tr.sink.released) != 3 {
		t.Fatalf("%d retained, released %v; want 0 and gone's two returns with its record", tr.retained(), tr.sink.released)
	}
}

// TestRecoveryLostArgument: a task whose worker could not read an owned
// argument has it rebuilt and runs again without spending a retry; after
// maxLostArgRounds it is left to fail.
func TestRecoveryLostArgument(t *testing.T) {
	tr := newTestRecovery(t)
	a := tr.submit("a", 1, 3)
	tr.finish(a, "node-2")
	b := tr.submit("b", 1, 1, tr.ref(a.returns[0]))
	b.dm().argObjs = []*object{tr.store.Get(a.returns[0])}
	lost := &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, ObjectId: a.returns[0][:]}
	if !tr.lostArg(b, lost) {
		t.Fatal("a lost owned argument was not taken over")
	}
	tr.runSpawned()
	// b is queued again at once: its resolver waits for a's rebuild.
	if len(tr.resolved) != 2 || tr.resolved[0] != b || tr.resolved[1].spec.Function != "a" || b.retriesLeft != 1 {
		t.Fatalf("resubmitted %d tasks, b's retries %d; want b and a's rebuild, 1", len(tr.resolved), b.retriesLeft)
	}
	b.dm().lostRounds = maxLostArgRounds
	if tr.lostArg(b, lost) {
		t.Fatal("a task pushed again past maxLostArgRounds")
	}
	if tr.lostArg(b, &pb.TaskError{Kind: pb.ErrorKind_ERROR_APPLICATION}) {
		t.Fatal("an application error was taken for a lost argument")
	}
}
