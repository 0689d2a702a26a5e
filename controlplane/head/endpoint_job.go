package head

import (
	"context"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func (a *api) AddJob(ctx context.Context, req *pb.AddJobRequest) (*pb.AddJobResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	j := req.GetJob()
	if j == nil {
		j = &pb.JobInfo{}
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.AddJob, func() (*pb.AddJobResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdAddJob, req.RequestId, j)
		if err != nil {
			return nil, err
		}
		return &pb.AddJobResponse{Header: h.headerAt(r.Index), JobId: r.Id}, nil
	})
}

func (a *api) FinishJob(ctx context.Context, req *pb.FinishJobRequest) (*pb.FinishJobResponse, error) {
	h := a.h
	if err := checkID("job_id", req.JobId); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if req.State == pb.JobState_JOB_RUNNING {
		return nil, rpcerr.Wrapf(ErrBadRequest, "a job cannot finish in state RUNNING")
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.FinishJob, func() (*pb.FinishJobResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdFinishJob, req.RequestId, req)
		if err != nil {
			return nil, err
		}
		return &pb.FinishJobResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *api) ListJobs(ctx context.Context, req *pb.ListJobsRequest) (*pb.ListJobsResponse, error) {
	h := a.h
	if req.Stale {
		return &pb.ListJobsResponse{Header: h.header(), Jobs: h.fsm.Jobs()}, nil
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ListJobs, func() (*pb.ListJobsResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return &pb.ListJobsResponse{Header: h.header(), Jobs: h.fsm.Jobs()}, nil
	})
}
