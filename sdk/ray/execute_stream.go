package ray

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// The receiver: a worker runs the tasks an owner pushes on a PushTasks
// stream. Tasks wait in the stream's queue until the executor takes them,
// one at a time (an actor with MaxConcurrency > 1 runs its calls at once),
// so that until then the owner can take them back (steal) or cancel them;
// a running task's context is cancelled by a cancel.

// resultSender sends a stream's answers, batching whatever piled up while
// a send was in progress. Whoever finds answers waiting and no send in
// progress sends them: the executing goroutine itself when nothing waits
// behind its task (no hand-off on the latency path), else the sender
// goroutine, so a slow task never holds back the answers before it.
type resultSender struct {
	stream  pb.CoreWorker_PushTasksServer
	mu      sync.Mutex
	cond    *sync.Cond
	results []*pb.TaskResult
	stolen  [][]byte
	answer  bool // a steal request waits for its answer
	sending bool
	done    bool
	err     error
}

func (s *resultSender) waitingLocked() bool { return len(s.results) > 0 || s.answer }

// drainLocked sends until nothing waits; called with mu held and
// sending false, returns with mu held.
func (s *resultSender) drainLocked() {
	for s.waitingLocked() && s.err == nil {
		reply := &pb.PushTasksReply{Results: s.results, Stolen: s.stolen, StealAnswered: s.answer}
		s.results, s.stolen, s.answer = nil, nil, false
		s.sending = true
		s.mu.Unlock()
		err := s.stream.Send(reply)
		s.mu.Lock()
		s.sending = false
		if err != nil {
			s.err = err
		}
	}
	s.cond.Broadcast()
}

// add queues a result; inline sends it now unless a send is in progress.
func (s *resultSender) add(r *pb.TaskResult, inline bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, r)
	if inline && !s.sending {
		s.drainLocked()
	} else {
		s.cond.Broadcast()
	}
	return s.err
}

// answerSteal queues the answer to a steal request.
func (s *resultSender) answerSteal(stolen [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stolen = append(s.stolen, stolen...)
	s.answer = true
	s.cond.Broadcast()
}

// run is the sender goroutine: it sends answers the executor left behind.
func (s *resultSender) run() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for (!s.waitingLocked() || s.sending) && !s.done {
			s.cond.Wait()
		}
		if !s.waitingLocked() && s.done {
			return
		}
		if !s.sending {
			s.drainLocked()
		}
		if s.err != nil {
			return
		}
	}
}

// close waits until every answer is sent (or sending failed).
func (s *resultSender) close() error {
	s.mu.Lock()
	s.done = true
	s.cond.Broadcast()
	for (s.waitingLocked() || s.sending) && s.err == nil {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return s.err
}

// streamExec is the queue and the running tasks of one PushTasks stream.
type streamExec struct {
	c   *core
	s   *resultSender
	ctx context.Context
	// concurrent: an actor that runs several calls at once; each call
	// then runs in its own goroutine as soon as it arrives (the actor's
	// semaphore admits them).
	concurrent bool

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*pb.TaskSpec
	running map[ids.TaskID]*runningTask
	closed  bool
	calls   sync.WaitGroup
}

// runningTask is a task taken from the queue: its context's cancel, and
// whether a cancel reached it (its result is then "cancelled") or was
// answered already (a forced cancel: its worker is about to die).
type runningTask struct {
	cancel    context.CancelFunc
	cancelled bool
	answered  bool
}

// PushTasks runs the tasks its owner streams and streams their answers.
func (c *core) PushTasks(stream pb.CoreWorker_PushTasksServer) error {
	s := &resultSender{stream: stream}
	s.cond = sync.NewCond(&s.mu)
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		s.run()
	}()
	x := &streamExec{c: c, s: s, ctx: stream.Context(), running: map[ids.TaskID]*runningTask{}}
	x.cond = sync.NewCond(&x.mu)
	execDone := make(chan struct{})
	started := false
	for {
		req, err := stream.Recv()
		if err != nil {
			break // io.EOF: the owner is done with the lease
		}
		if !started {
			started = true
			if len(req.Tasks) > 0 && !req.Tasks[0].ActorCreation {
				if h := c.hostedFor(req.Tasks[0].ActorId); h != nil && h.concurrent() {
					x.concurrent = true
				}
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
		x.c.cancelChildren(tid, cn.Force)
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
	rt := &runningTask{cancel: cancel}
	x.mu.Lock()
	x.running[tid] = rt
	x.mu.Unlock()
	start := time.Now()
	res := x.c.execute(ctx, spec)
	run := time.Since(start)
	x.c.forgetChildren(tid)
	x.mu.Lock()
	delete(x.running, tid)
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
