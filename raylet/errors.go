package raylet

import (
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
)

var (
	// ErrClosed is returned by a raylet that is shutting down.
	ErrClosed = rpcerr.New(codes.Unavailable, "RAYLET_CLOSED", "raylet is shutting down")
	// ErrNodeDead is Run's error when the control plane has marked this node dead.
	ErrNodeDead = rpcerr.New(codes.FailedPrecondition, "RAYLET_NODE_DEAD", "this node was marked dead by the control plane")
	// ErrBadLease is a malformed lease request.
	ErrBadLease = rpcerr.New(codes.InvalidArgument, "BAD_LEASE_REQUEST", "malformed lease request")
	// ErrBadObject is a malformed object stream.
	ErrBadObject = rpcerr.New(codes.InvalidArgument, "BAD_OBJECT", "malformed object stream")
	// ErrBadChecksum is a chunk whose CRC-32C does not match its bytes.
	ErrBadChecksum = rpcerr.New(codes.InvalidArgument, "BAD_CHUNK_CHECKSUM", "object chunk fails its checksum")
	// ErrObjectBusy is a put or create of an object another client is
	// writing now; the first writer's copy will stand once sealed.
	ErrObjectBusy = rpcerr.New(codes.Unavailable, "OBJECT_BEING_WRITTEN", "object is being written by another client")
	// ErrCreationNotFound is a SealObject of no unsealed creation of that
	// client (never created, already sealed, or aborted when it died).
	ErrCreationNotFound = rpcerr.New(codes.NotFound, "OBJECT_CREATION_NOT_FOUND", "no such unsealed object")
	// ErrJobEnded is a lease request of a job that has ended.
	ErrJobEnded = rpcerr.New(codes.FailedPrecondition, "JOB_ENDED", "the job has ended")
	// ErrWorkerStart is a lease that failed because no worker could start.
	ErrWorkerStart = rpcerr.New(codes.Internal, "WORKER_START_FAILED", "could not start a worker")
	// ErrRuntimeEnvSetup is a lease whose runtime env could not be set up
	// on this node (its working dir could not be fetched or unpacked): the
	// tasks that need it fail with the reason instead of waiting.
	ErrRuntimeEnvSetup = rpcerr.New(codes.FailedPrecondition, "RUNTIME_ENV_SETUP_FAILED", "runtime env setup failed")
	// ErrUnschedulable is a lease request its scheduling strategy forbids
	// anywhere: a hard node affinity to a dead node or one that can never
	// fit it, a placement group that was removed, or a request larger
	// than its bundle. Its tasks fail with the reason.
	ErrUnschedulable = rpcerr.New(codes.FailedPrecondition, "UNSCHEDULABLE", "the scheduling strategy cannot be met")
	// ErrBundleResources is a bundle prepare this node has not the free
	// resources for.
	ErrBundleResources = rpcerr.New(codes.ResourceExhausted, "BUNDLE_RESOURCES", "not enough free resources for the bundle")
)
