package head

import (
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
)

// Sentinel errors of a head. Unavailable ones carry a retry hint: the
// client tries another head after it.
var (
	ErrNotLeader       = rpcerr.New(codes.Unavailable, "NOT_LEADER", "this head is not the leader")
	ErrNoLeader        = rpcerr.New(codes.Unavailable, "NO_LEADER", "no leader: this head cannot reach a quorum of heads")
	ErrNotBootstrapped = rpcerr.New(codes.Unavailable, "NOT_BOOTSTRAPPED", "the cluster has not finished bootstrapping")
	ErrOutcomeUnknown  = rpcerr.New(codes.Unavailable, "OUTCOME_UNKNOWN", "leadership was lost before the write was known to commit; retry with the same request ID")
	ErrShuttingDown    = rpcerr.New(codes.Unavailable, "SHUTTING_DOWN", "this head is shutting down")
	ErrBadToken        = rpcerr.New(codes.Unauthenticated, "BAD_TOKEN", "missing or wrong cluster token")
	// ErrPermissionDenied: the token is valid but its scope is too small.
	ErrPermissionDenied = rpcerr.New(codes.PermissionDenied, "PERMISSION_DENIED", "the token's scope does not allow this call")
	// ErrTokenNotYetKnown: a follower does not know a scoped token (yet).
	ErrTokenNotYetKnown = rpcerr.New(codes.Unavailable, "TOKEN_NOT_YET_KNOWN", "this head does not know the token (yet); retry on another head")
	// ErrAuthRateLimited: this source failed to authenticate too often.
	ErrAuthRateLimited = rpcerr.New(codes.ResourceExhausted, "AUTH_RATE_LIMITED", "too many failed authentications")
	// ErrHeartbeatRateLimited: a node heartbeats far more often than a
	// raylet does; the heartbeat is dropped (the node stays alive on the
	// ones that were let through).
	ErrHeartbeatRateLimited = rpcerr.New(codes.ResourceExhausted, "HEARTBEAT_RATE_LIMITED", "too many heartbeats")
	// ErrViewBusy: the leader answers only so many whole node lists a
	// second; the caller keeps its view and asks again later.
	ErrViewBusy      = rpcerr.New(codes.ResourceExhausted, "VIEW_BUSY", "too many whole node lists asked for")
	ErrValueTooLarge = rpcerr.New(codes.InvalidArgument, "VALUE_TOO_LARGE", "value too large")
	ErrBadRequest    = rpcerr.New(codes.InvalidArgument, "BAD_REQUEST", "invalid request")
	ErrWrongCluster  = rpcerr.New(codes.FailedPrecondition, "WRONG_CLUSTER", "data dir belongs to another cluster")
	ErrDataDirInUse  = rpcerr.New(codes.FailedPrecondition, "DATA_DIR_IN_USE", "data dir in use")
	// ErrLogStoreMismatch: the data dir holds the other kind of Raft log
	// than Config.RaftLogStore names.
	ErrLogStoreMismatch = rpcerr.New(codes.FailedPrecondition, "LOG_STORE_MISMATCH", "the data dir holds another kind of Raft log")
	// ErrBadConfig: a head option has a value it cannot run with.
	ErrBadConfig = rpcerr.New(codes.InvalidArgument, "BAD_CONFIG", "invalid head configuration")
)
