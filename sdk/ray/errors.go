package ray

import "github.com/manta-ray/manta/sdk/internal/core"

// Sentinel errors; errors.Is works on what Get returns. They are the
// runtime's (sdk/internal/core), so the same values.
var (
	// ErrFunctionNotFound: the worker's binary has no function of that name.
	ErrFunctionNotFound = core.ErrFunctionNotFound
	// ErrWorkerCrashed: the worker died while running the task, on every
	// attempt allowed.
	ErrWorkerCrashed = core.ErrWorkerCrashed
	// ErrBadArgument: an argument could not be decoded as the parameter's type.
	ErrBadArgument = core.ErrBadArgument
	// ErrTaskPanicked: the remote function panicked.
	ErrTaskPanicked = core.ErrTaskPanicked
	// ErrObjectLost: no copy of the object is left.
	ErrObjectLost = core.ErrObjectLost
	// ErrObjectNotFound: the object's owner does not have it: every
	// reference to it was released (ObjectRef.Release, or garbage
	// collected), or it never existed.
	ErrObjectNotFound = core.ErrObjectNotFound
	// ErrNotInitialized: Init has not been called (or Shutdown has).
	ErrNotInitialized = core.ErrNotInitialized
	// ErrInvalidOption: a negative or malformed option (resources, retries).
	ErrInvalidOption = core.ErrInvalidOption
	// ErrNoCluster: Address("auto") found no running cluster, neither
	// in MANTA_ADDRESS nor in the current-cluster file.
	ErrNoCluster = core.ErrNoCluster
	// ErrActorDied: the actor is dead (or died during the call and the call
	// may not be retried); the message says why.
	ErrActorDied = core.ErrActorDied
	// ErrActorNotFound: no live actor of that name.
	ErrActorNotFound = core.ErrActorNotFound
	// ErrTaskCancelled: ray.Cancel stopped the task (or actor call) before
	// it finished.
	ErrTaskCancelled = core.ErrTaskCancelled
	// ErrRuntimeEnvSetup: the runtime env a task or actor asked for could
	// not be set up on the node that would run it (its working dir could
	// not be fetched or unpacked); the error says why.
	ErrRuntimeEnvSetup = core.ErrRuntimeEnvSetup
	// ErrOwnerDied: the object's owner (the process that made the ref: the
	// driver or worker that submitted the task or Put the value) died or
	// cannot be reached, and with it what the object was. As Ray's
	// OwnerDiedError.
	ErrOwnerDied = core.ErrOwnerDied
	// ErrTaskUnschedulable: the task's scheduling strategy can never be
	// met: a hard NodeAffinity to a dead node (or one too small for it),
	// or its placement group was removed. The error says which.
	ErrTaskUnschedulable = core.ErrTaskUnschedulable
)

// TaskError is a remote task's failure: its function, message and, for an
// error or panic in user code, the remote stack (fields Function, TaskID,
// Message, Stack). It unwraps to the sentinel of its kind (ErrTaskPanicked,
// ErrWorkerCrashed, ...) and, for an application error, to nothing more:
// the remote error's type does not cross the wire, its message does.
// IsPanic says whether the task panicked.
type TaskError = core.TaskError
