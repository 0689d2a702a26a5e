package core

// The executor, a worker's side of a task: the receiver
// (sdk/internal/receiver) queues what owners push and calls Execute,
// which reads the arguments (mapped in place from the node's arena or
// pulled), looks the function or actor method up in the registry, runs
// it, and encodes and stores its results. The actor instance a worker
// hosts lives here too.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/internal/receiver"
)

// PushTasks runs the tasks its owner streams and streams their answers
// (the stream's queue, steals and cancels are sdk/internal/receiver's).
func (c *Worker) PushTasks(stream pb.CoreWorker_PushTasksServer) error {
	return receiver.Serve(stream, executor{c})
}

// executor runs the tasks the receiver takes from its streams.
type executor struct{ c *Worker }

func (e executor) Execute(ctx context.Context, spec *pb.TaskSpec) *pb.TaskResult {
	before := e.c.borrows.acquired.Load()
	res := e.c.execute(ctx, spec)
	e.c.borrows.collectAfterTask(before)
	return res
}

func (e executor) Concurrent(actorID string) bool {
	h := e.c.hostedFor(actorID)
	return h != nil && h.concurrent()
}

func (e executor) CancelChildren(task ids.TaskID, force bool) { e.c.cancelChildren(task, force) }

func (e executor) TaskEnded(task ids.TaskID) { e.c.tasks.table.takeChildren(task) }

func (c *Worker) execute(ctx context.Context, spec *pb.TaskSpec) *pb.TaskResult {
	tid, err := ids.TaskFromBytes(spec.TaskId)
	if err != nil {
		return &pb.TaskResult{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_BAD_ARGUMENT, Function: spec.Function, Message: err.Error()}}
	}
	failure := func(kind pb.ErrorKind, msg, stack string) *pb.TaskResult {
		return &pb.TaskResult{Error: &pb.TaskError{Kind: kind, Function: spec.Function, Message: msg, Stack: stack, TaskId: tid.String()}}
	}
	c.markTask(spec, tid)
	c.ev.begin(spec)
	defer c.ev.end(spec)
	var f *Function
	if spec.ActorId == "" {
		if f = Lookup(spec.Function); f == nil {
			return failure(pb.ErrorKind_ERROR_FUNCTION_NOT_FOUND, fmt.Sprintf("no remote function %q is registered in this binary", spec.Function), "")
		}
	}
	args := make([]*pb.ObjectValue, len(spec.Args))
	var releases []func()
	// The arguments read in place stay pinned (and mapped) until the task
	// has decoded them; it decodes them first thing, so until it returns.
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	for i, a := range spec.Args {
		v := a.Value
		if v == nil {
			return failure(pb.ErrorKind_ERROR_BAD_ARGUMENT, fmt.Sprintf("argument %d was not resolved", i+1), "")
		}
		if v.Location != "" {
			oid, _ := ids.ObjectFromBytes(a.ObjectId)
			var release func()
			inPlace := f != nil && i < len(f.InPlace) && f.InPlace[i]
			v, release, err = c.argValue(ctx, v, oid, spec.OwnerAddress, inPlace)
			if release != nil {
				releases = append(releases, release)
			}
			if err != nil {
				kind := pb.ErrorKind_ERROR_OBJECT_LOST
				if errors.Is(err, ErrObjectNotFound) {
					kind = pb.ErrorKind_ERROR_OBJECT_NOT_FOUND
				}
				res := failure(kind, err.Error(), "")
				// The owner of the argument can rebuild it and push the
				// task again: name it.
				res.Error.ObjectId = a.ObjectId
				return res
			}
		}
		args[i] = v
	}
	if spec.ActorId != "" {
		return c.executeActor(ctx, spec, tid, args, failure)
	}
	c.fitProcs(spec.NumCpus)
	tc := c.newTaskCtx(ctx, spec, tid)
	tc.caller = spec.OwnerAddress
	c.cudaEnv(tc)
	tctx := context.WithValue(ctx, taskKey{}, tc)
	if f.Generator {
		tctx = c.withGenerator(tctx, spec, tid)
	}
	results, err, stack := invoke(tctx, f, args)
	return c.withBorrows(c.taskResult(ctx, tid, spec.OwnerAddress, results, err, stack, failure), tc)
}

// withBorrows adds to a task's result the objects of its caller that the
// task decoded from its arguments and this process still holds: the
// caller registers this process as their borrower from the result.
func (c *Worker) withBorrows(res *pb.TaskResult, tc *taskCtx) *pb.TaskResult {
	if b := c.borrows.viaResult(tc); len(b) > 0 {
		res.Borrowed, res.Borrower = b, c.address
	}
	return res
}

// argValue reads a stored argument: mapped in place (valid until release,
// which is then non-nil) or streamed into this process. Raw bytes are
// copied out of the mapping: the task owns its []byte and may write it.
// A worker never unmaps its arenas (it never closes its Worker), so the
// view may be held while the task runs.
func (c *Worker) argValue(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID, owner string, inPlace bool) (*pb.ObjectValue, func(), error) {
	view, format, release, err := c.objs.Map(ctx, v, id, owner)
	if err != nil {
		return nil, nil, err
	}
	if view != nil {
		// A ReadOnlyBytes parameter takes the view itself, pinned until the
		// task returns; a []byte gets its own copy.
		if format == pb.Format_FORMAT_RAW && !inPlace {
			data := append([]byte(nil), view...)
			release()
			return &pb.ObjectValue{Data: data, Format: format}, nil, nil
		}
		return &pb.ObjectValue{Data: view, Format: format}, release, nil
	}
	data, format, err := c.objs.Pull(ctx, v, id)
	if err != nil {
		return nil, nil, err
	}
	return &pb.ObjectValue{Data: data, Format: format}, nil, nil
}

// taskResult encodes a finished task's (or actor call's) results; owner
// owns the objects they become.
func (c *Worker) taskResult(ctx context.Context, tid ids.TaskID, owner string, results []any, err error, stack string,
	failure func(pb.ErrorKind, string, string) *pb.TaskResult) *pb.TaskResult {
	if stack != "" {
		return failure(pb.ErrorKind_ERROR_PANIC, err.Error(), stack)
	}
	if err != nil {
		if errors.Is(err, ErrBadArgument) {
			return failure(pb.ErrorKind_ERROR_BAD_ARGUMENT, err.Error(), "")
		}
		return failure(pb.ErrorKind_ERROR_APPLICATION, err.Error(), string(debug.Stack()))
	}
	res := &pb.TaskResult{Returns: make([]*pb.ObjectValue, len(results))}
	for i, r := range results {
		v, err := Encode(r)
		if err != nil {
			return failure(pb.ErrorKind_ERROR_APPLICATION, fmt.Sprintf("result %d: %v", i+1, err), "")
		}
		rid := ids.ReturnID(tid, uint32(i+1))
		v, err = c.objs.Store(ctx, rid, owner, v)
		if err != nil {
			kind := pb.ErrorKind_ERROR_APPLICATION
			if status.Code(err) == codes.Unavailable {
				// The node's store is gone (its raylet died): a system
				// failure, retried like a worker crash, not the task's own.
				kind = pb.ErrorKind_ERROR_WORKER_CRASHED
			}
			return failure(kind, fmt.Sprintf("result %d: %v", i+1, err), "")
		}
		// The result's owner borrows the refs in it before it can see it.
		c.registerValue(owner, rid, v)
		res.Returns[i] = v
	}
	runtime.KeepAlive(results)
	return res
}

// fitProcs sets GOMAXPROCS to the task's CPUs (at least 1) unless the
// user fixed it: a worker's goroutines then use what its lease holds, and
// an idle P does not spin on a busy machine (as Ray sets OMP_NUM_THREADS).
func (c *Worker) fitProcs(cpus float64) {
	if c.fixedProcs {
		return
	}
	n := max(1, int(math.Ceil(cpus)))
	if n != c.procs {
		runtime.GOMAXPROCS(n)
		c.procs = n
	}
}

// hostedActor is the actor instance a worker process hosts.
type hostedActor struct {
	id    string
	class *ActorClass
	inst  any
	// sem admits MaxConcurrency calls at once (1: one at a time, so calls
	// from every caller are serialised).
	sem chan struct{}
	// grant is the creation lease's, which its calls run under.
	grant resources.Grant
}

func (h *hostedActor) concurrent() bool { return cap(h.sem) > 1 }

// hostedFor returns the actor this worker hosts, if it is id.
func (c *Worker) hostedFor(id string) *hostedActor {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hosted != nil && c.hosted.id == id {
		return c.hosted
	}
	return nil
}

// executeActor runs an actor's constructor or one of its methods.
func (c *Worker) executeActor(ctx context.Context, spec *pb.TaskSpec, tid ids.TaskID, args []*pb.ObjectValue,
	failure func(pb.ErrorKind, string, string) *pb.TaskResult) *pb.TaskResult {
	tc := c.newTaskCtx(ctx, spec, tid)
	tctx := context.WithValue(ctx, taskKey{}, tc)
	if spec.ActorCreation {
		c.cudaEnv(tc)
		cls := LookupClass(spec.Function)
		if cls == nil {
			return failure(pb.ErrorKind_ERROR_FUNCTION_NOT_FOUND, fmt.Sprintf("no actor class %q is registered in this binary", spec.Function), "")
		}
		c.fitProcs(spec.NumCpus)
		// The constructor's context outlives its creation call: the
		// instance may keep it.
		c.markActor(spec)
		inst, err, stack := invokeCtor(context.WithValue(c.ctx, taskKey{}, tc), cls, args)
		// Nobody else sees a constructor end: the leader placed it.
		if stack != "" {
			res := failure(pb.ErrorKind_ERROR_PANIC, err.Error(), stack)
			c.ev.constructed(spec, res.Error)
			return res
		}
		if err != nil {
			res := failure(pb.ErrorKind_ERROR_APPLICATION, err.Error(), "")
			c.ev.constructed(spec, res.Error)
			return res
		}
		c.ev.constructed(spec, nil)
		c.mu.Lock()
		c.hosted = &hostedActor{id: spec.ActorId, class: cls, inst: inst, sem: make(chan struct{}, max(1, int(spec.MaxConcurrency))),
			grant: tc.info.grant()}
		c.mu.Unlock()
		return &pb.TaskResult{}
	}
	// A call's result reports its borrows (a creation's goes to no caller).
	tc.caller = spec.OwnerAddress
	h := c.hostedFor(spec.ActorId)
	if h == nil {
		return failure(pb.ErrorKind_ERROR_ACTOR_DIED, fmt.Sprintf("actor %s does not live in this worker (it restarted elsewhere)", spec.ActorId), "")
	}
	m := h.class.method(spec.Method)
	if m == nil {
		return failure(pb.ErrorKind_ERROR_FUNCTION_NOT_FOUND, fmt.Sprintf("actor class %s has no method %q in this binary", h.class.Name, spec.Method), "")
	}
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return failure(pb.ErrorKind_ERROR_WORKER_CRASHED, ctx.Err().Error(), "")
	}
	if m.Generator {
		tctx = c.withGenerator(tctx, spec, tid)
	}
	results, err, stack := invokeMethod(tctx, m, h.inst, args)
	<-h.sem
	return c.withBorrows(c.taskResult(ctx, tid, spec.OwnerAddress, results, err, stack, failure), tc)
}
