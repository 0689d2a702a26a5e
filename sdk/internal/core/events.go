package core

// Task events for the State API. The owner reports each attempt's end:
// when it was created, where it ran (node, worker, pid: the lease's) and
// since when (the answer's run time), how it ended (its error and stack);
// and, once a second, the attempts still waiting (for their arguments or
// a worker) that it has not reported yet. Only the executor knows a task
// is running before it ends, so a worker reports, at the same tick, the
// tasks it has been running for a while. So a trivial task costs one
// event, and a long one, which a user watches, shows each state as it
// comes (within a second). Events go through sdk/internal/taskevents,
// which batches them off the task path. A worker's output also gets a
// marker line per task (raylet/workerlog) so its log lines can be
// attributed.

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/raylet/workerlog"
	"github.com/manta-ray/manta/sdk/internal/taskevents"
)

// EnvNoTaskEvents, set to 1 in a driver's environment (or by
// InitOptions.NoTaskEvents), turns task events off; workers of a job
// inherit the driver's choice through the job's runtime env.
const EnvNoTaskEvents = "MANTA_NO_TASK_EVENTS"

// eventLog reports task events; a zero one (no reporter yet, or events
// off) reports nothing. Where the process runs is filled in once.
type eventLog struct {
	r      atomic.Pointer[taskevents.Reporter]
	node   string
	worker string
	pid    int32

	// The tasks this worker runs now, for the tick.
	mu  sync.Mutex
	now map[*pb.TaskSpec]*runningTask
	// The attempts this owner submitted whose end or pending state is not
	// reported yet, for the tick.
	pmu  sync.Mutex
	pend []*taskEv
}

type runningTask struct {
	start    int64
	reported bool
}

func (l *eventLog) on() *taskevents.Reporter {
	if l == nil { // a task manager made without one (unit tests)
		return nil
	}
	return l.r.Load()
}

// taskEv is what the event log keeps of an owned task attempt (or actor
// call) until its end is reported. A task is not reported when it is
// submitted: most end within a second, and their end event says it all
// (when they were created, where they ran, how they ended), at the cost
// of one event instead of two. Tasks still waiting at the next tick are
// reported then, as pending (tickLoop).
type taskEv struct {
	spec    *pb.TaskSpec
	typ     cpb.TaskType
	parent  ids.TaskID
	res     resources.Set
	created int64
	// argsReady: its reference arguments are resolved (or it had none);
	// ended: its end was reported; reported: its pending state was.
	argsReady, ended, reported atomic.Bool
}

// submitted notes a new task attempt (a retry too) for the tick.
func (l *eventLog) submitted(te *taskEv, spec *pb.TaskSpec, typ cpb.TaskType, parent ids.TaskID, res resources.Set, waitsArgs bool) {
	if l.on() == nil {
		return
	}
	l.pmu.Lock()
	te.spec, te.typ, te.parent, te.res, te.created = spec, typ, parent, res, time.Now().UnixNano()
	te.argsReady.Store(!waitsArgs)
	te.ended.Store(false)
	te.reported.Store(false)
	l.pend = append(l.pend, te)
	l.pmu.Unlock()
}

// argsResolved notes that a task's arguments are ready (reported as a
// state change if its pending state was reported).
func (l *eventLog) argsResolved(te *taskEv) {
	r := l.on()
	if r == nil || te.spec == nil {
		return
	}
	te.argsReady.Store(true)
	if te.reported.Load() {
		r.State(te.spec.TaskId, te.spec.Attempt, cpb.TaskEventState_PENDING_NODE_ASSIGNMENT)
	}
}

// event is te's full event in state st, with its creation time.
func (te *taskEv) event(st cpb.TaskEventState) *cpb.TaskEvent {
	spec := te.spec
	ev := &cpb.TaskEvent{TaskId: spec.TaskId, Attempt: spec.Attempt, JobId: spec.JobId, ActorId: spec.ActorId,
		FuncOrClassName: spec.Function, Type: te.typ, State: st}
	// A normal task's default shape goes without saying (the leader fills
	// it in): a map on every task is the costliest field to send.
	switch {
	case te.typ == cpb.TaskType_NORMAL_TASK && len(te.res) == 0:
		ev.RequiredResources = map[string]float64{resources.CPU: 0}
	case len(te.res) != 1 || te.res[resources.CPU] != 1 || te.typ != cpb.TaskType_NORMAL_TASK:
		ev.RequiredResources = te.res
	}
	if te.parent != (ids.TaskID{}) {
		ev.ParentTaskId = te.parent[:]
	}
	taskevents.SetStateTime(ev, cpb.TaskEventState_PENDING_NODE_ASSIGNMENT, te.created)
	return ev
}

// finished reports an attempt's successful end: where it ran (from the
// lease; nil for an actor call) and since when (now minus its run time).
func (l *eventLog) finished(te *taskEv, lease *pb.LeaseReply, runNanos int64) {
	r := l.on()
	if r == nil || te.spec == nil {
		return
	}
	te.ended.Store(true)
	ev := te.event(cpb.TaskEventState_FINISHED)
	if lease != nil {
		ev.NodeId, ev.WorkerId, ev.WorkerPid = lease.NodeId, lease.WorkerId, lease.WorkerPid
		taskevents.SetStateTime(ev, cpb.TaskEventState_RUNNING, time.Now().UnixNano()-runNanos)
	}
	r.Add(ev)
}

// ranOn notes where a failed attempt ran (failed reports the failure).
func (l *eventLog) ranOn(te *taskEv, lease *pb.LeaseReply, runNanos int64) {
	r := l.on()
	if r == nil || lease == nil || te.spec == nil {
		return
	}
	r.Ended(te.spec.TaskId, te.spec.Attempt, cpb.TaskEventState_RUNNING,
		&taskevents.Where{Node: lease.NodeId, Worker: lease.WorkerId, Pid: lease.WorkerPid}, time.Now().UnixNano()-runNanos)
}

// failed reports an attempt's failure (or cancellation) with its error.
func (l *eventLog) failed(te *taskEv, e *pb.TaskError) {
	r := l.on()
	if r == nil || te.spec == nil {
		return
	}
	te.ended.Store(true)
	st := cpb.TaskEventState_FAILED
	if e.GetKind() == pb.ErrorKind_ERROR_TASK_CANCELLED {
		st = cpb.TaskEventState_CANCELED
	}
	ev := te.event(st)
	ev.ErrorType, ev.ErrorMessage, ev.Stack = errorType(e.GetKind()), e.GetMessage(), e.GetStack()
	r.Add(ev)
}

// reportPending reports, once, the attempts submitted at least minAge ago
// that have not ended, and forgets those that ended.
func (l *eventLog) reportPending(minAge time.Duration) {
	r := l.on()
	if r == nil {
		return
	}
	cut := time.Now().Add(-minAge).UnixNano()
	l.pmu.Lock()
	defer l.pmu.Unlock()
	kept := l.pend[:0]
	for _, te := range l.pend {
		switch {
		case te.ended.Load() || te.reported.Load():
		case te.created > cut:
			kept = append(kept, te)
		default:
			te.reported.Store(true)
			st := cpb.TaskEventState_PENDING_NODE_ASSIGNMENT
			if !te.argsReady.Load() {
				st = cpb.TaskEventState_PENDING_ARGS_AVAIL
			}
			r.Add(te.event(st))
		}
	}
	clear(l.pend[len(kept):])
	l.pend = kept
}

// begin and end bracket an attempt this worker executes.
func (l *eventLog) begin(spec *pb.TaskSpec) {
	if l.on() == nil {
		return
	}
	l.mu.Lock()
	if l.now == nil {
		l.now = map[*pb.TaskSpec]*runningTask{}
	}
	l.now[spec] = &runningTask{start: time.Now().UnixNano()}
	l.mu.Unlock()
}

func (l *eventLog) end(spec *pb.TaskSpec) {
	if l.on() == nil {
		return
	}
	l.mu.Lock()
	delete(l.now, spec)
	l.mu.Unlock()
}

// reportRunning reports the attempts that have run for at least minAge
// and were not reported yet, with this worker's node, ID and pid.
func (l *eventLog) reportRunning(minAge time.Duration) {
	r := l.on()
	if r == nil {
		return
	}
	cut := time.Now().Add(-minAge).UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	for spec, rt := range l.now {
		if rt.reported || rt.start > cut {
			continue
		}
		rt.reported = true
		r.AddAt(&cpb.TaskEvent{TaskId: spec.TaskId, Attempt: spec.Attempt, JobId: spec.JobId, ActorId: spec.ActorId,
			FuncOrClassName: spec.Function, Type: taskType(spec), State: cpb.TaskEventState_RUNNING,
			NodeId: l.node, WorkerId: l.worker, WorkerPid: l.pid}, rt.start)
	}
}

// tickLoop reports this process's long-waiting and long-running attempts
// until ctx ends.
func (l *eventLog) tickLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.reportPending(every / 2)
			l.reportRunning(every / 2)
		}
	}
}

// constructed reports, from the worker that ran it, how an actor's
// creation task ended (e nil: the actor is ready): the leader placed it,
// so no owner sees its answer.
func (l *eventLog) constructed(spec *pb.TaskSpec, e *pb.TaskError) {
	r := l.on()
	if r == nil {
		return
	}
	ev := &cpb.TaskEvent{TaskId: spec.TaskId, Attempt: spec.Attempt, JobId: spec.JobId, ActorId: spec.ActorId,
		FuncOrClassName: spec.Function, Type: cpb.TaskType_ACTOR_CREATION_TASK, State: cpb.TaskEventState_FINISHED,
		NodeId: l.node, WorkerId: l.worker, WorkerPid: l.pid}
	if e != nil {
		ev.State, ev.ErrorType, ev.ErrorMessage, ev.Stack = cpb.TaskEventState_FAILED, errorType(e.Kind), e.Message, e.Stack
	}
	r.Add(ev)
}

// errorType names an error kind as Ray's task error types do.
func errorType(k pb.ErrorKind) string {
	switch k {
	case pb.ErrorKind_ERROR_APPLICATION, pb.ErrorKind_ERROR_PANIC:
		return "TASK_EXECUTION_EXCEPTION"
	case pb.ErrorKind_ERROR_WORKER_CRASHED:
		return "WORKER_DIED"
	case pb.ErrorKind_ERROR_ACTOR_DIED:
		return "ACTOR_DIED"
	case pb.ErrorKind_ERROR_TASK_CANCELLED:
		return "TASK_CANCELLED"
	case pb.ErrorKind_ERROR_OBJECT_LOST, pb.ErrorKind_ERROR_OBJECT_NOT_FOUND:
		return "OBJECT_LOST"
	case pb.ErrorKind_ERROR_INFEASIBLE:
		return "TASK_UNSCHEDULABLE_ERROR"
	case pb.ErrorKind_ERROR_RUNTIME_ENV_SETUP:
		return "RUNTIME_ENV_SETUP_FAILED"
	case pb.ErrorKind_ERROR_NONE:
		return ""
	}
	return k.String()
}

func taskType(spec *pb.TaskSpec) cpb.TaskType {
	switch {
	case spec.ActorCreation:
		return cpb.TaskType_ACTOR_CREATION_TASK
	case spec.ActorId != "":
		return cpb.TaskType_ACTOR_TASK
	}
	return cpb.TaskType_NORMAL_TASK
}

// markTask writes the marker that attributes the worker's next output
// lines to this task (raylet/workerlog). Only in a worker process: a
// driver's output is its own.
func (c *Worker) markTask(spec *pb.TaskSpec, tid ids.TaskID) {
	if c.workerID == "" {
		return
	}
	_ = workerlog.WriteTaskMarker(os.Stdout, tid.String(), int(spec.Attempt), spec.Function, spec.ActorId)
}

// markActor writes the marker that says this worker is now an actor's.
func (c *Worker) markActor(spec *pb.TaskSpec) {
	if c.workerID == "" {
		return
	}
	_ = workerlog.WriteActorMarker(os.Stdout, spec.ActorId, spec.Function)
}
