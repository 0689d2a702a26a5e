package receiver

import (
	"bytes"
	"testing"
	"time"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

func assertCancelled(t *testing.T, r *pb.TaskResult, when string) {
	t.Helper()
	if r.Error == nil || r.Error.Kind != pb.ErrorKind_ERROR_TASK_CANCELLED {
		t.Fatalf("result %+v: want ERROR_TASK_CANCELLED", r)
	}
	if r.Error.Message != "task cancelled "+when {
		t.Fatalf("cancel message %q: want %q", r.Error.Message, "task cancelled "+when)
	}
}

func TestRunsInOrderOneAtATime(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	first := newSpec("block:first")
	rest := []*pb.TaskSpec{newSpec("a"), newSpec("b"), newSpec("c")}
	o.push(first, rest[0])
	o.push(rest[1:]...)
	waitChan(t, "the first task to start", ex.startedCh(taskID(first)))
	ex.release("first")
	want := append([]*pb.TaskSpec{first}, rest...)
	for _, spec := range want {
		r := o.result(spec)
		if !bytes.Equal(r.TaskId, spec.TaskId) {
			t.Fatalf("result of %s carries task %x", spec.Function, r.TaskId)
		}
		if r.Error != nil || len(r.Returns) != 1 || string(r.Returns[0].Data) != spec.Function {
			t.Fatalf("result of %s: %+v; want the executor's result", spec.Function, r)
		}
		if r.RunNanos < 0 {
			t.Fatalf("result of %s: run_nanos %d", spec.Function, r.RunNanos)
		}
	}
	if r := o.result(first); r.RunNanos <= 0 {
		t.Fatalf("the blocked task reports run_nanos %d; want its run time", r.RunNanos)
	}
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	order, _, peak, ended, _ := ex.snapshot()
	if peak != 1 {
		t.Fatalf("%d tasks ran at once; want 1", peak)
	}
	if len(order) != len(want) {
		t.Fatalf("%d tasks ran; want %d", len(order), len(want))
	}
	for i, spec := range want {
		if order[i] != taskID(spec) {
			t.Fatalf("task %d to run was not %s", i, spec.Function)
		}
	}
	if len(ended) != len(want) {
		t.Fatalf("TaskEnded called for %d tasks; want %d", len(ended), len(want))
	}
}

func TestStealGivesBackLastQueued(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	first := newSpec("block:first")
	queued := []*pb.TaskSpec{newSpec("q1"), newSpec("q2"), newSpec("q3"), newSpec("q4")}
	o.push(append([]*pb.TaskSpec{first}, queued...)...)
	waitChan(t, "the first task to start", ex.startedCh(taskID(first)))
	o.send(&pb.PushTasksRequest{Steal: 2})
	stolen := o.steals(1)
	if len(stolen) != 2 || !bytes.Equal(stolen[0], queued[2].TaskId) || !bytes.Equal(stolen[1], queued[3].TaskId) {
		t.Fatalf("stolen %x; want the last two queued (q3, q4)", stolen)
	}
	ex.release("first")
	o.result(queued[1])
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for _, spec := range queued[2:] {
		if ex.ran(taskID(spec)) || o.resultCount(spec) != 0 {
			t.Fatalf("stolen task %s ran or was answered here", spec.Function)
		}
	}
}

func TestStealAnsweredWhenEmpty(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running bool // a task runs (nothing queued behind it)
	}{{"idle", false}, {"running", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ex := newFakeExec()
			o := startStream(t, ex)
			spec := newSpec("block:g")
			if tc.running {
				o.push(spec)
				waitChan(t, "the task to start", ex.startedCh(taskID(spec)))
			}
			o.send(&pb.PushTasksRequest{Steal: 3})
			if stolen := o.steals(1); len(stolen) != 0 {
				t.Fatalf("stolen %x from an empty queue", stolen)
			}
			ex.release("g")
			if err := o.finish(); err != nil {
				t.Fatalf("Serve: %v", err)
			}
		})
	}
}

func TestCancelQueuedTask(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	first, victim, after := newSpec("block:first"), newSpec("victim"), newSpec("after")
	o.push(first, victim, after)
	waitChan(t, "the first task to start", ex.startedCh(taskID(first)))
	o.cancelTask(victim, false, false)
	r := o.result(victim)
	assertCancelled(t, r, "before it started")
	if r.Error.Function != "victim" || r.Error.TaskId != taskID(victim).String() {
		t.Fatalf("cancel error %+v: want the task's function and ID", r.Error)
	}
	if r.KillWorker {
		t.Fatal("a queued task's cancel asks to kill the worker")
	}
	ex.release("first")
	o.result(after)
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if ex.ran(taskID(victim)) {
		t.Fatal("the cancelled queued task ran")
	}
	if n := o.resultCount(victim); n != 1 {
		t.Fatalf("the cancelled task got %d answers; want 1", n)
	}
}

func TestCancelRunningTask(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	spec, next := newSpec("block:never"), newSpec("next")
	o.push(spec, next)
	waitChan(t, "the task to start", ex.startedCh(taskID(spec)))
	o.cancelTask(spec, false, false)
	waitChan(t, "the task's context to be cancelled", ex.cancelledCh(taskID(spec)))
	r := o.result(spec)
	assertCancelled(t, r, "while it ran")
	if r.KillWorker || !bytes.Equal(r.TaskId, spec.TaskId) {
		t.Fatalf("result %+v: want this task's, without kill_worker", r)
	}
	// The tasks behind it still run.
	if r := o.result(next); r.Error != nil {
		t.Fatalf("the next task failed: %v", r.Error)
	}
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	_, _, _, _, children := ex.snapshot()
	if len(children) != 0 {
		t.Fatalf("a non-recursive cancel cancelled children: %v", children)
	}
}

func TestForceCancelAnswersAtOnce(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	spec := newSpec("stubborn:g") // ignores its context
	queued := []*pb.TaskSpec{newSpec("q1"), newSpec("q2")}
	o.push(append([]*pb.TaskSpec{spec}, queued...)...)
	waitChan(t, "the task to start", ex.startedCh(taskID(spec)))
	o.cancelTask(spec, true, false)
	// Answered while the task still runs: the owner kills the worker.
	r := o.result(spec)
	assertCancelled(t, r, "while it ran (force)")
	if !r.KillWorker {
		t.Fatal("a forced cancel of a running task does not ask to kill the worker")
	}
	stolen := o.steals(1)
	if len(stolen) != 2 || !bytes.Equal(stolen[0], queued[0].TaskId) || !bytes.Equal(stolen[1], queued[1].TaskId) {
		t.Fatalf("given back %x; want every queued task", stolen)
	}
	waitChan(t, "the task's context to be cancelled", ex.cancelledCh(taskID(spec)))
	// The task's own late result is dropped.
	ex.release("g")
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := o.resultCount(spec); n != 1 {
		t.Fatalf("the force-cancelled task got %d answers; want 1", n)
	}
	for _, q := range queued {
		if ex.ran(taskID(q)) || o.resultCount(q) != 0 {
			t.Fatalf("given-back task %s ran or was answered here", q.Function)
		}
	}
}

func TestRecursiveCancelCancelsChildren(t *testing.T) {
	for _, force := range []bool{false, true} {
		name := "cooperative"
		if force {
			name = "force"
		}
		t.Run(name, func(t *testing.T) {
			ex := newFakeExec()
			o := startStream(t, ex)
			spec := newSpec("block:never")
			o.push(spec)
			waitChan(t, "the task to start", ex.startedCh(taskID(spec)))
			o.cancelTask(spec, force, true)
			o.result(spec)
			if err := o.finish(); err != nil {
				t.Fatalf("Serve: %v", err)
			}
			_, _, _, _, children := ex.snapshot()
			if len(children) != 1 || children[0] != (childCancel{taskID(spec), force}) {
				t.Fatalf("CancelChildren calls %v; want one for the task with force=%v", children, force)
			}
		})
	}
}

func TestCancelOfFinishedTaskIsIgnored(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	spec := newSpec("quick")
	o.push(spec)
	o.result(spec)
	o.cancelTask(spec, true, true)
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	_, _, _, _, children := ex.snapshot()
	if n := o.resultCount(spec); n != 1 || len(children) != 0 {
		t.Fatalf("a cancel after the answer: %d answers, children cancelled %v; want 1 and none", n, children)
	}
}

func TestConcurrentActorCallsRunAtOnce(t *testing.T) {
	ex := newFakeExec()
	ex.concurrentActor = "actor-1"
	o := startStream(t, ex)
	calls := []*pb.TaskSpec{newSpec("block:g"), newSpec("block:g"), newSpec("block:g")}
	for _, c := range calls {
		c.ActorId = "actor-1"
	}
	o.push(calls[0])
	o.push(calls[1:]...)
	waitFor(t, "every call to run at once", func() bool {
		_, running, _, _, _ := ex.snapshot()
		return running == len(calls)
	})
	// A cancel reaches any of the running calls.
	o.cancelTask(calls[1], false, false)
	assertCancelled(t, o.result(calls[1]), "while it ran")
	ex.release("g")
	for _, c := range calls {
		o.result(c)
	}
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestActorCreationStreamIsNotConcurrent(t *testing.T) {
	ex := newFakeExec()
	ex.concurrentActor = "actor-1"
	o := startStream(t, ex)
	create := newSpec("block:g")
	create.ActorId, create.ActorCreation = "actor-1", true
	call := newSpec("c")
	call.ActorId = "actor-1"
	o.push(create, call)
	waitChan(t, "the creation to start", ex.startedCh(taskID(create)))
	// Queued behind the creation, the call can be taken back.
	o.send(&pb.PushTasksRequest{Steal: 1})
	if stolen := o.steals(1); len(stolen) != 1 || !bytes.Equal(stolen[0], call.TaskId) {
		t.Fatalf("stolen %x; want the call queued behind the creation", stolen)
	}
	ex.release("g")
	o.result(create)
	if err := o.finish(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestCloseSendDrainsQueue(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	specs := []*pb.TaskSpec{newSpec("block:g"), newSpec("a"), newSpec("b")}
	o.push(specs...)
	waitChan(t, "the first task to start", ex.startedCh(taskID(specs[0])))
	o.closeSend()
	ex.release("g")
	if err := o.wait(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for _, spec := range specs {
		if n := o.resultCount(spec); n != 1 {
			t.Fatalf("task %s got %d answers after CloseSend; want 1", spec.Function, n)
		}
	}
}

func TestOwnerGoneDropsQueue(t *testing.T) {
	ex := newFakeExec()
	o := startStream(t, ex)
	spec, queued := newSpec("block:never"), newSpec("queued")
	o.push(spec, queued)
	waitChan(t, "the task to start", ex.startedCh(taskID(spec)))
	o.cancel() // the owner's stream breaks
	waitChan(t, "the running task's context to be cancelled", ex.cancelledCh(taskID(spec)))
	select {
	case <-o.served:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the stream broke")
	}
	if ex.ran(taskID(queued)) {
		t.Fatal("a task queued on a broken stream ran")
	}
	_, _, _, ended, _ := ex.snapshot()
	if len(ended) != 1 || ended[0] != taskID(spec) {
		t.Fatalf("TaskEnded for %v; want the running task", ended)
	}
}
