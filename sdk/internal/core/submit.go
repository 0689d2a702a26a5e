package core

// Submitting a normal task: Submit builds its spec, creates its return
// objects (counted once for the ref) and its lineage entry, then the
// resolver (Ray's dependency resolver) waits for its reference arguments
// and the task manager hands it to the submitter (sdk/internal/submitter),
// which leases a worker and pushes it.

import (
	"context"
	"fmt"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// Arg is a task argument in untyped form: a value, or a reference to an
// object (Ref) by ID and owner.
type Arg struct {
	Ref   bool
	ID    ids.ObjectID
	Owner string
	Value *pb.ObjectValue
	// H is the ref's handle when this process made it (nil otherwise):
	// recovery finds the task that makes the object through it.
	H *Handle
}

// Submit builds a task of f, creates its return objects and queues it
// once its reference arguments are resolved. The caller keeps the refs
// behind args reachable until Submit returns (they are pinned by then).
func (c *Worker) Submit(ctx context.Context, f *Function, args []Arg, o *CallOptions) ([]ObjectKey, error) {
	if o.BackpressureSet && !f.Generator {
		return nil, fmt.Errorf("%w: GeneratorBackpressure on %s, which is not a generator", ErrInvalidOption, f.Name)
	}
	tc := c.taskOf(ctx)
	tid := ids.NewTaskID(c.jobID, tc.id, tc.counter.Add(1))
	t := newTask(&pb.TaskSpec{TaskId: tid[:], JobId: c.jobID, Function: f.Name, NumReturns: int32(f.NRet),
		OwnerAddress: c.address, NumCpus: o.Res[resources.CPU], Strategy: o.Strategy}, o.Res)
	t.retriesLeft, t.retryExceptions, t.returnReplicas = o.MaxRetries, o.RetryExceptions, o.ReturnReplicas
	refs, argKeys := encodeArgs(t.spec, args)
	if !o.RuntimeEnv.isZero() {
		env, err := c.resolveEnv(ctx, o.RuntimeEnv)
		if err != nil {
			return nil, err
		}
		env.apply(t.spec)
	}
	if pinned, borrowPins := c.pinArgs(argKeys, args); len(pinned)+len(borrowPins)+len(refs) > 0 {
		d := t.dm()
		d.pinned, d.borrowPins, d.refs, d.refKeys = pinned, borrowPins, refs, argKeys
	}
	if f.Generator {
		c.gens.open(tid, o.Backpressure, "", t)
	}
	var keys []ObjectKey
	t.returns, keys = c.newReturns(tid, f.NRet, "")
	if tc.worker {
		t.parent = tc.id
		c.tasks.table.addChild(tc.id, tid)
	}
	c.lin.recordTask(t, o, args, keys)
	c.ev.submitted(t.spec, cpb.TaskType_NORMAL_TASK, tc.id, o.Res, len(refs) > 0)
	if len(refs) == 0 {
		c.tasks.enqueue(t)
		return keys, nil
	}
	// Resolve reference arguments first (Ray's dependency resolver).
	c.resolving.Add(1)
	c.spawn(func() {
		defer c.resolving.Add(-1)
		c.resolveAndEnqueue(t)
	})
	return keys, nil
}

// resolveAndEnqueue waits for a task's reference arguments, puts their
// values in its spec and queues it; the records of the tasks that made
// stored ones commit first (recovery.go). A failed argument fails the task.
func (c *Worker) resolveAndEnqueue(t *task) {
	d := t.d()
	if len(d.refs) > 0 {
		d.argObjs = make([]*object, len(d.refs))
	}
	var producers []ids.TaskID
	for j, i := range d.refs {
		k := d.refKeys[j]
		ob := c.objectFor(k)
		select {
		case <-ob.Ready():
		case <-c.ctx.Done():
			return
		}
		if e := ob.Raw().Error; e != nil {
			c.tasks.fail(t, e)
			return
		}
		v := c.mem.Value(ob)
		// A new TaskArg, not a changed one: the retained lineage shares
		// the submitted ones.
		t.spec.Args[i] = &pb.TaskArg{ObjectId: t.spec.Args[i].ObjectId, Value: v}
		d.argObjs[j] = ob
		if p, ok := c.lin.producerToWait(k.ID, k.Owner, v); ok {
			producers = append(producers, p)
		}
	}
	c.lin.waitCommitted(c.ctx, producers)
	if len(d.refs) > 0 {
		c.ev.state(t.spec, cpb.TaskEventState_PENDING_NODE_ASSIGNMENT)
	}
	c.tasks.enqueue(t)
}

// taskQueue returns the process's task submitter, made on first use (the
// job's ID and binary are known by then); nil once the Worker closed.
func (c *Worker) taskQueue() taskQueue {
	if sub := c.submitter(); sub != nil {
		return sub
	}
	return nil
}

func (c *Worker) submitter() *submitter.Submitter {
	c.subOnce.Do(func() {
		c.sub = submitter.New(submitter.Config{JobID: c.jobID, BinarySHA: c.binarySHA, Owner: c.address,
			Home: c.rayletAddr, Conns: workerConns{c}, Handler: c.tasks, Log: c.log.Named("submitter")})
	})
	return c.sub
}

// encodeArgs fills spec's arguments: values inline, references by ID. It
// returns the indexes of the reference arguments and their objects.
func encodeArgs(spec *pb.TaskSpec, args []Arg) (refs []int, refKeys []ObjectKey) {
	spec.Args = make([]*pb.TaskArg, len(args))
	for i, a := range args {
		if a.Ref {
			spec.Args[i] = &pb.TaskArg{ObjectId: a.ID[:]}
			refs = append(refs, i)
			refKeys = append(refKeys, ObjectKey{ID: a.ID, Owner: a.Owner})
			continue
		}
		spec.Args[i] = &pb.TaskArg{Value: a.Value}
	}
	return refs, refKeys
}

// newReturns creates the n return objects of task tid, owned here (of a
// call to actor, if not "").
func (c *Worker) newReturns(tid ids.TaskID, n int, actor string) ([]ids.ObjectID, []ObjectKey) {
	returns := make([]ids.ObjectID, n)
	keys := make([]ObjectKey, n)
	for i := range n {
		returns[i] = ids.ReturnID(tid, uint32(i+1))
	}
	c.mem.NewOwned(returns, actor)
	for i, id := range returns {
		keys[i] = ObjectKey{ID: id, Owner: c.address, H: c.newHandle(id)}
	}
	return returns, keys
}

// GetOwnerStatus serves manta status: what this owner's tasks wait for.
func (c *Worker) GetOwnerStatus(context.Context, *pb.OwnerStatusRequest) (*pb.OwnerStatusReply, error) {
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
