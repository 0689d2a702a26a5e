package head

import (
	"context"
	"math"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Bounds on one RecordLineage request, so one owner's batch cannot make a
// Raft entry that followers choke on.
const (
	maxLineageItems   = 100_000
	maxLineageReturns = 1 << 16
)

func (a *api) RecordLineage(ctx context.Context, req *pb.RecordLineageRequest) (*pb.RecordLineageResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if err := checkLineageWrite(req); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.RecordLineage, func() (*pb.RecordLineageResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdLineage, req.RequestId, &pb.LineageCommand{
			Records: req.Records, Updates: req.Updates,
			ReleasedObjectIds: req.ReleasedObjectIds, ReleasedTaskIds: req.ReleasedTaskIds,
			MaxBytes: h.cfg.MaxLineageBytes, MaxRecords: h.cfg.MaxLineageRecords,
		})
		if err != nil {
			return nil, err
		}
		return &pb.RecordLineageResponse{Header: h.headerAt(r.Index), Recorded: r.Count}, nil
	})
}

func checkLineageWrite(req *pb.RecordLineageRequest) error {
	n := len(req.Records) + len(req.Updates) + len(req.ReleasedObjectIds) + len(req.ReleasedTaskIds)
	if n == 0 {
		return rpcerr.Wrapf(ErrBadRequest, "nothing to record")
	}
	if n > maxLineageItems {
		return rpcerr.Wrapf(ErrBadRequest, "%d items in one lineage write; at most %d", n, maxLineageItems)
	}
	for i, r := range req.Records {
		if _, err := ids.TaskFromBytes(r.TaskId); err != nil {
			return rpcerr.Wrapf(ErrBadRequest, "records[%d].task_id: %v", i, err)
		}
		if err := checkID("records.job_id", r.JobId); err != nil {
			return err
		}
		if r.Function == "" || len(r.Function) > maxKeyLen {
			return rpcerr.Wrapf(ErrBadRequest, "records[%d].function must be 1..%d bytes", i, maxKeyLen)
		}
		if r.NumReturns < 0 || r.NumReturns > maxLineageReturns || r.MaxRetries < -1 {
			return rpcerr.Wrapf(ErrBadRequest, "records[%d]: num_returns must be 0..%d, max_retries >= -1", i, maxLineageReturns)
		}
		if _, ok := pb.TaskState_name[int32(r.State)]; !ok {
			return rpcerr.Wrapf(ErrBadRequest, "records[%d].state %d is unknown", i, r.State)
		}
		if err := checkResources("records.resources", r.Resources); err != nil {
			return err
		}
		for j, arg := range r.Args {
			if len(arg.ObjectId) == 0 {
				continue
			}
			if _, err := ids.ObjectFromBytes(arg.ObjectId); err != nil {
				return rpcerr.Wrapf(ErrBadRequest, "records[%d].args[%d].object_id: %v", i, j, err)
			}
		}
	}
	for i, u := range req.Updates {
		if _, err := ids.TaskFromBytes(u.TaskId); err != nil {
			return rpcerr.Wrapf(ErrBadRequest, "updates[%d].task_id: %v", i, err)
		}
		if _, ok := pb.TaskState_name[int32(u.State)]; !ok || u.Attempt < 0 || u.Attempt == math.MaxInt32 {
			return rpcerr.Wrapf(ErrBadRequest, "updates[%d]: unknown state %d or bad attempt %d", i, u.State, u.Attempt)
		}
	}
	for i, b := range req.ReleasedObjectIds {
		if _, err := ids.ObjectFromBytes(b); err != nil {
			return rpcerr.Wrapf(ErrBadRequest, "released_object_ids[%d]: %v", i, err)
		}
	}
	for i, b := range req.ReleasedTaskIds {
		if _, err := ids.TaskFromBytes(b); err != nil {
			return rpcerr.Wrapf(ErrBadRequest, "released_task_ids[%d]: %v", i, err)
		}
	}
	return nil
}

func (a *api) GetLineageTask(ctx context.Context, req *pb.GetLineageTaskRequest) (*pb.GetLineageTaskResponse, error) {
	h := a.h
	id, err := ids.TaskFromBytes(req.TaskId)
	if err != nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "task_id: %v", err)
	}
	read := func() (*pb.GetLineageTaskResponse, error) {
		r, err := h.fsm.LineageTask(id)
		if err != nil {
			return nil, err
		}
		return &pb.GetLineageTaskResponse{Header: h.header(), Record: r}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.GetLineageTask, func() (*pb.GetLineageTaskResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

// GetLineage answers FailedPrecondition (fsm.ErrMadeByPut) for an object
// made by Put: it exists but has no lineage, which is not "not found".
func (a *api) GetLineage(ctx context.Context, req *pb.GetLineageRequest) (*pb.GetLineageResponse, error) {
	h := a.h
	o, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "object_id: %v", err)
	}
	if req.MaxDepth < 0 {
		return nil, rpcerr.Wrapf(ErrBadRequest, "max_depth must be >= 0")
	}
	read := func() (*pb.GetLineageResponse, error) {
		g, err := h.fsm.Lineage(o, int(req.MaxDepth))
		if err != nil {
			return nil, err
		}
		resp := &pb.GetLineageResponse{Header: h.header(), Records: g.Records}
		for _, id := range g.Evicted {
			resp.EvictedTaskIds = append(resp.EvictedTaskIds, append([]byte(nil), id[:]...))
		}
		for _, id := range g.Missing {
			resp.MissingTaskIds = append(resp.MissingTaskIds, append([]byte(nil), id[:]...))
		}
		return resp, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.GetLineage, func() (*pb.GetLineageResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

func (a *api) LineageStats(ctx context.Context, req *pb.LineageStatsRequest) (*pb.LineageStatsResponse, error) {
	h := a.h
	read := func() (*pb.LineageStatsResponse, error) {
		s := h.fsm.LineageStats()
		s.Header = h.header()
		return s, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.LineageStats, func() (*pb.LineageStatsResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}
