package core

import (
	"context"
	"slices"
	"testing"
	"time"

	cpte "github.com/manta-ray/manta/controlplane/taskevents"
	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/taskevents"
)

func crashed() *pb.TaskError {
	return &pb.TaskError{Kind: pb.ErrorKind_ERROR_WORKER_CRASHED, Message: "worker died"}
}

// TestTaskManagerRetriesLostWorkerUntilOutOfRetries: each lost worker
// runs the task again as the next attempt, consuming a retry; the one
// after the last retry fails its returns with the worker's error and
// drops its arguments' pins.
func TestTaskManagerRetriesLostWorkerUntilOutOfRetries(t *testing.T) {
	m, st, q, _, _ := newTestManager()
	tk := newTestTask("f", 2, 2, nil)
	pin := ids.PutID(ids.DriverTaskID(testJob), 1)
	tk.dm().pinned = []ids.ObjectID{pin}
	st.refs[pin] = 1
	m.enqueue(tk)
	for attempt := int32(1); attempt <= 2; attempt++ {
		m.WorkerLost(q.submitted[len(q.submitted)-1], crashed())
		if got := len(q.submitted); got != int(attempt)+1 {
			t.Fatalf("after %d lost workers: %d submissions, want %d", attempt, got, attempt+1)
		}
		if a := q.submitted[attempt].Spec.Attempt; a != attempt {
			t.Fatalf("resubmitted as attempt %d, want %d", a, attempt)
		}
		if tk.retriesLeft != 2-int(attempt) {
			t.Fatalf("retries left %d, want %d", tk.retriesLeft, 2-attempt)
		}
		if len(st.vals) != 0 {
			t.Fatal("returns completed while retries were left")
		}
	}
	m.WorkerLost(q.submitted[2], crashed())
	if len(q.submitted) != 3 {
		t.Fatalf("submitted %d times after the retries ran out, want 3", len(q.submitted))
	}
	for _, r := range tk.returns {
		v := st.vals[r]
		if v == nil || v.Error.GetKind() != pb.ErrorKind_ERROR_WORKER_CRASHED {
			t.Fatalf("return %s = %v, want a worker-crashed error", r, v)
		}
		if v.Error.Function != "f" || v.Error.TaskId == "" {
			t.Fatalf("the error does not name its task: %v", v.Error)
		}
	}
	if st.refs[pin] != 0 || tk.d().pinned != nil {
		t.Fatalf("argument pin not dropped: %d refs left", st.refs[pin])
	}
}

// TestTaskManagerRetriesErrorsOnlyWhenAsked: an application error or a
// panic is retried only with RetryExceptions, a bad argument never.
func TestTaskManagerRetriesErrorsOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		name     string
		kind     pb.ErrorKind
		retryExc bool
		retried  bool
	}{
		{"application error, not asked", pb.ErrorKind_ERROR_APPLICATION, false, false},
		{"application error, asked", pb.ErrorKind_ERROR_APPLICATION, true, true},
		{"panic, asked", pb.ErrorKind_ERROR_PANIC, true, true},
		{"bad argument, asked", pb.ErrorKind_ERROR_BAD_ARGUMENT, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, st, q, _, _ := newTestManager()
			tk := newTestTask("f", 1, 3, nil)
			tk.retryExceptions = tc.retryExc
			m.enqueue(tk)
			m.Finished(tk.st, &pb.TaskResult{Error: &pb.TaskError{Kind: tc.kind, Message: "boom"}}, &pb.LeaseReply{NodeId: "node-1"})
			if got := len(q.submitted) == 2; got != tc.retried {
				t.Fatalf("retried = %v, want %v", got, tc.retried)
			}
			if done := st.vals[tk.returns[0]] != nil; done == tc.retried {
				t.Fatalf("returns completed = %v with retried = %v", done, tc.retried)
			}
			if tc.retried && (tk.retriesLeft != 2 || tk.spec.Attempt != 1) {
				t.Fatalf("after a retry: %d retries left, attempt %d; want 2, 1", tk.retriesLeft, tk.spec.Attempt)
			}
		})
	}
}

// TestTaskManagerCancelledTaskIsNeverRetried: a cancelled task whose
// worker dies fails with a cancel error instead of running again; a
// cancelled one not queued yet never reaches the submitter; a task that
// answers "cancelled" is not retried either.
func TestTaskManagerCancelledTaskIsNeverRetried(t *testing.T) {
	m, st, q, _, _ := newTestManager()
	tk := newTestTask("f", 1, 3, nil)
	m.enqueue(tk)
	m.table.markCancelled(tk.st.ID)
	m.WorkerLost(tk.st, crashed())
	if len(q.submitted) != 1 {
		t.Fatalf("a cancelled task was resubmitted (%d submissions)", len(q.submitted))
	}
	if k := st.vals[tk.returns[0]].GetError().GetKind(); k != pb.ErrorKind_ERROR_TASK_CANCELLED {
		t.Fatalf("return failed with %v, want TASK_CANCELLED", k)
	}
	if m.table.isCancelled(tk.st.ID) {
		t.Fatal("the cancel mark outlived the task")
	}

	queued := newTestTask("g", 1, 3, nil)
	m.table.markCancelled(queued.st.ID)
	m.enqueue(queued)
	if len(q.submitted) != 1 || st.vals[queued.returns[0]].GetError().GetKind() != pb.ErrorKind_ERROR_TASK_CANCELLED {
		t.Fatal("a task cancelled before it was queued reached the submitter")
	}

	answered := newTestTask("h", 1, 3, nil)
	answered.retryExceptions = true
	m.enqueue(answered)
	m.Finished(answered.st, &pb.TaskResult{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_TASK_CANCELLED}}, &pb.LeaseReply{NodeId: "node-1"})
	if len(q.submitted) != 2 || st.vals[answered.returns[0]] == nil {
		t.Fatal("a task that answered cancelled was retried")
	}
}

// TestTaskManagerRecordsLineageBeforeCompletingStoredReturns: a result
// with a stored return is persisted (commit before consume) before the
// returns complete; an inline one is only reported; a result with too few
// values fails the missing return.
func TestTaskManagerRecordsLineageBeforeCompletingStoredReturns(t *testing.T) {
	m, st, q, _, ev := newTestManager()
	stored := newTestTask("f", 2, 0, nil)
	m.enqueue(stored)
	m.Finished(q.submitted[0], &pb.TaskResult{Returns: []*pb.ObjectValue{{Location: "node-2"}}}, &pb.LeaseReply{NodeId: "node-2"})
	want := []string{"submit attempt 0", "persist on node-2", "run ended", "complete 2"}
	if got := ev.all(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if k := st.vals[stored.returns[1]].GetError().GetKind(); k != pb.ErrorKind_ERROR_BAD_ARGUMENT {
		t.Fatalf("the missing return is %v, want BAD_ARGUMENT", k)
	}

	m, _, q, _, ev = newTestManager()
	inline := newTestTask("g", 1, 0, nil)
	m.enqueue(inline)
	m.Finished(q.submitted[0], &pb.TaskResult{Returns: []*pb.ObjectValue{{Data: []byte("x")}}}, &pb.LeaseReply{NodeId: "node-1"})
	want = []string{"submit attempt 0", "report finished on node-1", "run ended", "complete 1"}
	if got := ev.all(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestTaskManagerHandsLostArgumentToRecovery: a task whose worker could
// not read an argument is recovery's: neither failed nor retried here.
func TestTaskManagerHandsLostArgumentToRecovery(t *testing.T) {
	m, st, q, lin, _ := newTestManager()
	lin.takesLostArg = true
	tk := newTestTask("f", 1, 1, nil)
	m.enqueue(tk)
	m.Finished(tk.st, &pb.TaskResult{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST}}, &pb.LeaseReply{NodeId: "node-1"})
	if len(q.submitted) != 1 || len(st.vals) != 0 || tk.retriesLeft != 1 {
		t.Fatal("a lost argument was handled by the task manager instead of recovery")
	}
}

// TestTaskTableChildren: the tasks a running task submitted are taken
// once (for a recursive cancel), and one that ended is not among them.
func TestTaskTableChildren(t *testing.T) {
	var tt taskTable
	parent := newTestTask("p", 1, 0, nil)
	a, b := newTestTask("a", 1, 0, nil), newTestTask("b", 1, 0, nil)
	a.parent, b.parent = parent.st.ID, parent.st.ID
	tt.addChild(parent.st.ID, a.st.ID)
	tt.addChild(parent.st.ID, b.st.ID)
	tt.ended(a)
	got := tt.takeChildren(parent.st.ID)
	if len(got) != 1 || got[0] != b.st.ID {
		t.Fatalf("children %v, want only b", got)
	}
	if again := tt.takeChildren(parent.st.ID); again != nil {
		t.Fatalf("children taken twice: %v", again)
	}
	if tt.entries.Load() != 0 {
		t.Fatalf("%d entries left", tt.entries.Load())
	}
}

// eventSink is the control plane as a task-event reporter sees it.
type eventSink struct{ got []*cpb.TaskEvent }

func (s *eventSink) ReportTaskEvents(_ context.Context, req *cpb.ReportTaskEventsRequest) (*cpb.ReportTaskEventsResponse, error) {
	evs, err := cpte.Events(req)
	if err != nil {
		return nil, err
	}
	s.got = append(s.got, evs...)
	return &cpb.ReportTaskEventsResponse{Epoch: "e1"}, nil
}

// TestTaskManagerReportsAttempts: each attempt's end reaches the State
// API: a lost worker fails attempt 0 with WORKER_DIED, and attempt 1's
// answer says where it ran (the lease's node, worker and pid) and that it
// finished.
func TestTaskManagerReportsAttempts(t *testing.T) {
	m, _, q, _, _ := newTestManager()
	sink := &eventSink{}
	r := taskevents.New(taskevents.Config{Sender: sink, FlushInterval: time.Hour})
	defer r.Close(context.Background())
	m.ev = &eventLog{}
	m.ev.r.Store(r)
	tk := newTestTask("f", 1, 1, nil)
	m.enqueue(tk)
	m.WorkerLost(q.submitted[0], crashed())
	m.Finished(q.submitted[1], &pb.TaskResult{Returns: []*pb.ObjectValue{{Data: []byte("x")}}, RunNanos: 1000},
		&pb.LeaseReply{NodeId: "node-2", WorkerId: "w-7", WorkerPid: 77})
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	byAttempt := map[int32]*cpb.TaskEvent{}
	for _, ev := range sink.got {
		byAttempt[ev.Attempt] = ev
	}
	a0, a1 := byAttempt[0], byAttempt[1]
	if a0 == nil || a0.State != cpb.TaskEventState_FAILED || a0.ErrorType != "WORKER_DIED" {
		t.Fatalf("attempt 0 reported as %v, want FAILED with WORKER_DIED", a0)
	}
	if a1 == nil || a1.State != cpb.TaskEventState_FINISHED || a1.NodeId != "node-2" || a1.WorkerId != "w-7" || a1.WorkerPid != 77 {
		t.Fatalf("attempt 1 reported as %v, want FINISHED on node-2 by w-7 (pid 77)", a1)
	}
	if ts := a1.StateUnixNano; int(cpb.TaskEventState_RUNNING) >= len(ts) || ts[cpb.TaskEventState_RUNNING] == 0 {
		t.Fatalf("attempt 1 has no running time: %v", ts)
	}
}

// TestTaskManagerRetriesAResultItCouldNotStore: a worker whose node's
// store went away answers WORKER_CRASHED; that is retried like a lost
// worker, not failed as the task's own error.
func TestTaskManagerRetriesAResultItCouldNotStore(t *testing.T) {
	m, st, q, _, _ := newTestManager()
	tk := newTestTask("f", 1, 1, nil)
	m.enqueue(tk)
	m.Finished(q.submitted[0], &pb.TaskResult{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_WORKER_CRASHED,
		Message: "result 1: store object: Unavailable"}}, &pb.LeaseReply{NodeId: "node-1"})
	if len(q.submitted) != 2 || len(st.vals) != 0 {
		t.Fatalf("%d submissions and %d completed returns, want a retry and none", len(q.submitted), len(st.vals))
	}
}
