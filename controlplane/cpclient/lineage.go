package cpclient

import (
	"context"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// RecordLineage writes lineage records, updates and releases in one Raft
// write. A request without an ID gets one; the same request (and ID) is
// sent on every retry, so a write retried across a failover applies once.
// Callers that retry beyond the client's own Timeout should resend the
// same req.
func (c *Client) RecordLineage(ctx context.Context, req *pb.RecordLineageRequest) (*pb.RecordLineageResponse, error) {
	if req.RequestId == "" {
		req.RequestId = RequestID()
	}
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RecordLineageResponse, error) {
		return cl.RecordLineage(ctx, req)
	})
}

// GetLineageTask returns one task's record. Errors match
// fsm.ErrLineageNotFound, fsm.ErrLineageEvicted (both NotFound).
func (c *Client) GetLineageTask(ctx context.Context, id ids.TaskID, stale bool) (*pb.TaskRecord, error) {
	req := &pb.GetLineageTaskRequest{TaskId: id[:], Stale: stale}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.GetLineageTaskResponse, error) {
		return cl.GetLineageTask(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	return r.Record, nil
}

// GetLineage returns the records that made an object, its producer first,
// down to maxDepth levels (0: all). An object made by Put answers
// fsm.ErrMadeByPut (FailedPrecondition).
func (c *Client) GetLineage(ctx context.Context, o ids.ObjectID, maxDepth int32, stale bool) (*pb.GetLineageResponse, error) {
	req := &pb.GetLineageRequest{ObjectId: o[:], MaxDepth: maxDepth, Stale: stale}
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.GetLineageResponse, error) {
		return cl.GetLineage(ctx, req)
	})
}

// LineageStats summarises the lineage table.
func (c *Client) LineageStats(ctx context.Context, stale bool) (*pb.LineageStatsResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.LineageStatsResponse, error) {
		return cl.LineageStats(ctx, &pb.LineageStatsRequest{Stale: stale})
	})
}
