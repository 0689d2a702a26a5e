package ray

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// hostedActor is the actor instance a worker process hosts.
type hostedActor struct {
	id    string
	class *actorClass
	inst  any
	// sem admits MaxConcurrency calls at once (1: one at a time, so calls
	// from every caller are serialised).
	sem chan struct{}
}

func (h *hostedActor) concurrent() bool { return cap(h.sem) > 1 }

// hostedFor returns the actor this worker hosts, if it is id.
func (c *core) hostedFor(id string) *hostedActor {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hosted != nil && c.hosted.id == id {
		return c.hosted
	}
	return nil
}

// executeActor runs an actor's constructor or one of its methods.
func (c *core) executeActor(ctx context.Context, spec *pb.TaskSpec, tid ids.TaskID, args []*pb.ObjectValue,
	failure func(pb.ErrorKind, string, string) *pb.TaskResult) *pb.TaskResult {
	tc := &taskCtx{id: tid, worker: true}
	tctx := context.WithValue(ctx, taskKey{}, tc)
	if spec.ActorCreation {
		cls := lookupClass(spec.Function)
		if cls == nil {
			return failure(pb.ErrorKind_ERROR_FUNCTION_NOT_FOUND, fmt.Sprintf("no actor class %q is registered in this binary", spec.Function), "")
		}
		c.fitProcs(spec.NumCpus)
		// The constructor's context outlives its creation call: the
		// instance may keep it.
		inst, err, stack := invokeCtor(context.WithValue(c.ctx, taskKey{}, tc), cls, args)
		if stack != "" {
			return failure(pb.ErrorKind_ERROR_PANIC, err.Error(), stack)
		}
		if err != nil {
			return failure(pb.ErrorKind_ERROR_APPLICATION, err.Error(), "")
		}
		c.mu.Lock()
		c.hosted = &hostedActor{id: spec.ActorId, class: cls, inst: inst, sem: make(chan struct{}, max(1, int(spec.MaxConcurrency)))}
		c.mu.Unlock()
		return &pb.TaskResult{}
	}
	h := c.hostedFor(spec.ActorId)
	if h == nil {
		return failure(pb.ErrorKind_ERROR_ACTOR_DIED, fmt.Sprintf("actor %s does not live in this worker (it restarted elsewhere)", spec.ActorId), "")
	}
	m := h.class.methods[spec.Method]
	if m == nil {
		return failure(pb.ErrorKind_ERROR_FUNCTION_NOT_FOUND, fmt.Sprintf("actor class %s has no method %q in this binary", h.class.name, spec.Method), "")
	}
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return failure(pb.ErrorKind_ERROR_WORKER_CRASHED, ctx.Err().Error(), "")
	}
	results, err, stack := invokeMethod(tctx, m, h.inst, args)
	<-h.sem
	return c.taskResult(ctx, tid, spec.OwnerAddress, results, err, stack, failure)
}

func invokeCtor(ctx context.Context, cls *actorClass, args []*pb.ObjectValue) (inst any, err error, stack string) {
	defer func() {
		if p := recover(); p != nil {
			err, stack = fmt.Errorf("%v", p), string(debug.Stack())
		}
	}()
	inst, err = cls.construct(ctx, args)
	return inst, err, ""
}

func invokeMethod(ctx context.Context, m *actorMethod, inst any, args []*pb.ObjectValue) (results []any, err error, stack string) {
	defer func() {
		if p := recover(); p != nil {
			err, stack = fmt.Errorf("%v", p), string(debug.Stack())
		}
	}()
	results, err = m.call(ctx, inst, args)
	return results, err, ""
}
