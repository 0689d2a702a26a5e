// Package receiver is a worker's task receiver (Ray's TaskReceiver): it runs
// the tasks an owner pushes on a PushTasks stream and streams back their
// answers. It owns each stream's queue and running tasks under the
// stream's own lock, and reaches the rest of the worker only through
// Executor, so that the owner-visible protocol (run in order one at a time,
// give back queued tasks on a steal, cancel queued or running tasks, answer
// a forced cancel at once) is written, and tested, in one place. Tasks wait
// in the queue until the executor takes them so that, until then, their
// owner can take them back or cancel them without a worker's help.
package receiver

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// Executor is what the receiver needs from the worker's runtime. Its
// methods are called without any lock of the receiver's, from several
// goroutines at once.
type Executor interface {
	// Execute runs one task and returns its result (TaskId and RunNanos
	// are filled in by the receiver). ctx is cancelled when the owner
	// cancels the task or the stream ends.
	Execute(ctx context.Context, spec *pb.TaskSpec) *pb.TaskResult
	// Concurrent says whether the actor actorID, hosted here, runs several
	// calls at once (MaxConcurrency > 1): its calls then start as soon as
	// they arrive, the actor admitting them itself.
	Concurrent(actorID string) bool
	// CancelChildren cancels the unfinished tasks that running task
	// submitted (a recursive cancel).
	CancelChildren(task ids.TaskID, force bool)
	// TaskEnded says that task returned: what it submitted need no longer
	// be found for a recursive cancel.
	TaskEnded(task ids.TaskID)
}

// Serve runs the tasks an owner streams on one PushTasks stream and
// streams their answers, until the owner closes its side (the tasks still
// queued then are run first) or the stream breaks. It returns the error
// of the first failed send, if any.
func Serve(stream pb.CoreWorker_PushTasksServer, ex Executor) error {
	s := newResultSender(stream)
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		s.run()
	}()
	x := &streamExec{ex: ex, s: s, ctx: stream.Context(), running: map[ids.TaskID]*runningTask{}}
	x.cond = sync.NewCond(&x.mu)
	execDone := make(chan struct{})
	started := false
	for {
		req, err := stream.Recv()
		if err != nil {
			break // io.EOF: the owner is done with the lease
		}
		if !started {
			// The first tasks say what the stream is for: the calls of a
			// concurrent actor do not wait for one another. An actor's
			// creation runs alone.
			started = true
			if len(req.Tasks) > 0 && !req.Tasks[0].ActorCreation && ex.Concurrent(req.Tasks[0].ActorId) {
				x.concurrent = true
			}
			go func() {
				defer close(execDone)
				if !x.concurrent {
					x.loop()
				}
			}()
		}
		x.handle(req)
	}
	x.mu.Lock()
	x.closed = true
	x.cond.Broadcast()
	x.mu.Unlock()
	if started {
		<-execDone
	}
	x.calls.Wait()
	err := s.close()
	<-senderDone
	return err
}

// streamExec is the queue and the running tasks of one PushTasks stream.
type streamExec struct {
	ex  Executor
	s   *resultSender
	ctx context.Context
	// concurrent: an actor that runs several calls at once; each call
	// then runs in its own goroutine as soon as it arrives (the actor's
	// semaphore admits them).
	concurrent bool

	mu    sync.Mutex
	cond  *sync.Cond
	queue []*pb.TaskSpec
	// running holds a concurrent actor's calls; current the one task a
	// sequential stream runs (no map operation per task on that path).
	running map[ids.TaskID]*runningTask
	current *runningTask
	closed  bool
	calls   sync.WaitGroup
}

// runningTask is a task taken from the queue: its context's cancel, and
// whether a cancel reached it (its result is then "cancelled") or was
// answered already (a forced cancel: its worker is about to die).
type runningTask struct {
	id        ids.TaskID
	cancel    context.CancelFunc
	cancelled bool
	answered  bool
}

// handle takes one message of the owner's: tasks, a steal, cancels.
func (x *streamExec) handle(req *pb.PushTasksRequest) {
	if len(req.Tasks) > 0 {
		if x.concurrent {
			for _, spec := range req.Tasks {
				x.start(spec)
			}
		} else {
			x.mu.Lock()
			x.queue = append(x.queue, req.Tasks...)
			x.cond.Signal()
			x.mu.Unlock()
		}
	}
	for _, cn := range req.Cancel {
		x.cancel(cn)
	}
	if req.Steal > 0 {
		// The owner takes back the tasks queued last, which would start
		// last here; the answer is sent even when there are none, so that
		// the owner knows the steal is over.
		x.mu.Lock()
		n := min(int(req.Steal), len(x.queue))
		taken := x.queue[len(x.queue)-n:]
		x.queue = x.queue[:len(x.queue)-n]
		x.mu.Unlock()
		stolen := make([][]byte, len(taken))
		for i, spec := range taken {
			stolen[i] = spec.TaskId
		}
		x.s.answerSteal(stolen)
	}
}

// cancel removes a queued task (answering it cancelled) or cancels a
// running one's context; a task not here finished already.
func (x *streamExec) cancel(cn *pb.CancelTask) {
	tid, err := ids.TaskFromBytes(cn.TaskId)
	if err != nil {
		return
	}
	x.mu.Lock()
	for i, spec := range x.queue {
		if bytes.Equal(spec.TaskId, cn.TaskId) {
			x.queue = append(x.queue[:i:i], x.queue[i+1:]...)
			x.mu.Unlock()
			_ = x.s.add(cancelledResult(spec, "before it started"), true)
			return
		}
	}
	rt := x.running[tid]
	if c := x.current; c != nil && c.id == tid {
		rt = c
	}
	if rt == nil || rt.cancelled {
		x.mu.Unlock()
		return
	}
	rt.cancelled = true
	rt.cancel()
	var stolen [][]byte
	if cn.Force {
		// The owner kills this worker once it has the answer: give back
		// what waits here first, and answer now (the task may never
		// return).
		rt.answered = true
		for _, spec := range x.queue {
			stolen = append(stolen, spec.TaskId)
		}
		x.queue = nil
	}
	x.mu.Unlock()
	if cn.Recursive {
		x.ex.CancelChildren(tid, cn.Force)
	}
	if cn.Force {
		x.s.answerSteal(stolen)
		_ = x.s.add(&pb.TaskResult{TaskId: cn.TaskId, Error: submitter.CancelledError("", "while it ran (force)"), KillWorker: true}, true)
	}
}

func cancelledResult(spec *pb.TaskSpec, when string) *pb.TaskResult {
	e := submitter.CancelledError(spec.Function, when)
	if tid, err := ids.TaskFromBytes(spec.TaskId); err == nil {
		e.TaskId = tid.String()
	}
	return &pb.TaskResult{TaskId: spec.TaskId, Error: e}
}

// loop runs the queued tasks in order until the stream ends.
func (x *streamExec) loop() {
	for {
		x.mu.Lock()
		for len(x.queue) == 0 && !x.closed && x.ctx.Err() == nil {
			x.cond.Wait()
		}
		if len(x.queue) == 0 || x.ctx.Err() != nil {
			x.queue = nil
			x.mu.Unlock()
			return
		}
		spec := x.queue[0]
		x.queue[0] = nil
		x.queue = x.queue[1:]
		// Nothing waits behind this task: its answer goes out from this
		// goroutine, without a hand-off to the sender.
		inline := len(x.queue) == 0
		x.mu.Unlock()
		if err := x.run(spec, inline); err != nil {
			return
		}
	}
}

// start runs a concurrent actor's call in its own goroutine.
func (x *streamExec) start(spec *pb.TaskSpec) {
	x.calls.Add(1)
	go func() {
		defer x.calls.Done()
		_ = x.run(spec, false)
	}()
}

// run executes one task and queues its answer.
func (x *streamExec) run(spec *pb.TaskSpec, inline bool) error {
	tid, _ := ids.TaskFromBytes(spec.TaskId)
	ctx, cancel := context.WithCancel(x.ctx)
	defer cancel()
	rt := &runningTask{id: tid, cancel: cancel}
	x.mu.Lock()
	if x.concurrent {
		x.running[tid] = rt
	} else {
		x.current = rt
	}
	x.mu.Unlock()
	start := time.Now()
	res := x.ex.Execute(ctx, spec)
	run := time.Since(start)
	x.ex.TaskEnded(tid)
	x.mu.Lock()
	if x.concurrent {
		delete(x.running, tid)
	} else {
		x.current = nil
	}
	cancelled, answered := rt.cancelled, rt.answered
	x.mu.Unlock()
	if answered {
		return nil
	}
	if cancelled {
		res = cancelledResult(spec, "while it ran")
	}
	res.TaskId, res.RunNanos = spec.TaskId, int64(run)
	return x.s.add(res, inline)
}
