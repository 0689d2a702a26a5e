package submitter

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// expectFinishedOK checks that every task finished exactly once, without
// error, with its own result, and ran exactly once.
func expectFinishedOK(t *testing.T, e *env, tasks []*Task) {
	t.Helper()
	for _, tk := range tasks {
		o := e.h.only(t, tk.ID)
		if o.kind != "finished" || o.res.Error != nil {
			t.Fatalf("task %s (%s): %s %v %v, want finished without error", tk.ID, tk.Spec.Function, o.kind, o.res.GetError(), o.err)
		}
		if len(o.res.Returns) != 1 || string(o.res.Returns[0].Data) != string(resultData(tk.ID)) {
			t.Fatalf("task %s: returns %v, want %q", tk.ID, o.res.Returns, resultData(tk.ID))
		}
		if n := e.c.runCount(tk.ID); n != 1 {
			t.Fatalf("task %s ran %d times, want 1", tk.ID, n)
		}
	}
}

func waitAllDone(t *testing.T, e *env, tasks []*Task) {
	t.Helper()
	for _, tk := range tasks {
		waitChan(t, "task "+tk.Spec.Function+" "+tk.ID.String()+" to be answered", e.h.doneCh(tk.ID))
	}
}

// 1. Many short tasks all finish once with their results, pipelined.
func TestManyShortTasksPipelined(t *testing.T) {
	c := newCluster(t)
	c.addRaylet("r1", 2)
	e := newEnv(t, c, "r1", Config{})
	const n = 1000
	tasks := make([]*Task, n)
	for i := range tasks {
		tasks[i] = e.submit("ok", nil)
	}
	waitAllDone(t, e, tasks)
	expectFinishedOK(t, e, tasks)
	c.mu.Lock()
	msgs, pushed := c.taskMsgs, c.tasksPushed
	c.mu.Unlock()
	t.Logf("%d tasks in %d PushTasks messages", pushed, msgs)
	if pushed < n {
		t.Errorf("workers got %d tasks, want at least %d", pushed, n)
	}
	if msgs > n/5 {
		t.Errorf("%d tasks took %d PushTasks messages; want pipelining (at most %d)", n, msgs, n/5)
	}
}

// 2. Short tasks behind a blocked one of the same shape all finish while
// it is still blocked.
func TestNoHeadOfLineBlocking(t *testing.T) {
	c := newCluster(t)
	c.addRaylet("r1", 2)
	e := newEnv(t, c, "r1", Config{})
	blocked := e.submit("block:hol", nil)
	tasks := make([]*Task, 200)
	for i := range tasks {
		tasks[i] = e.submit("ok", nil)
	}
	waitAllDone(t, e, tasks)
	if os := e.h.get(blocked.ID); len(os) != 0 {
		t.Fatalf("the blocked task was answered while blocked: %+v", os)
	}
	expectFinishedOK(t, e, tasks)
	c.release("hol")
	waitChan(t, "the blocked task to finish once released", e.h.doneCh(blocked.ID))
	expectFinishedOK(t, e, []*Task{blocked})
}

// 3. Tasks submitted one by one spread over every slot.
func TestTasksSpreadOverSlots(t *testing.T) {
	c := newCluster(t)
	c.addRaylet("r1", 4)
	e := newEnv(t, c, "r1", Config{})
	tasks := make([]*Task, 16)
	for i := range tasks {
		tasks[i] = e.submit("sleep:50ms", nil)
	}
	waitAllDone(t, e, tasks)
	expectFinishedOK(t, e, tasks)
	c.mu.Lock()
	peak := c.peak
	workers := map[string]bool{}
	for _, tk := range tasks {
		workers[c.ranOn[tk.ID]] = true
	}
	c.mu.Unlock()
	if len(workers) < 2 {
		t.Errorf("tasks ran on %d workers, want more than one", len(workers))
	}
	if peak != 4 {
		t.Errorf("at most %d tasks ran at once, want 4 (every slot)", peak)
	}
}

// 4. Once nothing waits, lease requests are withdrawn and leases returned.
func TestLeaseRequestsWithdrawn(t *testing.T) {
	c := newCluster(t)
	r := c.addRaylet("r1", 2)
	e := newEnv(t, c, "r1", Config{})
	tasks := make([]*Task, 300)
	for i := range tasks {
		tasks[i] = e.submit("sleep:100us", nil)
	}
	waitAllDone(t, e, tasks)
	expectFinishedOK(t, e, tasks)
	waitFor(t, "no queued request and every lease returned", func() bool {
		st := r.state()
		return r.queuedFrom(e.s.cfg.Owner) == 0 && st.out == 0
	})
	st := r.state()
	if len(st.badReturns) > 0 {
		t.Errorf("leases returned that were not out: %v", st.badReturns)
	}
	if len(st.returns) != st.granted {
		t.Errorf("%d leases granted, %d returned", st.granted, len(st.returns))
	}
	for _, x := range st.returns {
		if x.WorkerFailed {
			t.Errorf("lease %s returned with worker_failed", x.LeaseId)
		}
	}
	waitFor(t, "the submitter to hold no lease or request", func() bool { return len(e.s.Stats()) == 0 })
}

// pipelinedEnv is a submitter on a one-slot raylet that keeps its lease
// (long Linger), never deems a task stuck and pipelines deeply; the
// shape's run time is learnt first with one short task.
func pipelinedEnv(t *testing.T) (*env, *fakeRaylet, *fakeWorker) {
	c := newCluster(t)
	r := c.addRaylet("r1", 1)
	e := newEnv(t, c, "r1", Config{MaxLeaseRequests: 1, Linger: time.Minute, PipelineTarget: time.Minute, StuckAfter: time.Minute})
	warm := e.submit("ok", nil)
	waitChan(t, "the warm-up task", e.h.doneCh(warm.ID))
	return e, r, r.workers[0]
}

// pushBehind submits head and then n short tasks, and waits until head
// runs on w with at least one of them queued behind it there and
// everything the submitter pushed has reached the worker.
func pushBehind(t *testing.T, e *env, w *fakeWorker, head string, n int) (*Task, []*Task) {
	t.Helper()
	h := e.submit(head, nil)
	rest := make([]*Task, n)
	for i := range rest {
		rest[i] = e.submit("ok", nil)
	}
	waitChan(t, "the head task to start", e.c.startedCh(h.ID))
	waitFor(t, "tasks queued behind the head on its worker", func() bool {
		held := len(w.held())
		return held >= 2 && held == e.pushed()
	})
	return h, rest
}

// 5. Cancel.
func TestCancel(t *testing.T) {
	t.Run("queued", func(t *testing.T) {
		c := newCluster(t)
		r := c.addRaylet("r1", 1)
		e := newEnv(t, c, "r1", Config{})
		b := e.submit("block:q", nil)
		waitChan(t, "the blocking task to start", c.startedCh(b.ID))
		q := e.submit("ok", nil)
		waitFor(t, "a lease request queued at the raylet", func() bool { return r.queuedFrom(e.s.cfg.Owner) > 0 })
		if got := e.s.Cancel(q.ID, false, false); got != Removed {
			t.Fatalf("Cancel of a queued task = %v, want Removed", got)
		}
		o := e.h.only(t, q.ID)
		if o.kind != "failed" || o.err.GetKind() != pb.ErrorKind_ERROR_TASK_CANCELLED {
			t.Fatalf("cancelled queued task: %s %v, want failed ERROR_TASK_CANCELLED", o.kind, o.err)
		}
		c.release("q")
		waitChan(t, "the blocking task", e.h.doneCh(b.ID))
		// A task submitted after it goes through the same queue: once it
		// finished, the cancelled one would have run before.
		after := e.submit("ok", nil)
		waitChan(t, "a later task", e.h.doneCh(after.ID))
		if n := c.runCount(q.ID); n != 0 {
			t.Fatalf("the cancelled task ran %d times", n)
		}
		if got := e.s.Cancel(q.ID, false, false); got != NotHere {
			t.Fatalf("second Cancel = %v, want NotHere", got)
		}
		e.h.only(t, q.ID)
	})

	t.Run("running", func(t *testing.T) {
		c := newCluster(t)
		c.addRaylet("r1", 1)
		e := newEnv(t, c, "r1", Config{})
		b := e.submit("block:never", nil)
		waitChan(t, "the task to start", c.startedCh(b.ID))
		if got := e.s.Cancel(b.ID, false, false); got != Asked {
			t.Fatalf("Cancel of a running task = %v, want Asked", got)
		}
		waitChan(t, "the task's context to be cancelled", c.cancelledCh(b.ID))
		waitChan(t, "the cancelled task's answer", e.h.doneCh(b.ID))
		o := e.h.only(t, b.ID)
		if o.kind != "finished" || o.res.GetError().GetKind() != pb.ErrorKind_ERROR_TASK_CANCELLED {
			t.Fatalf("cancelled running task: %s %v, want finished with ERROR_TASK_CANCELLED", o.kind, o.res.GetError())
		}
		// The worker is fine: the lease goes on.
		next := e.submit("ok", nil)
		waitChan(t, "a task after the cancel", e.h.doneCh(next.ID))
		expectFinishedOK(t, e, []*Task{next})
	})

	t.Run("force running", func(t *testing.T) {
		e, r, w := pipelinedEnv(t)
		head, rest := pushBehind(t, e, w, "block:force", 6)
		queued := w.held()[1:]
		if got := e.s.Cancel(head.ID, true, false); got != Asked {
			t.Fatalf("force Cancel of a running task = %v, want Asked", got)
		}
		waitChan(t, "the forced task's context to be cancelled", e.c.cancelledCh(head.ID))
		waitChan(t, "the forced task's answer", e.h.doneCh(head.ID))
		o := e.h.only(t, head.ID)
		if o.kind != "finished" || o.res.GetError().GetKind() != pb.ErrorKind_ERROR_TASK_CANCELLED {
			t.Fatalf("force-cancelled task: %s %v, want finished with ERROR_TASK_CANCELLED", o.kind, o.res.GetError())
		}
		waitFor(t, "the lease returned with worker_failed", func() bool { return r.failedReturns() == 1 })
		waitAllDone(t, e, rest)
		expectFinishedOK(t, e, rest)
		if len(queued) == 0 {
			t.Fatal("no task was queued behind the forced one")
		}
		t.Logf("%d tasks were queued behind the forced one", len(queued))
	})

	t.Run("unknown", func(t *testing.T) {
		c := newCluster(t)
		c.addRaylet("r1", 1)
		e := newEnv(t, c, "r1", Config{})
		if got := e.s.Cancel(ids.NewTaskID(testJob, ids.DriverTaskID(testJob), 999999), false, false); got != NotHere {
			t.Fatalf("Cancel of an unknown task = %v, want NotHere", got)
		}
		done := e.submit("ok", nil)
		waitChan(t, "a task", e.h.doneCh(done.ID))
		for _, force := range []bool{false, true} {
			if got := e.s.Cancel(done.ID, force, false); got != NotHere {
				t.Fatalf("Cancel(force=%v) of a finished task = %v, want NotHere", force, got)
			}
		}
	})
}

// 6. A worker whose stream breaks loses exactly the tasks it held.
func TestWorkerDeath(t *testing.T) {
	e, r, w := pipelinedEnv(t)
	head, rest := pushBehind(t, e, w, "block:die", 6)
	held := w.die()
	waitFor(t, "every task to be answered", func() bool { return e.h.count("") == 2+len(rest) })
	lost := e.h.ids("lost")
	want := map[ids.TaskID]bool{}
	for _, id := range held {
		want[id] = true
	}
	if !want[head.ID] || len(want) < 2 {
		t.Fatalf("the dead worker held %v; want the head and tasks behind it", held)
	}
	// Lost: every task the worker held, and any pushed to it while it
	// died (on the wire, never queued there: they never ran).
	isLost := map[ids.TaskID]bool{}
	for id := range lost {
		isLost[id] = true
		if !want[id] {
			if n := e.c.runCount(id); n != 0 {
				t.Errorf("task %s reported lost but the dead worker had not held it, and it ran %d times", id, n)
			}
		}
	}
	for id := range want {
		o := e.h.only(t, id)
		if o.kind != "lost" || o.err.GetKind() != pb.ErrorKind_ERROR_WORKER_CRASHED {
			t.Errorf("task %s held by the dead worker: %s %v, want lost ERROR_WORKER_CRASHED", id, o.kind, o.err)
		}
	}
	var others []*Task
	for _, tk := range rest {
		if !isLost[tk.ID] {
			others = append(others, tk)
		}
	}
	expectFinishedOK(t, e, others)
	waitFor(t, "the lease returned with worker_failed", func() bool { return r.failedReturns() == 1 })
}

// 7. An infeasible shape fails its queued tasks; other shapes run.
func TestInfeasibleShape(t *testing.T) {
	c := newCluster(t)
	r := c.addRaylet("r1", 2)
	r.infeasible = func(req *pb.LeaseRequest) bool { return req.Resources["GPU"] > 0 }
	e := newEnv(t, c, "r1", Config{})
	gpu := resources.Set{"CPU": 1, "GPU": 1}
	var bad, good []*Task
	for range 10 {
		bad = append(bad, e.submit("ok", gpu))
		good = append(good, e.submit("ok", nil))
	}
	waitAllDone(t, e, bad)
	waitAllDone(t, e, good)
	for _, tk := range bad {
		o := e.h.only(t, tk.ID)
		if o.kind != "failed" || o.err.GetKind() != pb.ErrorKind_ERROR_INFEASIBLE {
			t.Errorf("infeasible task: %s %v, want failed ERROR_INFEASIBLE", o.kind, o.err)
		}
		if n := c.runCount(tk.ID); n != 0 {
			t.Errorf("infeasible task ran %d times", n)
		}
	}
	expectFinishedOK(t, e, good)
}

// 8. A home raylet that spills back sends the lease to another raylet.
func TestSpillback(t *testing.T) {
	c := newCluster(t)
	home := c.addRaylet("home", 1)
	home.spillTo = "far"
	far := c.addRaylet("far", 2)
	e := newEnv(t, c, "home", Config{})
	tasks := make([]*Task, 50)
	for i := range tasks {
		tasks[i] = e.submit("ok", nil)
	}
	waitAllDone(t, e, tasks)
	expectFinishedOK(t, e, tasks)
	for _, tk := range tasks {
		if o := e.h.only(t, tk.ID); o.node != "node-far" {
			t.Fatalf("task finished on node %q, want node-far", o.node)
		}
		c.mu.Lock()
		on := c.ranOn[tk.ID]
		c.mu.Unlock()
		if !strings.HasPrefix(on, "far-") {
			t.Fatalf("task ran on worker %q, want one of far's", on)
		}
	}
	if st := home.state(); st.granted != 0 || st.requests == 0 {
		t.Errorf("home raylet: %d requests, %d granted; want requests and no grant", st.requests, st.granted)
	}
	waitFor(t, "every lease of far returned to far", func() bool { return far.state().out == 0 })
	if st := far.state(); len(st.badReturns) > 0 || len(home.state().returns) > 0 {
		t.Errorf("leases returned to the wrong raylet: far bad %v, home got %d", st.badReturns, len(home.state().returns))
	}
}

// ---- tests that show bugs in submitter.go (see the report) -----------------------

// Cancelling the only task of a shape withdraws the shape's lease
// request: here the raylet's one slot is held by another owner, so the
// request waits in the raylet's queue.
func TestCancelQueuedWithdrawsLeaseRequest(t *testing.T) {
	c := newCluster(t)
	r := c.addRaylet("r1", 1)
	other := newEnv(t, c, "r1", Config{})
	b := other.submit("block:long", nil)
	waitChan(t, "the other owner's task to start", c.startedCh(b.ID))
	e := newEnv(t, c, "r1", Config{Owner: "second"})
	q := e.submit("ok", nil)
	waitFor(t, "a lease request queued at the raylet", func() bool { return r.queuedFrom(e.s.cfg.Owner) > 0 })
	if got := e.s.Cancel(q.ID, false, false); got != Removed {
		t.Fatalf("Cancel = %v, want Removed", got)
	}
	// Nothing of this owner is queued or pushed now: its request should
	// not stay at the raylet as demand (to be granted a worker it has
	// nothing for) for as long as the other owner holds the slot.
	if !eventually(func() bool { return r.queuedFrom(e.s.cfg.Owner) == 0 }) {
		t.Errorf("the lease request stayed queued at the raylet after the shape's only task was cancelled (submitter stats %+v)", e.s.Stats())
	}
}

// holdGrants is a Conns whose raylet clients, when armed, hold the next
// lease granted until the test lets it through (or the call's context
// ends): the grant is on its way as the owner withdraws the request.
type holdGrants struct {
	*cluster
	mu      sync.Mutex
	hold    int
	held    chan struct{} // closed once a grant is held
	release chan struct{} // closed by the test to let it through
}

func (h *holdGrants) Raylet(addr string) (pb.RayletClient, error) {
	rc, err := h.cluster.Raylet(addr)
	if err != nil {
		return nil, err
	}
	return &holdingClient{RayletClient: rc, h: h}, nil
}

type holdingClient struct {
	pb.RayletClient
	h *holdGrants
}

func (c *holdingClient) RequestWorkerLease(ctx context.Context, req *pb.LeaseRequest, opts ...grpc.CallOption) (*pb.LeaseReply, error) {
	rep, err := c.RayletClient.RequestWorkerLease(ctx, req, opts...)
	if err == nil && rep.LeaseId != "" {
		c.h.mu.Lock()
		hold := c.h.hold > 0
		if hold {
			c.h.hold--
			close(c.h.held)
		}
		c.h.mu.Unlock()
		if hold {
			select {
			case <-c.h.release:
			case <-ctx.Done():
			}
		}
	}
	return rep, err
}

// A lease granted as its request is withdrawn is used or returned, never
// lost.
func TestGrantRacingWithdrawalIsReturned(t *testing.T) {
	c := newCluster(t)
	r := c.addRaylet("r1", 2)
	conns := &holdGrants{cluster: c, held: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, c, "r1", Config{Conns: conns})
	a := e.submit("block:a", nil)
	waitChan(t, "the first task to start", c.startedCh(a.ID))
	conns.mu.Lock()
	conns.hold = 1
	conns.mu.Unlock()
	b := e.submit("ok", nil) // waits behind a (run time unknown): a second lease is asked for
	waitChan(t, "the second lease granted", conns.held)
	c.release("a") // a's lease takes b; then nothing waits and the request is withdrawn
	waitAllDone(t, e, []*Task{a, b})
	expectFinishedOK(t, e, []*Task{a, b})
	waitFor(t, "the request withdrawn", func() bool { return r.state().cancelCalls > 0 })
	close(conns.release)
	waitFor(t, "the submitter to hold no lease or request", func() bool { return len(e.s.Stats()) == 0 })
	waitFor(t, "every granted lease returned to the raylet", func() bool { return r.state().out == 0 })
}

// A force cancel that reaches the worker before it started the task
// cancels it there; the tasks queued behind it are not lost.
func TestForceCancelOfNotStartedHeadLosesNothing(t *testing.T) {
	e, r, w := pipelinedEnv(t)
	w.holdStartNow() // the worker has not yet taken its next task
	head := e.submit("ok", nil)
	rest := make([]*Task, 6)
	for i := range rest {
		rest[i] = e.submit("ok", nil)
	}
	waitFor(t, "tasks queued on the worker", func() bool { return w.queued() >= 2 && w.queued() == e.pushed() })
	if got := e.s.Cancel(head.ID, true, false); got != Asked {
		t.Fatalf("Cancel = %v, want Asked", got)
	}
	waitChan(t, "the cancelled task's answer", e.h.doneCh(head.ID))
	w.resumeStart()
	waitAllDone(t, e, rest)
	if o := e.h.only(t, head.ID); o.res.GetError().GetKind() != pb.ErrorKind_ERROR_TASK_CANCELLED {
		t.Errorf("cancelled task: %s %v, want cancelled", o.kind, o.res.GetError())
	}
	if n := e.c.runCount(head.ID); n != 0 {
		t.Errorf("the cancelled task ran %d times", n)
	}
	// Every lease is returned by Close: none should say its worker failed.
	if !e.close(5 * time.Second) {
		t.FailNow()
	}
	if n, lost := r.failedReturns(), e.h.ids("lost"); n > 0 || len(lost) > 0 {
		t.Errorf("the worker was killed (%d leases returned worker_failed) for a task it never started; %d tasks queued behind it were reported WorkerLost",
			n, len(lost))
	}
	expectFinishedOK(t, e, rest)
}

// A force cancel of the task a worker runs kills that worker even when
// the answer of the task before it is still on its way to the owner.
func TestForceCancelWhilePreviousAnswerInFlightKillsWorker(t *testing.T) {
	e, r, w := pipelinedEnv(t)
	w.holdSendsNow() // a slow link: answers wait
	prev := e.submit("ok", nil)
	stuck := e.submit("stubborn:s", nil) // ignores its context
	rest := make([]*Task, 6)
	for i := range rest {
		rest[i] = e.submit("ok", nil)
	}
	waitChan(t, "the stubborn task to start", e.c.startedCh(stuck.ID))
	waitFor(t, "tasks queued behind it on the worker", func() bool {
		return e.c.runCount(prev.ID) == 1 && w.queued() >= 1 && e.pushed() == len(w.held())+1
	})
	if got := e.s.Cancel(stuck.ID, true, false); got != Asked {
		t.Fatalf("Cancel = %v, want Asked", got)
	}
	w.resumeSends()
	waitChan(t, "the cancelled task's answer", e.h.doneCh(stuck.ID))
	if o := e.h.only(t, stuck.ID); o.res.GetError().GetKind() != pb.ErrorKind_ERROR_TASK_CANCELLED {
		t.Errorf("force-cancelled task: %s %v, want cancelled", o.kind, o.res.GetError())
	}
	// The worker still runs the stubborn task: it must be killed (its
	// lease returned with worker_failed), and the tasks it gave back run
	// elsewhere instead of queueing behind the stubborn one again.
	killed := eventually(func() bool { return r.failedReturns() == 1 })
	finished := killed && eventually(func() bool { return e.h.count("finished") == 3+len(rest) }) // the warm-up, prev, stuck and the rest
	if !killed || !finished {
		var ok, lost int
		for _, tk := range rest {
			for _, o := range e.h.get(tk.ID) {
				if o.kind == "finished" && o.res.Error == nil {
					ok++
				} else if o.kind == "lost" {
					lost++
				}
			}
		}
		st := r.state()
		t.Errorf("after the force cancel: lease returned with worker_failed: %v (returns %d, %d out); "+
			"of the %d tasks given back: %d finished, %d lost, %d held by the worker behind the stubborn task, %d pushed",
			killed, len(st.returns), st.out, len(rest), ok, lost, w.queued(), e.pushed())
	}
}

// 9. Close returns promptly with leases and requests in flight, and
// leaves no goroutine behind.
func TestCloseWithLeasesAndRequestsInFlight(t *testing.T) {
	base := runtime.NumGoroutine()
	c := newCluster(t)
	r := c.addRaylet("r1", 1)
	e := newEnv(t, c, "r1", Config{})
	b := e.submit("block:close", nil)
	for range 5 {
		e.submit("ok", nil)
	}
	waitChan(t, "the blocking task to start", c.startedCh(b.ID))
	waitFor(t, "lease requests queued at the raylet", func() bool { return r.queuedFrom(e.s.cfg.Owner) > 0 })
	if !e.close(5 * time.Second) {
		t.FailNow()
	}
	waitFor(t, "no submitter goroutine left after Close", func() bool { return submitterGoroutines() == 0 })
	waitFor(t, "the lease returned and requests gone", func() bool {
		return r.state().out == 0 && r.queuedFrom(e.s.cfg.Owner) == 0
	})
	e.s.Submit(e.task("ok", nil)) // after Close: ignored
	c.close()
	waitFor(t, "the goroutine count back to its baseline", func() bool { return runtime.NumGoroutine() <= base })
}
