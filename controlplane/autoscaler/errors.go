package autoscaler

import (
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
)

var (
	// ErrBadConfig: the autoscaler config is invalid; the head refuses to start.
	ErrBadConfig = rpcerr.New(codes.InvalidArgument, "BAD_AUTOSCALER_CONFIG", "invalid autoscaler config")
	// ErrDisabled: no autoscaler runs on the leader.
	ErrDisabled = rpcerr.New(codes.FailedPrecondition, "AUTOSCALER_DISABLED", "no autoscaler is configured on the leader")
)
