package head

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/pkgstore"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func (a *api) CreateActor(ctx context.Context, req *pb.CreateActorRequest) (*pb.CreateActorResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	spec := req.GetActor()
	if spec == nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "actor is required")
	}
	if err := checkID("class_name", spec.ClassName); err != nil {
		return nil, err
	}
	if err := checkID("job_id", spec.JobId); err != nil {
		return nil, err
	}
	if len(spec.Name) > maxIDLen || len(spec.Namespace) > maxIDLen {
		return nil, rpcerr.Wrapf(ErrBadRequest, "actor name and namespace are at most %d bytes", maxIDLen)
	}
	if err := checkResources("actor", spec.Resources); err != nil {
		return nil, err
	}
	if err := CheckEnvVars(spec.GetRuntimeEnv().GetEnvVars()); err != nil {
		return nil, err
	}
	if wd := spec.GetRuntimeEnv().GetWorkingDir(); wd != "" {
		if _, err := pkgstore.ParseURI(wd); err != nil {
			return nil, rpcerr.Wrapf(ErrBadRequest, "actor: %v", err)
		}
	}
	if err := h.checkStrategy(spec.Strategy); err != nil {
		return nil, err
	}
	if spec.MaxRestarts < -1 || spec.MaxTaskRetries < -1 || spec.MaxConcurrency < 0 {
		return nil, rpcerr.Wrapf(ErrBadRequest, "max_restarts and max_task_retries must be >= -1, max_concurrency >= 0")
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.CreateActor, func() (*pb.CreateActorResponse, error) {
		// The leader stamps the ID; a retry with the same request ID gets
		// the first answer (and ID) back from the duplicate table.
		s := proto.Clone(spec).(*pb.ActorInfo)
		s.ActorId = auth.RandomHex(8)
		r, err := h.applier.Apply(ctx, fsm.CmdRegisterActor, req.RequestId, s)
		if err != nil {
			return nil, err
		}
		return &pb.CreateActorResponse{Header: h.headerAt(r.Index), ActorId: r.Id}, nil
	})
}

func (a *api) GetActor(ctx context.Context, req *pb.GetActorRequest) (*pb.GetActorResponse, error) {
	h := a.h
	if req.ActorId == "" && req.Name == "" {
		return nil, rpcerr.Wrapf(ErrBadRequest, "actor_id or name is required")
	}
	read := func() (*pb.GetActorResponse, error) {
		var info *pb.ActorInfo
		if req.ActorId != "" {
			if info = h.fsm.Actor(req.ActorId); info == nil {
				return nil, rpcerr.Wrapf(fsm.ErrActorNotFound, "%q", req.ActorId)
			}
		} else {
			var err error
			if info, err = h.fsm.NamedActor(req.Namespace, req.Name); err != nil {
				return nil, err
			}
		}
		return &pb.GetActorResponse{Header: h.header(), Actor: info}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.GetActor, func() (*pb.GetActorResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

// maxActorIDs bounds the actors one ListActors names.
const maxActorIDs = 100_000

func (a *api) ListActors(ctx context.Context, req *pb.ListActorsRequest) (*pb.ListActorsResponse, error) {
	h := a.h
	if len(req.ActorIds) > maxActorIDs {
		return nil, rpcerr.Wrapf(ErrBadRequest, "%d actor_ids; at most %d", len(req.ActorIds), maxActorIDs)
	}
	read := func() (*pb.ListActorsResponse, error) {
		if len(req.ActorIds) > 0 {
			out := make([]*pb.ActorInfo, 0, len(req.ActorIds))
			for _, id := range req.ActorIds {
				if x := h.fsm.Actor(id); x != nil && (req.JobId == "" || x.JobId == req.JobId) {
					out = append(out, x)
				}
			}
			return &pb.ListActorsResponse{Header: h.header(), Actors: out}, nil
		}
		all := h.fsm.Actors()
		if req.JobId == "" {
			return &pb.ListActorsResponse{Header: h.header(), Actors: all}, nil
		}
		var out []*pb.ActorInfo
		for _, x := range all {
			if x.JobId == req.JobId {
				out = append(out, x)
			}
		}
		return &pb.ListActorsResponse{Header: h.header(), Actors: out}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ListActors, func() (*pb.ListActorsResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

func (a *api) KillActor(ctx context.Context, req *pb.KillActorRequest) (*pb.KillActorResponse, error) {
	h := a.h
	if err := checkID("actor_id", req.ActorId); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.KillActor, func() (*pb.KillActorResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdActorFailed, req.RequestId, &pb.ActorFailedCommand{
			ActorId: req.ActorId, Cause: "killed by ray.Kill", NoRestart: req.NoRestart})
		if err != nil {
			return nil, err
		}
		return &pb.KillActorResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *api) ReportActorFailure(ctx context.Context, req *pb.ReportActorFailureRequest) (*pb.ReportActorFailureResponse, error) {
	h := a.h
	if err := checkID("actor_id", req.ActorId); err != nil {
		return nil, err
	}
	if err := checkID("worker_id", req.WorkerId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ReportActorFailure, func() (*pb.ReportActorFailureResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdActorFailed, "", &pb.ActorFailedCommand{
			ActorId: req.ActorId, WorkerId: req.WorkerId, Cause: req.Cause, NoRestart: req.OwnerDied})
		if err != nil {
			return nil, err
		}
		return &pb.ReportActorFailureResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *api) ResolveActorDependencies(ctx context.Context, req *pb.ResolveActorDependenciesRequest) (*pb.ResolveActorDependenciesResponse, error) {
	h := a.h
	if err := checkID("actor_id", req.ActorId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ResolveActorDependencies, func() (*pb.ResolveActorDependenciesResponse, error) {
		var (
			r   *pb.CommandResult
			err error
		)
		if req.Error != "" {
			if info := h.fsm.Actor(req.ActorId); info != nil && info.State != pb.ActorState_DEPENDENCIES_UNREADY {
				// Placed or dead already: an argument's late failure changes nothing.
				return &pb.ResolveActorDependenciesResponse{Header: h.header()}, nil
			}
			r, err = h.applier.Apply(ctx, fsm.CmdActorFailed, "", &pb.ActorFailedCommand{
				ActorId: req.ActorId, Cause: "a constructor argument failed: " + req.Error, NoRestart: true})
		} else {
			r, err = h.applier.Apply(ctx, fsm.CmdActorDepsResolved, "", &pb.ActorDepsResolvedCommand{ActorId: req.ActorId, InitArgs: req.InitArgs})
		}
		if err != nil {
			return nil, err
		}
		return &pb.ResolveActorDependenciesResponse{Header: h.headerAt(r.Index), Applied: r.Flag}, nil
	})
}
