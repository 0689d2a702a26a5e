package fsm

import (
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
)

// Sentinel errors of the control store. They travel to clients inside
// command results and gRPC statuses (internal/rpcerr).
var (
	ErrKeyNotFound  = rpcerr.New(codes.NotFound, "KEY_NOT_FOUND", "key not found")
	ErrNodeNotFound = rpcerr.New(codes.NotFound, "NODE_NOT_FOUND", "node not found")
	ErrNodeDead     = rpcerr.New(codes.FailedPrecondition, "NODE_DEAD", "node is marked dead")
	ErrJobNotFound  = rpcerr.New(codes.NotFound, "JOB_NOT_FOUND", "job not found")
	// ErrSubmissionExists: a submission ID already names another job spec.
	ErrSubmissionExists = rpcerr.New(codes.AlreadyExists, "SUBMISSION_EXISTS", "submission ID already used by another job")
	// ErrJobNotEnded: only an ended job can be deleted.
	ErrJobNotEnded    = rpcerr.New(codes.FailedPrecondition, "JOB_NOT_ENDED", "job has not ended")
	ErrHeadNotFound   = rpcerr.New(codes.NotFound, "HEAD_NOT_FOUND", "head not found")
	ErrBadCommand     = rpcerr.New(codes.InvalidArgument, "BAD_COMMAND", "malformed command")
	ErrClusterExists  = rpcerr.New(codes.FailedPrecondition, "CLUSTER_EXISTS", "cluster identity already set")
	ErrActorNotFound  = rpcerr.New(codes.NotFound, "ACTOR_NOT_FOUND", "actor not found")
	ErrActorExists    = rpcerr.New(codes.AlreadyExists, "ACTOR_EXISTS", "actor ID already registered")
	ErrActorNameTaken = rpcerr.New(codes.AlreadyExists, "ACTOR_NAME_TAKEN", "actor name already taken in this namespace")
	// ErrLineageNotFound: the task is not recorded (never, or released).
	ErrLineageNotFound = rpcerr.New(codes.NotFound, "LINEAGE_NOT_FOUND", "no lineage recorded for the task")
	// ErrLineageEvicted: the task was recorded but the store's bound
	// dropped it; its outputs can no longer be rebuilt.
	ErrLineageEvicted = rpcerr.New(codes.NotFound, "LINEAGE_EVICTED", "lineage evicted by the store's bound")
	// ErrMadeByPut: Put objects have no lineage (they cannot be rebuilt).
	ErrMadeByPut = rpcerr.New(codes.FailedPrecondition, "MADE_BY_PUT", "object was made by Put and has no lineage")

	ErrPlacementGroupNotFound  = rpcerr.New(codes.NotFound, "PLACEMENT_GROUP_NOT_FOUND", "placement group not found")
	ErrPlacementGroupExists    = rpcerr.New(codes.AlreadyExists, "PLACEMENT_GROUP_EXISTS", "placement group ID already registered")
	ErrPlacementGroupNameTaken = rpcerr.New(codes.AlreadyExists, "PLACEMENT_GROUP_NAME_TAKEN", "placement group name already taken in this namespace")
	// ErrTokenNotFound: no scoped token has that ID (never, or revoked).
	ErrTokenNotFound = rpcerr.New(codes.NotFound, "TOKEN_NOT_FOUND", "token not found")
	// ErrTokenExists: a token ID is taken (the leader drew it twice).
	ErrTokenExists = rpcerr.New(codes.AlreadyExists, "TOKEN_EXISTS", "token ID already used")
)

// Autoscaler errors.
var (
	// ErrInstanceExists: a launch reuses an instance ID (the leader drew it twice).
	ErrInstanceExists = rpcerr.New(codes.AlreadyExists, "INSTANCE_EXISTS", "autoscaler instance ID already used")
	// ErrInstanceNotFound: no autoscaler instance has that ID.
	ErrInstanceNotFound = rpcerr.New(codes.NotFound, "INSTANCE_NOT_FOUND", "autoscaler instance not found")
)

// Serve errors.
var (
	// ErrServeAppNotFound: no Serve application has that name.
	ErrServeAppNotFound = rpcerr.New(codes.NotFound, "SERVE_APP_NOT_FOUND", "serve application not found")
	// ErrServeRouteTaken: another application serves that route prefix.
	ErrServeRouteTaken = rpcerr.New(codes.AlreadyExists, "SERVE_ROUTE_TAKEN", "route prefix served by another application")
)
