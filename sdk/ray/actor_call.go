package ray

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/internal/actorsubmit"
)

// Actor calls go through the actor submitter (sdk/internal/actorsubmit):
// one ordered stream per (caller, actor), resent to a restarted actor
// within MaxTaskRetries. This file builds calls and completes them.

// actorCall is the owner's record of one call (the submitter's Call.Data).
type actorCall struct {
	call    *actorsubmit.Call
	returns []ids.ObjectID
	deps    []int // argument indices that are refs, resolved before sending
	depKeys []objectKey
	pinned  []ids.ObjectID // owned reference arguments (refcount.go)
}

func submitActorCall(ctx context.Context, actorID string, m *actorMethod, args []argumenter) ([]objectKey, error) {
	c, err := current()
	if err != nil {
		return nil, err
	}
	if actorID == "" {
		return nil, fmt.Errorf("%w: a zero ActorHandle", ErrInvalidOption)
	}
	as, err := c.actorSubmitter()
	if err != nil {
		return nil, err
	}
	tc := c.taskOf(ctx)
	tid := ids.NewTaskID(c.jobID, tc.id, tc.counter.Add(1))
	spec := &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID, Function: m.class.name + "." + m.name,
		NumReturns: int32(m.nret), OwnerAddress: c.address,
		ActorId: actorID, Method: m.name, CallerId: c.address}
	call := &actorCall{}
	if call.deps, call.depKeys, err = encodeArgs(spec, args); err != nil {
		return nil, err
	}
	call.call = &actorsubmit.Call{Spec: spec, ID: tid, Unresolved: len(call.deps) > 0, Data: call}
	call.pinned = c.pinArgs(call.depKeys)
	runtime.KeepAlive(args)
	var keys []objectKey
	// Cancel finds the call's actor from its ref's object.
	call.returns, keys = c.newReturns(tid, m.nret, actorID)
	as.Submit(actorID, call.call)
	return keys, nil
}

// actorSubmitter returns the process's actor submitter, started (with its
// watch of the actor table) on first use.
func (c *core) actorSubmitter() (*actorsubmit.Submitter, error) {
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
			Dial: coreConns{c}.Worker,
			Watch: func(ctx context.Context, fn func(*cpb.WatchResponse) error) error {
				return cp.Watch(ctx, &cpb.WatchRequest{Kinds: []cpb.EventKind{cpb.EventKind_EVENT_ACTOR}}, fn)
			},
			Handler: actorHandler{c}, Log: c.log.Named("actors")})
	}
	return c.actorSub, nil
}

// actorHandler takes the actor submitter's reports.
type actorHandler struct{ c *core }

func (h actorHandler) Finished(call *actorsubmit.Call, res *pb.TaskResult) {
	h.c.finishCall(call.Data.(*actorCall), res)
}

func (h actorHandler) Failed(call *actorsubmit.Call, e *pb.TaskError) {
	h.c.failCall(call.Data.(*actorCall), e)
}

func (h actorHandler) Resolve(ctx context.Context, call *actorsubmit.Call) bool {
	return h.c.resolveCall(ctx, call.Data.(*actorCall))
}

func (c *core) failCall(call *actorCall, e *pb.TaskError) {
	e = &pb.TaskError{Kind: e.Kind, Message: e.Message, Function: call.call.Spec.Function}
	e.TaskId = call.call.ID.String()
	v := &pb.ObjectValue{Error: e}
	vals := make([]*pb.ObjectValue, len(call.returns))
	for i := range vals {
		vals[i] = v
	}
	c.mem.Complete(call.returns, vals)
	pinned := call.pinned
	call.pinned = nil
	c.unpinArgs(pinned)
}

// resolveCall waits for a call's reference arguments; false when one
// failed (the call is then failed).
func (c *core) resolveCall(ctx context.Context, call *actorCall) bool {
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
		if p, ok := c.producerToWait(k.id, k.owner, v); ok {
			producers = append(producers, p)
		}
	}
	// The actor consumes outputs of this owner's tasks: their lineage
	// commits first (lineage.go).
	c.waitCommitted(ctx, producers)
	return true
}

func (c *core) finishCall(call *actorCall, res *pb.TaskResult) {
	if res.Error != nil {
		c.failCall(call, res.Error)
		return
	}
	c.completeReturns(call.returns, call.call.Spec.Function, res, "the call")
	pinned := call.pinned
	call.pinned = nil
	c.unpinArgs(pinned)
}

// controlPlane returns the process's control-plane client: the driver's,
// or in a worker one made from the heads its raylet passed down.
func (c *core) controlPlane() (*cpclient.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cp != nil {
		return c.cp, nil
	}
	heads := os.Getenv(workerpool.EnvHeads)
	if heads == "" {
		return nil, fmt.Errorf("%w: no control plane address in this process", ErrNotInitialized)
	}
	cp, err := cpclient.New(cpclient.Config{Addresses: strings.Split(heads, ","), Token: c.token, Logger: c.log})
	if err != nil {
		return nil, err
	}
	c.cp, c.ownCP = cp, true
	return cp, nil
}
