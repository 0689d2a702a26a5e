package actorsubmit

import (
	"strings"
	"sync"
	"testing"
	"time"

	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

const (
	alive      = cpb.ActorState_ALIVE
	pending    = cpb.ActorState_PENDING_CREATION
	depsUnread = cpb.ActorState_DEPENDENCIES_UNREADY
	restarting = cpb.ActorState_RESTARTING
	dead       = cpb.ActorState_DEAD
)

// 1. 500 calls to an ALIVE actor run in submission order (seq 1..500) and
// are each answered once, with their own result, in that order.
func TestCallsToAliveActorRunInOrder(t *testing.T) {
	e := newEnv(t, Config{})
	w := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	cs := calls("a", mOK, 500)
	e.submitAll("a", cs)
	e.waitAnswered(cs)
	e.expectOK(cs)
	expectRuns(t, w, cs, repeat(0, len(cs)))
	for i, c := range cs {
		if c.Spec.Seq != uint64(i+1) {
			t.Fatalf("call %d has seq %d, want %d", i, c.Spec.Seq, i+1)
		}
	}
	order := e.h.order()
	for i, c := range cs {
		if order[i] != c.ID {
			t.Fatalf("answer %d is for %s, want %s", i, order[i], c.ID)
		}
	}
	if n := w.streamCount(); n != 1 {
		t.Errorf("worker saw %d streams, want 1", n)
	}
}

// 1b. Calls from several goroutines at once: the worker still sees them in
// seq order, with no seq missing or repeated.
func TestConcurrentCallersKeepSeqOrder(t *testing.T) {
	e := newEnv(t, Config{MaxBatch: 8})
	w := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	const goroutines, per = 4, 100
	all := make([][]*Call, goroutines)
	var wg sync.WaitGroup
	for g := range all {
		all[g] = calls("a", mOK, per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.submitAll("a", all[g])
		}()
	}
	wg.Wait()
	var cs []*Call
	for _, g := range all {
		cs = append(cs, g...)
	}
	e.waitAnswered(cs)
	e.expectOK(cs)
	runs := w.runs()
	if len(runs) != len(cs) {
		t.Fatalf("worker ran %d calls, want %d", len(runs), len(cs))
	}
	for i, r := range runs {
		if r.seq != uint64(i+1) {
			t.Fatalf("run %d has seq %d, want %d", i, r.seq, i+1)
		}
	}
	// Each goroutine's own calls ran in the order it made them.
	for _, g := range all {
		for i := 1; i < len(g); i++ {
			if g[i].Spec.Seq <= g[i-1].Spec.Seq {
				t.Fatalf("a caller's call got seq %d after seq %d", g[i].Spec.Seq, g[i-1].Spec.Seq)
			}
		}
	}
}

// 1c. Calls made before the actor is ALIVE (DEPENDENCIES_UNREADY, then
// PENDING_CREATION) wait in the submitter, then run in order.
func TestCallsBeforeAliveWaitThenRunInOrder(t *testing.T) {
	e := newEnv(t, Config{MaxBatch: 16})
	w := e.net.addWorker("w1")
	e.tab.publish(actor("a", depsUnread, "", 0, 0))
	cs := calls("a", mOK, 50)
	e.submitAll("a", cs[:20])
	e.tab.publish(actor("a", pending, "", 0, 0))
	e.submitAll("a", cs[20:])
	if n := e.queued("a"); n != len(cs) {
		t.Fatalf("%d calls queued before the actor is ALIVE, want %d", n, len(cs))
	}
	for _, c := range cs {
		if e.h.answered(c.ID) {
			t.Fatalf("call %s answered before the actor is ALIVE", c.ID)
		}
	}
	if n := w.streamCount(); n != 0 {
		t.Fatalf("worker saw %d streams before the actor is ALIVE", n)
	}
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	e.waitAnswered(cs)
	e.expectOK(cs)
	expectRuns(t, w, cs, repeat(0, len(cs)))
}

// 2. The worker crashes mid-stream; the actor is RESTARTING, then ALIVE on
// a new worker. Calls in flight are resent (Attempt+1) when MaxTaskRetries
// allows, and fail with ERROR_ACTOR_DIED when it is 0; calls queued
// meanwhile run on the new incarnation, after them.
func TestCrashResendsOrFailsCallsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name    string
		retries int32
	}{{"retries=-1", -1}, {"retries=2", 2}, {"retries=0", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			w1, w2 := e.net.addWorker("w1"), e.net.addWorker("w2")
			e.tab.publish(actor("a", alive, "w1", 0, tc.retries))

			first := newCall("a", mBlock) // answered before the crash
			crash := newCall("a", mCrash) // kills w1 (on its first attempt)
			rest := calls("a", mOK, 3)    // in flight behind it
			inFlight := append([]*Call{crash}, rest...)
			e.submitAll("a", append([]*Call{first}, inFlight...))
			waitFor(t, "w1 to start the first call and receive the rest", func() bool {
				return w1.started(first.ID, 0) && w1.got(rest[2].ID) == 1
			})
			e.tab.publish(actor("a", restarting, "w1", 0, tc.retries))
			e.net.release(first.ID)
			waitFor(t, "the stream to w1 to break", func() bool { return !e.connected("a") })
			later := calls("a", mOK, 2) // queued while RESTARTING
			e.submitAll("a", later)
			if tc.retries == 0 {
				e.waitAnswered(inFlight)
				e.expectFailed(inFlight, pb.ErrorKind_ERROR_ACTOR_DIED, "MaxTaskRetries")
			}
			e.tab.publish(actor("a", alive, "w2", 1, tc.retries))

			e.waitAnswered(append(append([]*Call{first}, inFlight...), later...))
			e.expectOK([]*Call{first})
			e.expectOK(later)
			expectRuns(t, w1, []*Call{first, crash}, []int32{0, 0})
			if tc.retries == 0 {
				expectRuns(t, w2, later, []int32{0, 0})
				return
			}
			e.expectOK(inFlight)
			expectRuns(t, w2, append(inFlight, later...), []int32{1, 1, 1, 1, 0, 0})
		})
	}
}

// 2b. MaxTaskRetries bounds the resends: with 1, a call lost twice fails.
func TestRetriesExhausted(t *testing.T) {
	e := newEnv(t, Config{})
	w1, w2 := e.net.addWorker("w1"), e.net.addWorker("w2")
	e.net.addWorker("w3")
	e.tab.publish(actor("a", alive, "w1", 0, 1))
	c := newCall("a", mBlock)
	e.s.Submit("a", c)
	waitFor(t, "w1 to start the call", func() bool { return w1.started(c.ID, 0) })
	e.tab.publish(actor("a", restarting, "w1", 0, 1))
	w1.crash()
	e.tab.publish(actor("a", alive, "w2", 1, 1))
	waitFor(t, "w2 to start the call again", func() bool { return w2.started(c.ID, 1) })
	e.tab.publish(actor("a", restarting, "w2", 1, 1))
	w2.crash()
	waitFor(t, "the call to fail", func() bool { return e.h.answered(c.ID) })
	e.expectFailed([]*Call{c}, pb.ErrorKind_ERROR_ACTOR_DIED, "MaxTaskRetries")
	// A later call goes to the next incarnation.
	e.tab.publish(actor("a", alive, "w3", 2, 1))
	next := newCall("a", mOK)
	e.s.Submit("a", next)
	e.waitAnswered([]*Call{next})
	e.expectOK([]*Call{next})
}

// 2c. A stream that breaks while the control plane still has the same
// worker ALIVE (a dropped connection) is reopened after ReconnectAfter and
// the call resent there.
func TestDroppedStreamReconnectsToSameWorker(t *testing.T) {
	e := newEnv(t, Config{ReconnectAfter: 20 * time.Millisecond})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, -1))
	c := newCall("a", mBlock)
	e.s.Submit("a", c)
	waitFor(t, "w1 to start the call", func() bool { return w1.started(c.ID, 0) })
	w1.crash()
	waitFor(t, "w1 to start the call again", func() bool { return w1.started(c.ID, 1) })
	e.net.release(c.ID)
	e.waitAnswered([]*Call{c})
	e.expectOK([]*Call{c})
	if n := w1.streamCount(); n != 2 {
		t.Errorf("w1 saw %d streams, want 2", n)
	}
}

// 3. The actor goes DEAD (its worker gone): the calls waiting for its next
// incarnation and every later call fail with the death cause.
func TestActorDeadFailsPendingAndLaterCalls(t *testing.T) {
	const cause = "out of memory (cause-42)"
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, -1))
	lost := newCall("a", mBlock)
	e.s.Submit("a", lost)
	waitFor(t, "w1 to start the call", func() bool { return w1.started(lost.ID, 0) })
	e.tab.publish(actor("a", restarting, "w1", 0, -1))
	w1.crash()
	waitFor(t, "the stream to w1 to break", func() bool { return !e.connected("a") })
	queued := newCall("a", mOK)
	e.s.Submit("a", queued)
	d := actor("a", dead, "w1", 0, -1)
	d.DeathCause = cause
	e.tab.publish(d)
	e.waitAnswered([]*Call{lost, queued})
	e.expectFailed([]*Call{lost, queued}, pb.ErrorKind_ERROR_ACTOR_DIED, cause)

	later := newCall("a", mOK)
	e.s.Submit("a", later)
	if !e.h.answered(later.ID) {
		t.Fatalf("a call to a DEAD actor was not failed at once")
	}
	e.expectFailed([]*Call{later}, pb.ErrorKind_ERROR_ACTOR_DIED, cause)
	expectRuns(t, w1, []*Call{lost}, []int32{0})
	if w1.got(queued.ID)+w1.got(later.ID) != 0 {
		t.Errorf("calls made after the crash reached the dead worker")
	}
}

// 3b. An actor that never came up (DEAD from PENDING_CREATION, e.g. its
// constructor failed) fails the calls queued for it, with the cause; so
// does one DEAD before the first call.
func TestActorDeadBeforeAlive(t *testing.T) {
	e := newEnv(t, Config{})
	e.tab.publish(actor("a", pending, "", 0, 0))
	cs := calls("a", mOK, 3)
	e.submitAll("a", cs)
	d := actor("a", dead, "", 0, 0)
	d.DeathCause = "constructor failed: boom"
	e.tab.publish(d)
	e.waitAnswered(cs)
	e.expectFailed(cs, pb.ErrorKind_ERROR_ACTOR_DIED, "constructor failed: boom")

	d2 := actor("b", dead, "", 0, 0)
	d2.DeathCause = "killed before use"
	e.tab.publish(d2)
	c := newCall("b", mOK)
	e.s.Submit("b", c)
	e.waitAnswered([]*Call{c})
	e.expectFailed([]*Call{c}, pb.ErrorKind_ERROR_ACTOR_DIED, "killed before use")
}

// 3c. Dead fails the queued calls and every later one at once, without
// waiting for the watch; calls already sent are still answered.
func TestDeadFailsQueuedAndLaterCallsAtOnce(t *testing.T) {
	e := newEnv(t, Config{})
	w1, w2 := e.net.addWorker("w1"), e.net.addWorker("w2")
	killed := &pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED, Message: "actor a is dead: killed by ray.Kill"}

	// Actor a is not up yet: its calls are queued.
	e.tab.publish(actor("a", pending, "", 0, 0))
	cs := calls("a", mOK, 3)
	e.submitAll("a", cs)
	e.s.Dead("a", killed)
	for _, c := range cs {
		if !e.h.answered(c.ID) {
			t.Fatalf("a queued call was not failed when Dead returned")
		}
	}
	e.expectFailed(cs, pb.ErrorKind_ERROR_ACTOR_DIED, "killed by ray.Kill")
	later := newCall("a", mOK)
	e.s.Submit("a", later)
	if !e.h.answered(later.ID) {
		t.Fatalf("a call after Dead was not failed at once")
	}
	e.expectFailed([]*Call{later}, pb.ErrorKind_ERROR_ACTOR_DIED, "killed by ray.Kill")
	// Even with the (stale) view saying ALIVE.
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	waitFor(t, "the view to see a ALIVE", func() bool { return e.s.View().Current("a").GetState() == alive })
	after := newCall("a", mOK)
	e.s.Submit("a", after)
	if !e.h.answered(after.ID) {
		t.Fatalf("a call after Dead was not failed at once")
	}
	e.expectFailed([]*Call{after}, pb.ErrorKind_ERROR_ACTOR_DIED, "killed by ray.Kill")
	if w1.got(after.ID) != 0 {
		t.Errorf("a call after Dead reached the worker")
	}

	// Actor b is ALIVE with a call running: Dead fails later calls, and
	// the running one is still answered.
	e.tab.publish(actor("b", alive, "w2", 0, 0))
	running := newCall("b", mBlock)
	e.s.Submit("b", running)
	waitFor(t, "w2 to start the call", func() bool { return w2.started(running.ID, 0) })
	e.s.Dead("b", killed)
	next := newCall("b", mOK)
	e.s.Submit("b", next)
	if !e.h.answered(next.ID) {
		t.Fatalf("a call after Dead was not failed at once")
	}
	e.expectFailed([]*Call{next}, pb.ErrorKind_ERROR_ACTOR_DIED, "killed by ray.Kill")
	e.net.release(running.ID)
	e.waitAnswered([]*Call{running})
	e.expectOK([]*Call{running})
	if w2.got(next.ID) != 0 {
		t.Errorf("a call after Dead reached the worker")
	}
}

// 3d. Dead before this process ever called the actor (ray.Kill of a
// handle it was given) still fails its later calls at once.
func TestDeadBeforeFirstCall(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	waitFor(t, "the view to see a ALIVE", func() bool { return e.s.View().Current("a").GetState() == alive })
	e.s.Dead("a", &pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED, Message: "actor a is dead: killed by ray.Kill"})
	c := newCall("a", mOK)
	e.s.Submit("a", c)
	e.waitAnswered([]*Call{c})
	e.expectFailed([]*Call{c}, pb.ErrorKind_ERROR_ACTOR_DIED, "killed by ray.Kill")
	if w1.got(c.ID) != 0 {
		t.Errorf("a call made after Dead reached the worker")
	}
}

// 3e. The control plane reports the actor DEAD while this caller's stream
// to its last worker is still open: later calls fail with the cause
// instead of going to that worker ("every call to a DEAD actor fails at
// once with the cause").
func TestDeadInViewWhileStreamOpen(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	first := newCall("a", mOK)
	e.s.Submit("a", first)
	e.waitAnswered([]*Call{first})
	e.expectOK([]*Call{first})
	d := actor("a", dead, "w1", 0, 0)
	d.DeathCause = "node lost (cause-7)"
	e.tab.publish(d)
	waitFor(t, "the view to see a DEAD", func() bool { return e.s.View().Current("a").GetState() == dead })
	c := newCall("a", mOK)
	e.s.Submit("a", c)
	e.waitAnswered([]*Call{c})
	if w1.got(c.ID) != 0 {
		t.Errorf("a call made after the view said DEAD was sent to the old worker")
	}
	e.expectFailed([]*Call{c}, pb.ErrorKind_ERROR_ACTOR_DIED, "cause-7")
}

// 4. Cancel of a call still queued in the submitter fails it at once with
// ERROR_TASK_CANCELLED, and it never reaches the worker.
func TestCancelQueuedCall(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", pending, "", 0, 0))
	cs := calls("a", mOK, 3)
	e.submitAll("a", cs)
	e.s.Cancel("a", cs[1].ID)
	if !e.h.answered(cs[1].ID) {
		t.Fatalf("a queued call was not failed when Cancel returned")
	}
	e.expectFailed(cs[1:2], pb.ErrorKind_ERROR_TASK_CANCELLED, "cancelled")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	rest := []*Call{cs[0], cs[2]}
	e.waitAnswered(rest)
	e.expectOK(rest)
	expectRuns(t, w1, rest, []int32{0, 0})
	if w1.got(cs[1].ID) != 0 {
		t.Errorf("the cancelled call reached the worker")
	}
}

// 4b. Cancel of sent calls: the worker answers a queued one cancelled at
// once and cancels the running one; the calls after them still run.
func TestCancelSentCalls(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, -1))
	running, queuedAtWorker, after := newCall("a", mBlock), newCall("a", mBlock), newCall("a", mOK)
	e.submitAll("a", []*Call{running, queuedAtWorker, after})
	waitFor(t, "w1 to start the first call and receive the others", func() bool {
		return w1.started(running.ID, 0) && w1.got(after.ID) == 1
	})
	isCancelled := func(c *Call) {
		t.Helper()
		o := e.h.get(c.ID)
		if len(o.finished) != 1 || len(o.failed) != 0 || o.finished[0].Error.GetKind() != pb.ErrorKind_ERROR_TASK_CANCELLED {
			t.Fatalf("call %s: finished %v, failed %v; want finished once with ERROR_TASK_CANCELLED", c.Spec.Method, o.finished, o.failed)
		}
	}
	e.s.Cancel("a", queuedAtWorker.ID)
	e.waitAnswered([]*Call{queuedAtWorker})
	isCancelled(queuedAtWorker)
	if e.h.answered(running.ID) || e.h.answered(after.ID) {
		t.Fatalf("cancelling the queued call answered the others")
	}
	e.s.Cancel("a", running.ID)
	e.waitAnswered([]*Call{running, after})
	isCancelled(running)
	e.expectOK([]*Call{after})
	last := newCall("a", mOK)
	e.s.Submit("a", last)
	e.waitAnswered([]*Call{last})
	e.expectOK([]*Call{last})
	expectRuns(t, w1, []*Call{running, after, last}, []int32{0, 0, 0})
}

// 4c. Cancel of a call waiting behind an unresolved one (queued in the
// submitter while the stream is up): it fails cancelled, never reaches
// the worker, and the others run.
func TestCancelCallBehindUnresolved(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	unres := newCall("a", mOK)
	unres.Unresolved = true
	e.h.gate(unres.ID)
	e.s.Submit("a", unres)
	waitFor(t, "Resolve to be called", func() bool { return e.h.resolveEntered(unres.ID) })
	behind := calls("a", mOK, 2)
	e.submitAll("a", behind)
	e.s.Cancel("a", behind[0].ID)
	e.h.openGate(unres.ID)
	all := []*Call{unres, behind[0], behind[1]}
	e.waitAnswered(all)
	e.expectFailed(behind[:1], pb.ErrorKind_ERROR_TASK_CANCELLED, "cancelled")
	e.expectOK([]*Call{unres, behind[1]})
	expectRuns(t, w1, []*Call{unres, behind[1]}, []int32{0, 0})
	if w1.got(behind[0].ID) != 0 {
		t.Errorf("the cancelled call reached the worker")
	}
}

// 5. An unresolved call whose Resolve waits holds back the calls after it
// (order kept) until it is resolved.
func TestUnresolvedCallHoldsBackLaterCalls(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	first := newCall("a", mOK)
	e.s.Submit("a", first)
	e.waitAnswered([]*Call{first})
	unres := newCall("a", mOK)
	unres.Unresolved = true
	e.h.gate(unres.ID)
	e.s.Submit("a", unres)
	waitFor(t, "Resolve to be called", func() bool { return e.h.resolveEntered(unres.ID) })
	later := calls("a", mOK, 3)
	e.submitAll("a", later)
	for _, c := range later {
		if e.h.answered(c.ID) || w1.got(c.ID) != 0 {
			t.Fatalf("a call after an unresolved one was sent before it")
		}
	}
	e.h.openGate(unres.ID)
	all := append([]*Call{first, unres}, later...)
	e.waitAnswered(all)
	e.expectOK(all)
	expectRuns(t, w1, all, repeat(0, len(all)))
	if r := w1.runs()[1]; len(r.args) != 1 || r.args[0] != "resolved" {
		t.Errorf("the unresolved call ran with args %q, want its resolved one", r.args)
	}
}

// 5b. A Resolve that fails (having failed its call) does not block the
// calls after it, gated or not; the failed call never reaches the worker.
func TestFailedResolveDoesNotBlockLaterCalls(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	bad := newCall("a", mOK)
	bad.Unresolved = true
	e.h.failResolveOf(bad.ID)
	next := newCall("a", mOK)
	badGated := newCall("a", mOK)
	badGated.Unresolved = true
	e.h.failResolveOf(badGated.ID)
	e.h.gate(badGated.ID)
	last := newCall("a", mOK)
	e.submitAll("a", []*Call{bad, next, badGated, last})
	waitFor(t, "the gated Resolve to be called", func() bool { return e.h.resolveEntered(badGated.ID) })
	e.h.openGate(badGated.ID)
	all := []*Call{bad, next, badGated, last}
	e.waitAnswered(all)
	e.expectFailed([]*Call{bad, badGated}, pb.ErrorKind_ERROR_OBJECT_LOST, "argument lost")
	e.expectOK([]*Call{next, last})
	expectRuns(t, w1, []*Call{next, last}, []int32{0, 0})
	if w1.got(bad.ID)+w1.got(badGated.ID) != 0 {
		t.Errorf("a call whose argument failed reached the worker")
	}
}

// 5c. An unresolved call does not hold back the calls made BEFORE it.
// a.g(a.f()) made while the actor is still PENDING_CREATION: g's argument
// is f's result, so Resolve(g) waits for f to be answered; f must be sent
// without waiting for Resolve(g), or neither ever runs.
func TestUnresolvedCallDoesNotHoldBackEarlierCalls(t *testing.T) {
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.tab.publish(actor("a", pending, "", 0, 0))
	f := newCall("a", mOK)
	g := newCall("a", mOK)
	g.Unresolved = true
	e.h.gate(g.ID)
	e.submitAll("a", []*Call{f, g})
	e.tab.publish(actor("a", alive, "w1", 0, 0))
	// g's argument becomes ready when f is answered.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !e.h.answered(f.ID) {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
		e.h.openGate(g.ID)
	}()
	t.Cleanup(func() { close(stop); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for !e.h.answered(f.ID) || !e.h.answered(g.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("a.g(a.f()) never completed: Resolve(g) entered %v, f reached the worker %d times, f answered %v",
				e.h.resolveEntered(g.ID), w1.got(f.ID), e.h.answered(f.ID))
		}
		time.Sleep(time.Millisecond)
	}
	e.expectOK([]*Call{f, g})
}

// 6. Close returns with calls in flight, queued, and in Resolve, and
// leaves no goroutine of the package behind; the watch has ended.
func TestCloseStopsEverything(t *testing.T) {
	// A goroutine of an earlier test may still be on its way out (a
	// sender started by a call racing that test's Close sees the cancel
	// and returns): wait for it, with a deadline.
	for deadline := time.Now().Add(5 * time.Second); ; {
		g := pkgGoroutines()
		if len(g) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines of the package before the test:\n%s", strings.Join(g, "\n\n"))
		}
		time.Sleep(time.Millisecond)
	}
	e := newEnv(t, Config{})
	w1 := e.net.addWorker("w1")
	e.net.addWorker("w2")
	e.tab.publish(actor("a", alive, "w1", 0, -1))
	e.tab.publish(actor("b", pending, "", 0, 0))
	e.tab.publish(actor("c", alive, "w2", 0, 0))
	blocked := newCall("a", mBlock)
	queued := calls("a", mOK, 3)
	e.s.Submit("a", blocked)
	e.submitAll("a", queued)
	waitFor(t, "w1 to start the blocked call", func() bool { return w1.started(blocked.ID, 0) })
	e.submitAll("b", calls("b", mOK, 3))
	unres := newCall("c", mOK)
	unres.Unresolved = true
	e.h.gate(unres.ID)
	e.s.Submit("c", unres)
	waitFor(t, "Resolve to be called", func() bool { return e.h.resolveEntered(unres.ID) })
	if len(pkgGoroutines()) == 0 {
		t.Fatalf("no goroutine of the package is running: the check would see nothing")
	}

	closed := make(chan struct{})
	go func() {
		defer close(closed)
		e.s.Close()
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("Close did not return with calls in flight")
	}
	if n := e.tab.running(); n != 0 {
		t.Errorf("%d watches still running after Close", n)
	}
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		if left = pkgGoroutines(); len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines of the package left after Close:\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(time.Millisecond)
	}
}
