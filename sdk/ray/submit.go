package ray

import (
	"context"
	"runtime"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// task is a submitted task in its owner (Ray's TaskManager entry): what it
// returns, its retries, its arguments, its lineage, and the submitter's
// view of it (st).
type task struct {
	spec            *pb.TaskSpec
	st              *submitter.Task
	returns         []ids.ObjectID
	pinned          []ids.ObjectID // owned reference arguments (refcount.go)
	retriesLeft     int
	retryExceptions bool
	// parent is the task that submitted it, inside a worker (recursive
	// cancel); zero in a driver.
	parent ids.TaskID

	// Reference arguments: their indexes in spec.Args, their objects, and
	// the entries they were last resolved from (lineage.go).
	refs    []int
	refKeys []objectKey
	argObjs []*object
	// lin is the task's retained lineage (nil when not recorded);
	// lostRounds counts the pushes again after an argument was rebuilt.
	lin        *lineageEntry
	lostRounds int
}

// newTask makes a task of spec for the resource shape res.
func newTask(spec *pb.TaskSpec, res resources.Set) *task {
	tid, _ := ids.TaskFromBytes(spec.TaskId)
	t := &task{spec: spec}
	t.st = &submitter.Task{Spec: spec, ID: tid, Res: res, Data: t}
	return t
}

// submit builds a task, creates its return objects and queues it once its
// reference arguments are resolved.
func submit(ctx context.Context, f *function, args []argumenter, opts []CallOption) ([]objectKey, error) {
	c, err := current()
	if err != nil {
		return nil, err
	}
	o := newCallOptions(opts)
	if o.err != nil {
		return nil, o.err
	}
	tc := c.taskOf(ctx)
	tid := ids.NewTaskID(c.jobID, tc.id, tc.counter.Add(1))
	t := newTask(&pb.TaskSpec{TaskId: tid[:], JobId: c.jobID, Function: f.name, NumReturns: int32(f.nret),
		OwnerAddress: c.address, NumCpus: o.res[resources.CPU]}, o.res)
	t.retriesLeft, t.retryExceptions = o.maxRetries, o.retryExceptions
	refs, argKeys, err := encodeArgs(t.spec, args)
	if err != nil {
		return nil, err
	}
	if !o.runtimeEnv.isZero() {
		env, err := c.resolveEnv(ctx, o.runtimeEnv)
		if err != nil {
			return nil, err
		}
		env.apply(t.spec)
	}
	t.pinned = c.pinArgs(argKeys)
	runtime.KeepAlive(args)
	t.refs, t.refKeys = refs, argKeys
	var keys []objectKey
	t.returns, keys = c.newReturns(tid, f.nret, "")
	if tc.worker {
		t.parent = tc.id
		c.tasks.addChild(tc.id, tid)
	}
	c.recordTask(t, &o)
	if len(refs) == 0 {
		c.enqueue(t)
		return keys, nil
	}
	// Resolve reference arguments first (Ray's dependency resolver).
	c.wg.Add(1)
	c.resolving.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.resolving.Add(-1)
		c.resolveAndEnqueue(t)
	}()
	return keys, nil
}

// resolveAndEnqueue waits for a task's reference arguments, puts their
// values in its spec and queues it; the records of the tasks that made
// stored ones commit first (lineage.go). A failed argument fails the task.
func (c *core) resolveAndEnqueue(t *task) {
	if len(t.refs) > 0 {
		t.argObjs = make([]*object, len(t.refs))
	}
	var producers []ids.TaskID
	for j, i := range t.refs {
		k := t.refKeys[j]
		ob := c.objectFor(k)
		select {
		case <-ob.Ready():
		case <-c.ctx.Done():
			return
		}
		if e := ob.Raw().Error; e != nil {
			c.fail(t, e)
			return
		}
		v := c.mem.Value(ob)
		// A new TaskArg, not a changed one: the retained lineage shares
		// the submitted ones.
		t.spec.Args[i] = &pb.TaskArg{ObjectId: t.spec.Args[i].ObjectId, Value: v}
		t.argObjs[j] = ob
		if p, ok := c.producerToWait(k.id, k.owner, v); ok {
			producers = append(producers, p)
		}
	}
	c.waitCommitted(c.ctx, producers)
	c.enqueue(t)
}

// enqueue hands a task to the submitter, unless it was cancelled.
func (c *core) enqueue(t *task) {
	if c.tasks.isCancelled(t.st.ID) {
		c.fail(t, submitter.CancelledError(t.spec.Function, "before it was scheduled"))
		return
	}
	sub := c.submitter()
	if sub == nil {
		return // the process is shutting down: its tasks go with it
	}
	sub.Submit(t.st)
	// Cancel marks first, then asks the submitter: one that came between
	// the check above and Submit found nothing there to cancel.
	if c.tasks.isCancelled(t.st.ID) {
		sub.Cancel(t.st.ID, false, false)
	}
}

// submitter returns the process's task submitter, made on first use
// (the job's ID and binary are known by then).
func (c *core) submitter() *submitter.Submitter {
	c.subOnce.Do(func() {
		c.sub = submitter.New(submitter.Config{JobID: c.jobID, BinarySHA: c.binarySHA, Owner: c.address,
			Home: c.rayletAddr, Conns: coreConns{c}, Handler: taskHandler{c}, Log: c.log.Named("submitter")})
	})
	return c.sub
}

// coreConns gives the submitter this process's cached connections.
type coreConns struct{ c *core }

func (cc coreConns) Raylet(addr string) (pb.RayletClient, error) {
	conn, err := cc.c.conn(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewRayletClient(conn), nil
}

func (cc coreConns) Worker(addr string) (pb.CoreWorkerClient, error) {
	conn, err := cc.c.conn(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewCoreWorkerClient(conn), nil
}

// taskHandler takes the submitter's reports.
type taskHandler struct{ c *core }

func (h taskHandler) Finished(st *submitter.Task, res *pb.TaskResult, node string) {
	h.c.finishTask(st.Data.(*task), res, node)
}

func (h taskHandler) WorkerLost(st *submitter.Task, e *pb.TaskError) {
	h.c.retryOrFail(st.Data.(*task), e)
}

func (h taskHandler) Failed(st *submitter.Task, e *pb.TaskError) { h.c.fail(st.Data.(*task), e) }

// fail completes a task's returns with an error.
func (c *core) fail(t *task, e *pb.TaskError) {
	if e.Function == "" {
		e.Function = t.spec.Function
	}
	if e.TaskId == "" {
		if tid, err := ids.TaskFromBytes(t.spec.TaskId); err == nil {
			e.TaskId = tid.String()
		}
	}
	v := &pb.ObjectValue{Error: e}
	vals := make([]*pb.ObjectValue, len(t.returns))
	for i := range vals {
		vals[i] = v
	}
	c.runEnded(t)
	c.mem.Complete(t.returns, vals)
	pinned := t.pinned
	t.pinned = nil
	c.tasks.ended(t)
	c.unpinArgs(pinned)
	c.reportAttempt(t, cpb.TaskState_TASK_FAILED, "", e.Message)
}

// finishTask completes a task from its result (node ran it), or retries
// it.
func (c *core) finishTask(t *task, res *pb.TaskResult, node string) {
	if res.Error != nil {
		if res.Error.Kind == pb.ErrorKind_ERROR_TASK_CANCELLED {
			c.fail(t, res.Error) // never retried, never rebuilt
			return
		}
		if c.lostArg(t, res.Error) {
			return
		}
		if t.retryExceptions && (res.Error.Kind == pb.ErrorKind_ERROR_APPLICATION || res.Error.Kind == pb.ErrorKind_ERROR_PANIC) {
			c.retryOrFail(t, res.Error)
		} else {
			c.fail(t, res.Error)
		}
		return
	}
	// A stored return can be lost with its node: record the task before
	// anyone can consume the returns (lineage.go).
	sent := storesAny(res) && c.persist(t, node)
	if !sent {
		c.reportFinished(t, node)
	}
	c.runEnded(t)
	c.completeReturns(t.returns, t.spec.Function, res, "the task")
	pinned := t.pinned
	t.pinned = nil
	c.tasks.ended(t)
	c.unpinArgs(pinned)
}

// completeReturns completes a finished task's or call's return objects
// from its result; any it did not return fail with a bad-argument error.
func (c *core) completeReturns(returns []ids.ObjectID, function string, res *pb.TaskResult, what string) {
	vals := res.Returns
	if len(vals) < len(returns) {
		vals = append(vals[:len(vals):len(vals)], make([]*pb.ObjectValue, len(returns)-len(vals))...)
		for j := len(res.Returns); j < len(returns); j++ {
			vals[j] = &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_BAD_ARGUMENT,
				Function: function, Message: what + " returned too few values"}}
		}
	}
	c.mem.Complete(returns, vals[:len(returns)])
}

// retryOrFail runs a task again after a failed attempt while it has
// retries left (a cancelled one never).
func (c *core) retryOrFail(t *task, e *pb.TaskError) {
	if t.retriesLeft > 0 && !c.tasks.isCancelled(t.st.ID) {
		t.retriesLeft--
		t.spec.Attempt++
		c.enqueue(t)
		return
	}
	if c.tasks.isCancelled(t.st.ID) {
		e = submitter.CancelledError(t.spec.Function, "while it ran (its worker died)")
	}
	c.fail(t, e)
}

// encodeArgs fills spec's arguments: values inline, references by ID. It
// returns the indexes of the reference arguments and their objects.
func encodeArgs(spec *pb.TaskSpec, args []argumenter) (refs []int, refKeys []objectKey, err error) {
	spec.Args = make([]*pb.TaskArg, len(args))
	for i, a := range args {
		av, err := a.argument()
		if err != nil {
			return nil, nil, err
		}
		if av.ref {
			spec.Args[i] = &pb.TaskArg{ObjectId: av.id[:]}
			refs = append(refs, i)
			refKeys = append(refKeys, objectKey{id: av.id, owner: av.owner})
			continue
		}
		spec.Args[i] = &pb.TaskArg{Value: av.value}
	}
	return refs, refKeys, nil
}

// newReturns creates the n return objects of task tid, owned here (of a
// call to actor, if not "").
func (c *core) newReturns(tid ids.TaskID, n int, actor string) ([]ids.ObjectID, []objectKey) {
	returns := make([]ids.ObjectID, n)
	keys := make([]objectKey, n)
	for i := range n {
		returns[i] = ids.ReturnID(tid, uint32(i+1))
	}
	c.mem.NewOwned(returns, actor)
	for i, id := range returns {
		keys[i] = objectKey{id: id, owner: c.address, h: c.newHandle(id)}
	}
	return returns, keys
}

// GetOwnerStatus serves manta status: what this owner's tasks wait for.
func (c *core) GetOwnerStatus(context.Context, *pb.OwnerStatusRequest) (*pb.OwnerStatusReply, error) {
	r := &pb.OwnerStatusReply{Resolving: int32(c.resolving.Load())}
	sub := c.submitter() // made idle if need be; nil once the core closed
	if sub == nil {
		return r, nil
	}
	for _, st := range sub.Stats() {
		r.Shapes = append(r.Shapes, &pb.OwnerShapeStatus{Shape: st.Shape, Queued: int32(st.Queued), Pushed: int32(st.Pushed),
			Leases: int32(st.Leases), LeaseRequests: int32(st.Requests), MeanRunMs: float64(st.MeanRun) / 1e6})
	}
	return r, nil
}
