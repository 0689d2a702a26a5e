package core

// Task events for the State API. The owner reports a task's submission,
// its wait for arguments, each failed attempt and its end, and, from the
// answer, where it ran (node, worker, pid: the lease's) and since when
// (the answer's run time): one merged event per task for the common
// case, since the reporter folds a task's changes within one flush. Only
// the executor knows a task is running before it ends, so it reports the
// tasks still running at its next flush tick (long tasks, which a user
// watches), not every task: a report per trivial task would double the
// events' cost for nothing. Events go through sdk/internal/taskevents,
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

	// The tasks this worker runs now, for runningLoop.
	mu  sync.Mutex
	now map[*pb.TaskSpec]*runningTask
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

// submitted reports a new task (or a new attempt of one): waiting for its
// arguments, or for a worker.
func (l *eventLog) submitted(spec *pb.TaskSpec, typ cpb.TaskType, parent ids.TaskID, res resources.Set, waitsArgs bool) {
	r := l.on()
	if r == nil {
		return
	}
	st := cpb.TaskEventState_PENDING_NODE_ASSIGNMENT
	if waitsArgs {
		st = cpb.TaskEventState_PENDING_ARGS_AVAIL
	}
	ev := &cpb.TaskEvent{TaskId: spec.TaskId, Attempt: spec.Attempt, JobId: spec.JobId, ActorId: spec.ActorId,
		FuncOrClassName: spec.Function, Type: typ, State: st}
	// A normal task's default shape goes without saying (the leader fills
	// it in): a map on every task is the costliest field to send.
	switch {
	case typ == cpb.TaskType_NORMAL_TASK && len(res) == 0:
		ev.RequiredResources = map[string]float64{resources.CPU: 0}
	case len(res) != 1 || res[resources.CPU] != 1 || typ != cpb.TaskType_NORMAL_TASK:
		ev.RequiredResources = res
	}
	if parent != (ids.TaskID{}) {
		ev.ParentTaskId = parent[:]
	}
	r.Add(ev)
}

// state reports a bare transition of a task attempt reported before.
func (l *eventLog) state(spec *pb.TaskSpec, s cpb.TaskEventState) {
	if r := l.on(); r != nil {
		r.State(spec.TaskId, spec.Attempt, s)
	}
}

// failed reports an attempt's failure (or cancellation) with its error.
func (l *eventLog) failed(spec *pb.TaskSpec, e *pb.TaskError) {
	r := l.on()
	if r == nil {
		return
	}
	st := cpb.TaskEventState_FAILED
	if e.GetKind() == pb.ErrorKind_ERROR_TASK_CANCELLED {
		st = cpb.TaskEventState_CANCELED
	}
	r.Add(&cpb.TaskEvent{TaskId: spec.TaskId, Attempt: spec.Attempt, JobId: spec.JobId, ActorId: spec.ActorId,
		FuncOrClassName: spec.Function, State: st, ErrorType: errorType(e.GetKind()),
		ErrorMessage: e.GetMessage(), Stack: e.GetStack()})
}

// ran reports, from the owner, where and since when an answered attempt
// ran, and that it finished when ok (a failure is reported by failed).
func (l *eventLog) ran(spec *pb.TaskSpec, lease *pb.LeaseReply, runNanos int64, ok bool) {
	r := l.on()
	if r == nil || lease == nil {
		return
	}
	st := cpb.TaskEventState_RUNNING
	if ok {
		st = cpb.TaskEventState_FINISHED
	}
	r.Ended(spec.TaskId, spec.Attempt, st, &taskevents.Where{Node: lease.NodeId, Worker: lease.WorkerId, Pid: lease.WorkerPid},
		time.Now().UnixNano()-runNanos)
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

// runningLoop reports this worker's long-running attempts until ctx ends.
func (l *eventLog) runningLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
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
