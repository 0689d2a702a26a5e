package ray

import (
	"context"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/receiver"
)

// PushTasks runs the tasks its owner streams and streams their answers
// (the stream's queue, steals and cancels are sdk/internal/receiver's).
func (c *core) PushTasks(stream pb.CoreWorker_PushTasksServer) error {
	return receiver.Serve(stream, coreExecutor{c})
}

// coreExecutor runs the tasks the receiver takes from its streams.
type coreExecutor struct{ c *core }

func (e coreExecutor) Execute(ctx context.Context, spec *pb.TaskSpec) *pb.TaskResult {
	return e.c.execute(ctx, spec)
}

func (e coreExecutor) Concurrent(actorID string) bool {
	h := e.c.hostedFor(actorID)
	return h != nil && h.concurrent()
}

func (e coreExecutor) CancelChildren(task ids.TaskID, force bool) { e.c.cancelChildren(task, force) }

func (e coreExecutor) TaskEnded(task ids.TaskID) { e.c.forgetChildren(task) }
