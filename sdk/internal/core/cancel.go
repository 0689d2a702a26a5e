package core

// Cancel in the owner: a task is marked cancelled in the task manager
// (so a run between queues sees it) and then removed from the submitter
// or its worker asked to stop; an actor call is the actor submitter's to
// remove or stop. A process that does not own the object asks its owner
// over CancelTask.

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

// CancelOptions configure Cancel.
type CancelOptions struct {
	Force     bool
	Recursive bool
}

// Cancel cancels the task or actor call that makes object id (owned by
// owner): here if this process owns it, else through its owner.
func (c *Worker) Cancel(ctx context.Context, id ids.ObjectID, owner string, o CancelOptions) error {
	if owner != c.address {
		return c.CancelRemote(ctx, owner, id, o)
	}
	_, err := c.cancelObject(id, o)
	return err
}

// CancelRemote asks owner to cancel the task that makes object id.
func (c *Worker) CancelRemote(ctx context.Context, owner string, id ids.ObjectID, o CancelOptions) error {
	cc, err := c.conn(owner)
	if err != nil {
		return err
	}
	_, err = pb.NewCoreWorkerClient(cc).CancelTask(ctx, &pb.CancelTaskRequest{ObjectId: id[:], Force: o.Force, Recursive: o.Recursive})
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
func (c *Worker) CancelTask(_ context.Context, req *pb.CancelTaskRequest) (*pb.CancelTaskReply, error) {
	id, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	finished, err := c.cancelObject(id, CancelOptions{Force: req.Force, Recursive: req.Recursive})
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
func (c *Worker) cancelObject(id ids.ObjectID, o CancelOptions) (finished bool, err error) {
	ob := c.mem.Get(id)
	if ob == nil || !ob.Owned() {
		return false, fmt.Errorf("%w: object %s is not known to its owner (released)", ErrObjectNotFound, id)
	}
	if id.IsPut() {
		return false, fmt.Errorf("%w: object %s was made by Put: there is no task to cancel", ErrInvalidOption, id)
	}
	if ob.Actor() != "" {
		if o.Force {
			return false, fmt.Errorf("%w: Force cannot cancel an actor call (it would kill the actor); cancel without it", ErrInvalidOption)
		}
		if ob.IsReady() {
			return true, nil
		}
		c.cancelActorCall(ob.Actor(), id.Task())
		return false, nil
	}
	tid := id.Task()
	c.tasks.table.markCancelled(tid)
	if ob.IsReady() {
		c.tasks.table.unmarkCancelled(tid)
		c.log.Debug("cancel: the task had finished; nothing to do", zap.Stringer("task", tid))
		return true, nil
	}
	c.cancelTask(tid, o.Force, o.Recursive)
	return false, nil
}

// cancelTask cancels an owned normal task by ID (marked cancelled): the
// submitter removes it or asks its worker; a task between the two (its
// arguments resolving, or a retry on its way) sees the mark.
func (c *Worker) cancelTask(tid ids.TaskID, force, recursive bool) {
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
func (c *Worker) cancelChildren(parent ids.TaskID, force bool) {
	for _, child := range c.tasks.table.takeChildren(parent) {
		c.tasks.table.markCancelled(child)
		c.cancelTask(child, force, true)
	}
}

// cancelActorCall removes a queued call to an actor or asks the actor's
// worker to cancel it.
func (c *Worker) cancelActorCall(actorID string, tid ids.TaskID) {
	c.mu.Lock()
	as := c.actorSub
	c.mu.Unlock()
	if as != nil {
		as.Cancel(actorID, tid)
	}
}
