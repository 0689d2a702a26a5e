package core

// Actors as their owner and callers see them: creation (registered with
// the control plane, constructor arguments resolved in the background),
// lookup by name, kill, and calls. Calls go through the actor submitter
// (sdk/internal/actorsubmit): one ordered stream per (caller, actor),
// resent to a restarted actor within MaxTaskRetries; this file builds
// calls and completes them. The hosted side is in execute.go.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/internal/actorsubmit"
)

// controlPlane returns the process's control-plane client: the driver's,
// or in a worker one made from the heads its raylet passed down.
func (c *Worker) controlPlane() (*cpclient.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cp != nil {
		return c.cp, nil
	}
	heads := os.Getenv(workerpool.EnvHeads)
	if heads == "" {
		return nil, fmt.Errorf("%w: no control plane address in this process", ErrNotInitialized)
	}
	cp, err := cpclient.New(cpclient.Config{Addresses: strings.Split(heads, ","), Token: c.token, TLS: c.tls, Logger: c.log})
	if err != nil {
		return nil, err
	}
	c.cp, c.ownCP = cp, true
	return cp, nil
}

// ControlPlane is the process's control-plane client (tests read the
// actor table through it).
func (c *Worker) ControlPlane() (*cpclient.Client, error) { return c.controlPlane() }

// CreateActor registers an actor with the control plane, whose leader
// places it. Without reference arguments it is registered PENDING_CREATION
// with its arguments. With them it is registered DEPENDENCIES_UNREADY (its
// name taken, so a clash fails here) and an owned goroutine resolves the
// references and hands the arguments over, as Ray does: the caller gets the
// handle at once, and calls made meanwhile wait for the actor to be ALIVE.
func (c *Worker) CreateActor(ctx context.Context, cls *ActorClass, args []Arg, o *CallOptions) (string, error) {
	cp, err := c.controlPlane()
	if err != nil {
		return "", err
	}
	spec := &pb.TaskSpec{NumCpus: o.Res[resources.CPU]}
	refs, refKeys := encodeArgs(spec, args)
	// Never unpinned: a restarted actor reruns its constructor with these
	// arguments, for as long as the actor may restart. Pinned before this
	// returns, so the caller may drop its refs at once.
	c.pinArgs(refKeys, args)
	res := o.Res
	if !o.CPUSet {
		// As in Ray, an actor holds no CPU unless it asks for one.
		res = res.Clone()
		delete(res, resources.CPU)
	}
	maxConc := o.MaxConcurrency
	if maxConc == 0 {
		maxConc = 1
	}
	info := &cpb.ActorInfo{JobId: c.jobID, ClassName: cls.Name, Name: o.Name, Namespace: o.Namespace,
		Detached: o.Detached, MaxRestarts: int32(o.MaxRestarts), MaxTaskRetries: int32(o.MaxTaskRetries),
		MaxConcurrency: int32(maxConc), Resources: res, BinarySha256: c.binarySHA, OwnerAddress: c.address,
		Strategy: o.Strategy}
	if !o.RuntimeEnv.isZero() {
		env, err := c.resolveEnv(ctx, o.RuntimeEnv)
		if err != nil {
			return "", err
		}
		info.RuntimeEnv = &cpb.RuntimeEnv{EnvVars: env.EnvVars, WorkingDir: env.WorkingDir}
	}
	if len(refs) == 0 {
		if info.InitArgs, err = marshalInitArgs(spec); err != nil {
			return "", err
		}
	} else {
		info.State = cpb.ActorState_DEPENDENCIES_UNREADY
	}
	id, err := cp.CreateActor(ctx, info)
	if err != nil {
		return "", fmt.Errorf("ray: create actor %s: %w", cls.Name, err)
	}
	if len(refs) > 0 {
		c.spawn(func() { c.resolveActorArgs(cp, id, spec, refs, refKeys) })
	}
	return id, nil
}

// marshalInitArgs encodes a constructor's (resolved) arguments as the
// control plane keeps them: the creation task's PushTasks request.
func marshalInitArgs(spec *pb.TaskSpec) ([]byte, error) {
	return proto.Marshal(&pb.PushTasksRequest{Tasks: []*pb.TaskSpec{spec}})
}

// actorArgsReportTimeout bounds the last report of an owner that shuts
// down before its actor's constructor arguments are ready.
const actorArgsReportTimeout = 5 * time.Second

// resolveActorArgs waits for the reference arguments of a DEPENDENCIES_UNREADY
// actor's constructor and tells the control plane: with the arguments (the
// actor then is placed) or with the first failure (the actor is then DEAD,
// and calls fail with ErrActorDied naming the argument's error).
func (c *Worker) resolveActorArgs(cp *cpclient.Client, id string, spec *pb.TaskSpec, refs []int, refKeys []ObjectKey) {
	// fail makes the actor DEAD with cause "a constructor argument failed:
	// msg". When this process is shutting down its own context is gone, and
	// the report still matters: a job's actors die with the job, but a
	// detached one would wait forever. It is then bounded, as the control
	// plane may be gone too.
	fail := func(msg string) {
		ctx := c.ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), actorArgsReportTimeout)
			defer cancel()
		}
		if _, err := cp.ResolveActorDependencies(ctx, id, nil, msg); err != nil {
			c.log.Warn("could not fail an actor whose constructor arguments failed", zap.String("actor", id), zap.Error(err))
		}
	}
	var producers []ids.TaskID
	for j, i := range refs {
		k := refKeys[j]
		ob := c.objectFor(k)
		select {
		case <-ob.Ready():
		case <-c.ctx.Done():
			fail("its owner exited before they were ready")
			return
		}
		if e := ob.Raw().Error; e != nil {
			fail(TaskErrorFrom(e).Error())
			return
		}
		v := c.mem.Value(ob)
		spec.Args[i].Value = v
		if p, ok := c.lin.producerToWait(k.ID, k.Owner, v); ok {
			producers = append(producers, p)
		}
	}
	// The actor consumes outputs of this owner's tasks: their lineage
	// commits first (recovery.go), as for an actor call's arguments.
	c.lin.waitCommitted(c.ctx, producers)
	if c.ctx.Err() != nil {
		fail("its owner exited before they were ready")
		return
	}
	init, err := marshalInitArgs(spec)
	if err != nil {
		fail("the arguments could not be encoded: " + err.Error())
		return
	}
	if _, err := cp.ResolveActorDependencies(c.ctx, id, init, ""); err != nil {
		if c.ctx.Err() != nil {
			fail("its owner exited before they were handed over")
			return
		}
		// Rejected arguments (too large, say) would leave the actor
		// waiting forever: let it die with the reason instead.
		c.log.Error("could not hand over an actor's constructor arguments", zap.String("actor", id), zap.Error(err))
		fail("the arguments could not be handed over: " + err.Error())
	}
}

// GetActor returns the control plane's record of the live actor named
// name in namespace; an unknown name is ErrActorNotFound.
func (c *Worker) GetActor(ctx context.Context, name, namespace string) (*cpb.ActorInfo, error) {
	cp, err := c.controlPlane()
	if err != nil {
		return nil, err
	}
	info, err := cp.GetActor(ctx, &cpb.GetActorRequest{Name: name, Namespace: namespace})
	if err != nil {
		if errors.Is(err, fsm.ErrActorNotFound) {
			return nil, fmt.Errorf("%w: %v", ErrActorNotFound, err)
		}
		return nil, err
	}
	return info, nil
}

// KillActor kills an actor: its worker ends and calls fail with
// ErrActorDied. With noRestart false it is restarted if it has restarts
// left.
func (c *Worker) KillActor(ctx context.Context, actorID string, noRestart bool) error {
	cp, err := c.controlPlane()
	if err != nil {
		return err
	}
	if err := cp.KillActor(ctx, actorID, noRestart); err != nil {
		return err
	}
	if noRestart {
		// This process's later calls fail at once, without waiting for the
		// worker's end to come back through the watch.
		c.mu.Lock()
		as := c.actorSub
		c.mu.Unlock()
		if as != nil {
			as.Dead(actorID, &pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED, Message: fmt.Sprintf("actor %s is dead: killed by ray.Kill", actorID)})
		}
	}
	return nil
}

// actorCall is the owner's record of one call (the submitter's Call.Data).
type actorCall struct {
	call    *actorsubmit.Call
	returns []ids.ObjectID
	deps    []int // argument indices that are refs, resolved before sending
	depKeys []ObjectKey
	pinned  []ids.ObjectID // owned reference arguments (refs.go)
	borrows []ids.ObjectID // borrowed ones, and refs inside values
}

// SubmitActorCall calls method m of actor actorID and returns its
// return objects at once. Calls from one caller run in the order made.
func (c *Worker) SubmitActorCall(ctx context.Context, actorID string, m *ActorMethod, args []Arg) ([]ObjectKey, error) {
	if actorID == "" {
		return nil, fmt.Errorf("%w: a zero ActorHandle", ErrInvalidOption)
	}
	as, err := c.actorSubmitter()
	if err != nil {
		return nil, err
	}
	tc := c.taskOf(ctx)
	tid := ids.NewTaskID(c.jobID, tc.id, tc.counter.Add(1))
	spec := &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID, Function: m.Class.Name + "." + m.Name,
		NumReturns: int32(m.NRet), OwnerAddress: c.address,
		ActorId: actorID, Method: m.Name, CallerId: c.address}
	call := &actorCall{}
	call.deps, call.depKeys = encodeArgs(spec, args)
	call.call = &actorsubmit.Call{Spec: spec, ID: tid, Unresolved: len(call.deps) > 0, Data: call}
	call.pinned, call.borrows = c.pinArgs(call.depKeys, args)
	var keys []ObjectKey
	if m.Generator {
		c.gens.open(tid, 0, actorID, nil)
	}
	// Cancel finds the call's actor from its ref's object.
	call.returns, keys = c.newReturns(tid, m.NRet, actorID)
	c.ev.submitted(spec, cpb.TaskType_ACTOR_TASK, tc.id, nil, len(call.deps) > 0)
	as.Submit(actorID, call.call)
	return keys, nil
}

// actorSubmitter returns the process's actor submitter, started (with its
// watch of the actor table) on first use.
func (c *Worker) actorSubmitter() (*actorsubmit.Submitter, error) {
	cp, err := c.controlPlane()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.actorSub == nil {
		if c.ctx.Err() != nil {
			return nil, fmt.Errorf("%w: the runtime is shutting down", ErrNotInitialized)
		}
		c.actorSub = actorsubmit.New(actorsubmit.Config{
			Dial: workerConns{c}.Worker,
			Watch: func(ctx context.Context, fn func(*cpb.WatchResponse) error) error {
				return cp.Watch(ctx, &cpb.WatchRequest{Kinds: []cpb.EventKind{cpb.EventKind_EVENT_ACTOR}}, fn)
			},
			Handler: actorHandler{c}, Log: c.log.Named("actors")})
	}
	return c.actorSub, nil
}

// actorHandler takes the actor submitter's reports.
type actorHandler struct{ c *Worker }

func (h actorHandler) Finished(call *actorsubmit.Call, res *pb.TaskResult) {
	h.c.takeResultBorrows(call.ID, res)
	h.c.finishCall(call.Data.(*actorCall), res)
}

func (h actorHandler) Failed(call *actorsubmit.Call, e *pb.TaskError) {
	h.c.failCall(call.Data.(*actorCall), e)
}

func (h actorHandler) Resolve(ctx context.Context, call *actorsubmit.Call) bool {
	return h.c.resolveCall(ctx, call.Data.(*actorCall))
}

func (c *Worker) failCall(call *actorCall, e *pb.TaskError) {
	c.ev.failed(call.call.Spec, e)
	e = &pb.TaskError{Kind: e.Kind, Message: e.Message, Function: call.call.Spec.Function}
	e.TaskId = call.call.ID.String()
	v := &pb.ObjectValue{Error: e}
	vals := make([]*pb.ObjectValue, len(call.returns))
	for i := range vals {
		vals[i] = v
	}
	c.mem.Complete(call.returns, vals)
	pinned, borrowed := call.pinned, call.borrows
	call.pinned, call.borrows = nil, nil
	unpin(c.mem, pinned)
	c.unborrow(borrowed)
}

// resolveCall waits for a call's reference arguments; false when one
// failed (the call is then failed).
func (c *Worker) resolveCall(ctx context.Context, call *actorCall) bool {
	spec := call.call.Spec
	var producers []ids.TaskID
	for j, i := range call.deps {
		if spec.Args[i].Value != nil {
			continue
		}
		k := call.depKeys[j]
		ob := c.objectFor(k)
		select {
		case <-ob.Ready():
		case <-ctx.Done():
			return false
		}
		if e := ob.Raw().Error; e != nil {
			c.failCall(call, e)
			return false
		}
		v := c.mem.Value(ob)
		spec.Args[i].Value = v
		if p, ok := c.lin.producerToWait(k.ID, k.Owner, v); ok {
			producers = append(producers, p)
		}
	}
	// The actor consumes outputs of this owner's tasks: their lineage
	// commits first (recovery.go).
	c.lin.waitCommitted(ctx, producers)
	return true
}

func (c *Worker) finishCall(call *actorCall, res *pb.TaskResult) {
	if res.Error != nil {
		c.failCall(call, res.Error)
		return
	}
	c.ev.state(call.call.Spec, cpb.TaskEventState_FINISHED)
	completeReturns(c.mem, call.returns, call.call.Spec.Function, res, "the call")
	pinned, borrowed := call.pinned, call.borrows
	call.pinned, call.borrows = nil, nil
	unpin(c.mem, pinned)
	c.unborrow(borrowed)
}
