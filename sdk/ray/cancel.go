package ray

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// CancelOption configures Cancel.
type CancelOption func(*cancelOptions)

type cancelOptions struct {
	force     bool
	recursive bool
}

// Force kills the worker process running the task (the task cannot
// ignore it). Not for actor calls: the actor would die with its state.
func Force() CancelOption { return func(o *cancelOptions) { o.force = true } }

// Recursive says whether the tasks the cancelled task submitted are
// cancelled too (default true, as in Ray).
func Recursive(on bool) CancelOption { return func(o *cancelOptions) { o.recursive = on } }

// Cancel cancels the task (or actor call) that makes ref. A task still
// queued is removed and never runs; a running one has its context
// cancelled (Go code sees ctx.Done()), or with Force its worker process is
// killed. Either way Get of its results returns ErrTaskCancelled; a
// cancelled task is neither retried nor rebuilt from lineage. A queued
// actor call is removed and a running one's context cancelled; the actor
// lives on. Cancelling a task that already finished does nothing and
// returns nil (its value stays). Cancel works from any process holding
// the ref: it reaches the ref's owner.
func Cancel[T any](ctx context.Context, ref ObjectRef[T], opts ...CancelOption) error {
	o := cancelOptions{recursive: true}
	for _, f := range opts {
		f(&o)
	}
	if ref.err != nil {
		return ref.err
	}
	if ref.h != nil && ref.h.released.Load() {
		return fmt.Errorf("%w: object %s was released", ErrObjectNotFound, ref.id)
	}
	c, err := current()
	if err != nil {
		return err
	}
	if ref.owner != c.address {
		return c.cancelRemote(ctx, ref.owner, ref.id, o)
	}
	_, err = c.cancelObject(ref.id, o)
	return err
}

// cancelRemote asks owner to cancel the task that makes object id.
func (c *core) cancelRemote(ctx context.Context, owner string, id ids.ObjectID, o cancelOptions) error {
	cc, err := c.conn(owner)
	if err != nil {
		return err
	}
	_, err = pb.NewCoreWorkerClient(cc).CancelTask(ctx, &pb.CancelTaskRequest{ObjectId: id[:], Force: o.force, Recursive: o.recursive})
	// The owner's message starts with the sentinel's own text.
	msg := func(sentinel error) string {
		return strings.TrimPrefix(status.Convert(err).Message(), sentinel.Error()+": ")
	}
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrObjectNotFound, msg(ErrObjectNotFound))
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s", ErrInvalidOption, msg(ErrInvalidOption))
	}
	return fmt.Errorf("ray: cancel through the owner %s: %w", owner, err)
}

// CancelTask serves Cancel for a process that holds a ref this one owns.
func (c *core) CancelTask(_ context.Context, req *pb.CancelTaskRequest) (*pb.CancelTaskReply, error) {
	id, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	finished, err := c.cancelObject(id, cancelOptions{force: req.Force, recursive: req.Recursive})
	switch {
	case err == nil:
		return &pb.CancelTaskReply{Finished: finished}, nil
	case errors.Is(err, ErrObjectNotFound):
		return nil, status.Error(codes.NotFound, err.Error())
	default:
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
}

// cancelObject cancels the owned task or actor call that makes object id; it
// reports whether that had finished already.
func (c *core) cancelObject(id ids.ObjectID, o cancelOptions) (finished bool, err error) {
	ob := c.mem.Get(id)
	if ob == nil || !ob.Owned() {
		return false, fmt.Errorf("%w: object %s is not known to its owner (released)", ErrObjectNotFound, id)
	}
	if id.IsPut() {
		return false, fmt.Errorf("%w: object %s was made by Put: there is no task to cancel", ErrInvalidOption, id)
	}
	if ob.Actor() != "" {
		if o.force {
			return false, fmt.Errorf("%w: Force cannot cancel an actor call (it would kill the actor); cancel without it", ErrInvalidOption)
		}
		if ob.IsReady() {
			return true, nil
		}
		return false, c.cancelActorCall(ob.Actor(), id.Task())
	}
	tid := id.Task()
	c.tasks.markCancelled(tid)
	if ob.IsReady() {
		c.tasks.unmarkCancelled(tid)
		c.log.Debug("cancel: the task had finished; nothing to do", zap.Stringer("task", tid))
		return true, nil
	}
	c.cancelTask(tid, o.force, o.recursive)
	return false, nil
}

// cancelTask cancels an owned normal task by ID (marked cancelled): the
// submitter removes it or asks its worker; a task between the two (its
// arguments resolving, or a retry on its way) sees the mark.
func (c *core) cancelTask(tid ids.TaskID, force, recursive bool) {
	sub := c.submitter()
	if sub == nil {
		return // shutting down
	}
	switch sub.Cancel(tid, force, recursive) {
	case submitter.Removed:
		c.log.Debug("cancel: removed a queued task", zap.Stringer("task", tid))
	case submitter.Asked:
		c.log.Debug("cancel: asked the worker", zap.Stringer("task", tid))
	}
	if recursive {
		// Tasks it submitted from this process (a rebuild's, or a task
		// whose worker is this process).
		c.cancelChildren(tid, force)
	}
}

// cancelChildren cancels the unfinished tasks that running task parent
// submitted from this process, and theirs.
func (c *core) cancelChildren(parent ids.TaskID, force bool) {
	for _, child := range c.tasks.takeChildren(parent) {
		c.tasks.markCancelled(child)
		c.cancelTask(child, force, true)
	}
}

// forgetChildren drops the record of what a task submitted once it
// returned.
func (c *core) forgetChildren(parent ids.TaskID) { c.tasks.takeChildren(parent) }

// cancelActorCall removes a queued call to an actor or asks the actor's
// worker to cancel it.
func (c *core) cancelActorCall(actorID string, tid ids.TaskID) error {
	c.mu.Lock()
	as := c.actorSub
	c.mu.Unlock()
	if as != nil {
		as.Cancel(actorID, tid)
	}
	return nil
}
