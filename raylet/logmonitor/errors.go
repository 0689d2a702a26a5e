package logmonitor

import (
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
)

var (
	// ErrNoLogs is a query for a worker, task or actor of which the node
	// holds no output.
	ErrNoLogs = rpcerr.New(codes.NotFound, "LOGS_NOT_FOUND", "no logs on this node")
	// ErrBadQuery is a query naming more than one of worker, task, actor.
	ErrBadQuery = rpcerr.New(codes.InvalidArgument, "BAD_LOG_QUERY", "bad log query")
)
