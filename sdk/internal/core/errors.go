package core

// The errors a runtime call or a task's Get can return: sentinels that
// errors.Is matches (sdk/ray re-exports them), and TaskError, a remote
// task's failure carried as pb.TaskError on the wire.

import (
	"errors"
	"fmt"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/objclient"
)

// Sentinel errors; errors.Is works on what Get returns.
var (
	// ErrFunctionNotFound: the worker's binary has no function of that name.
	ErrFunctionNotFound = errors.New("ray: remote function not found")
	// ErrWorkerCrashed: the worker died while running the task, on every
	// attempt allowed.
	ErrWorkerCrashed = errors.New("ray: worker crashed while running the task")
	// ErrBadArgument: an argument could not be decoded as the parameter's type.
	ErrBadArgument = errors.New("ray: argument of the wrong type")
	// ErrTaskPanicked: the remote function panicked.
	ErrTaskPanicked = errors.New("ray: remote function panicked")
	// ErrObjectLost: no copy of the object is left.
	ErrObjectLost = objclient.ErrObjectLost
	// ErrObjectNotFound: the object's owner does not have it: every
	// reference to it was released (ObjectRef.Release, or garbage
	// collected), or it never existed.
	ErrObjectNotFound = errors.New("ray: object not found")
	// ErrNotInitialized: Init has not been called (or Shutdown has).
	ErrNotInitialized = errors.New("ray: not initialized; call ray.Init first")
	// ErrInvalidOption: a negative or malformed option (resources, retries).
	ErrInvalidOption = errors.New("ray: invalid option")
	// ErrNoCluster: Address("auto") found no running cluster (lookup.go).
	ErrNoCluster = errors.New("ray: no running cluster found")
	// ErrActorDied: the actor is dead (or died during the call and the call
	// may not be retried); the message says why.
	ErrActorDied = errors.New("ray: actor died")
	// ErrActorNotFound: no live actor of that name.
	ErrActorNotFound = errors.New("ray: actor not found")
	// ErrTaskCancelled: ray.Cancel stopped the task (or actor call) before
	// it finished.
	ErrTaskCancelled = errors.New("ray: task cancelled")
	// ErrRuntimeEnvSetup: the runtime env a task or actor asked for could
	// not be set up on the node that would run it (its working dir could
	// not be fetched or unpacked); the error says why.
	ErrRuntimeEnvSetup = errors.New("ray: runtime env setup failed")
	// ErrTaskUnschedulable: the task's scheduling strategy can never be
	// met (a hard node affinity to a dead node, a removed placement group).
	ErrTaskUnschedulable = errors.New("ray: task unschedulable")
)

// TaskError is a remote task's failure: its function, message and, for an
// error or panic in user code, the remote stack. It unwraps to the sentinel
// of its kind (ErrTaskPanicked, ErrWorkerCrashed, ...) and, for an
// application error, to nothing more: the remote error's type does not
// cross the wire, its message does.
type TaskError struct {
	Function string
	TaskID   string
	Message  string
	Stack    string
	kind     pb.ErrorKind
}

func (e *TaskError) Error() string {
	switch e.kind {
	case pb.ErrorKind_ERROR_PANIC:
		return fmt.Sprintf("task %s panicked: %s", e.Function, e.Message)
	case pb.ErrorKind_ERROR_APPLICATION:
		return fmt.Sprintf("task %s failed: %s", e.Function, e.Message)
	default:
		return fmt.Sprintf("task %s: %s", e.Function, e.Message)
	}
}

// Unwrap returns the kind's sentinel.
func (e *TaskError) Unwrap() error {
	switch e.kind {
	case pb.ErrorKind_ERROR_PANIC:
		return ErrTaskPanicked
	case pb.ErrorKind_ERROR_FUNCTION_NOT_FOUND:
		return ErrFunctionNotFound
	case pb.ErrorKind_ERROR_BAD_ARGUMENT:
		return ErrBadArgument
	case pb.ErrorKind_ERROR_WORKER_CRASHED:
		return ErrWorkerCrashed
	case pb.ErrorKind_ERROR_OBJECT_LOST:
		return ErrObjectLost
	case pb.ErrorKind_ERROR_OBJECT_NOT_FOUND:
		return ErrObjectNotFound
	case pb.ErrorKind_ERROR_ACTOR_DIED:
		return ErrActorDied
	case pb.ErrorKind_ERROR_TASK_CANCELLED:
		return ErrTaskCancelled
	case pb.ErrorKind_ERROR_RUNTIME_ENV_SETUP:
		return ErrRuntimeEnvSetup
	case pb.ErrorKind_ERROR_OWNER_DIED:
		return ErrOwnerDied
	case pb.ErrorKind_ERROR_UNSCHEDULABLE:
		return ErrTaskUnschedulable
	}
	return nil
}

// IsPanic says whether the task panicked.
func (e *TaskError) IsPanic() bool { return e.kind == pb.ErrorKind_ERROR_PANIC }

// TaskErrorFrom is the error Get returns for a failed object.
func TaskErrorFrom(p *pb.TaskError) error {
	if p.Kind == pb.ErrorKind_ERROR_INFEASIBLE || p.Kind == pb.ErrorKind_ERROR_NONE {
		return fmt.Errorf("%w: %s", ErrInvalidOption, p.Message)
	}
	return &TaskError{Function: p.Function, TaskID: p.TaskId, Message: p.Message, Stack: p.Stack, kind: p.Kind}
}

// lostError is an ErrObjectLost for object id, for Get and task errors.
func lostError(id ids.ObjectID, why string) error {
	return fmt.Errorf("%w: object %s %s", ErrObjectLost, id, why)
}

// notFoundValue stands for an object its owner does not have (released).
func notFoundValue(id ids.ObjectID) *pb.ObjectValue {
	return &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_NOT_FOUND,
		Message: fmt.Sprintf("object %s is not known to its owner (released)", id)}}
}

func lostValue(id ids.ObjectID, why string) *pb.ObjectValue {
	return &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: fmt.Sprintf("object %s: %s", id, why)}}
}
