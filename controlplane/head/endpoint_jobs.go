package head

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/pkgstore"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

// Limits on a submitted job's spec: it lives in every head's memory.
const (
	maxEntrypointLen = 64 << 10
	maxEnvVars       = 1024
	maxEnvValueLen   = 64 << 10
	maxMetadata      = 256
)

// envName is what POSIX shells accept as a variable name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckEnvVars refuses environment variable names a process could not
// carry, and oversized values.
func CheckEnvVars(env map[string]string) error {
	if len(env) > maxEnvVars {
		return rpcerr.Wrapf(ErrBadRequest, "%d env vars; at most %d", len(env), maxEnvVars)
	}
	for k, v := range env {
		if !envName.MatchString(k) {
			return rpcerr.Wrapf(ErrBadRequest, "env var name %q is not valid (letters, digits and _, not starting with a digit)", k)
		}
		if len(v) > maxEnvValueLen || strings.ContainsRune(v, 0) {
			return rpcerr.Wrapf(ErrBadRequest, "env var %s: value too long or holds a NUL byte", k)
		}
	}
	return nil
}

func checkSubmission(j *pb.JobSubmission) error {
	if j == nil {
		return rpcerr.Wrapf(ErrBadRequest, "job is required")
	}
	if strings.TrimSpace(j.Entrypoint) == "" {
		return rpcerr.Wrapf(ErrBadRequest, "entrypoint is empty")
	}
	if len(j.Entrypoint) > maxEntrypointLen || !utf8.ValidString(j.Entrypoint) {
		return rpcerr.Wrapf(ErrBadRequest, "entrypoint must be valid UTF-8 of at most %d bytes", maxEntrypointLen)
	}
	if j.SubmissionId != "" {
		if err := checkID("submission_id", j.SubmissionId); err != nil {
			return err
		}
		if strings.ContainsAny(j.SubmissionId, "/\\ \t\n") || j.SubmissionId == "." || j.SubmissionId == ".." {
			return rpcerr.Wrapf(ErrBadRequest, "submission_id %q must not hold slashes or spaces", j.SubmissionId)
		}
	}
	if err := CheckEnvVars(j.GetRuntimeEnv().GetEnvVars()); err != nil {
		return err
	}
	if wd := j.GetRuntimeEnv().GetWorkingDir(); wd != "" {
		if _, err := pkgstore.ParseURI(wd); err != nil {
			return rpcerr.Wrapf(ErrBadRequest, "%v", err)
		}
	}
	res := map[string]float64{"CPU": j.EntrypointNumCpus, "GPU": j.EntrypointNumGpus, "memory": j.EntrypointMemory}
	if err := checkResources("entrypoint", res); err != nil {
		return err
	}
	if err := checkResources("entrypoint_resources", j.EntrypointResources); err != nil {
		return err
	}
	if len(j.Metadata) > maxMetadata {
		return rpcerr.Wrapf(ErrBadRequest, "%d metadata entries; at most %d", len(j.Metadata), maxMetadata)
	}
	for k, v := range j.Metadata {
		if len(k) > maxIDLen || len(v) > maxKeyLen {
			return rpcerr.Wrapf(ErrBadRequest, "metadata %q: key at most %d bytes, value at most %d", k, maxIDLen, maxKeyLen)
		}
	}
	return nil
}

// JobRequirements is the entrypoint's resource shape.
func JobRequirements(j *pb.JobSubmission) map[string]float64 { return fsm.EntrypointResources(j) }

func (a *api) SubmitJob(ctx context.Context, req *pb.SubmitJobRequest) (*pb.SubmitJobResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if err := checkSubmission(req.Job); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.SubmitJob, func() (*pb.SubmitJobResponse, error) {
		j := proto.Clone(req.Job).(*pb.JobSubmission)
		if j.SubmissionId == "" {
			// Ray's form; a retry with the same request ID gets the first
			// answer (and ID) from the duplicate table.
			j.SubmissionId = "raysubmit_" + auth.RandomHex(8)
		}
		if wd := j.GetRuntimeEnv().GetWorkingDir(); wd != "" {
			name, _ := pkgstore.ParseURI(wd)
			if _, _, err := h.fsm.KVGet(pkgstore.Namespace, name+"/manifest"); err != nil {
				return nil, rpcerr.Wrapf(ErrBadRequest, "working_dir package %s was not uploaded", wd)
			}
		}
		r, err := h.applier.Apply(ctx, fsm.CmdSubmitJob, req.RequestId, j)
		if err != nil {
			return nil, err
		}
		return &pb.SubmitJobResponse{Header: h.headerAt(r.Index), SubmissionId: r.Id}, nil
	})
}

func (a *api) GetSubmission(ctx context.Context, req *pb.GetSubmissionRequest) (*pb.GetSubmissionResponse, error) {
	h := a.h
	if err := checkID("submission_id", req.SubmissionId); err != nil {
		return nil, err
	}
	read := func() (*pb.GetSubmissionResponse, error) {
		j := h.fsm.Submission(req.SubmissionId)
		if j == nil {
			return nil, rpcerr.Wrapf(fsm.ErrJobNotFound, "no job %q", req.SubmissionId)
		}
		return &pb.GetSubmissionResponse{Header: h.header(), Job: j}, nil
	}
	if req.Stale {
		return read()
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.GetSubmission, func() (*pb.GetSubmissionResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return read()
	})
}

func (a *api) ListSubmissions(ctx context.Context, req *pb.ListSubmissionsRequest) (*pb.ListSubmissionsResponse, error) {
	h := a.h
	if req.Stale {
		return &pb.ListSubmissionsResponse{Header: h.header(), Jobs: h.fsm.Submissions()}, nil
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ListSubmissions, func() (*pb.ListSubmissionsResponse, error) {
		if err := h.verifyLeader(); err != nil {
			return nil, err
		}
		return &pb.ListSubmissionsResponse{Header: h.header(), Jobs: h.fsm.Submissions()}, nil
	})
}

func (a *api) StopSubmission(ctx context.Context, req *pb.StopSubmissionRequest) (*pb.StopSubmissionResponse, error) {
	h := a.h
	if err := checkID("submission_id", req.SubmissionId); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.StopSubmission, func() (*pb.StopSubmissionResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdJobStop, req.RequestId, &pb.JobStopCommand{SubmissionId: req.SubmissionId})
		if err != nil {
			return nil, err
		}
		h.jobs.kick() // the stop reaches the supervisor without waiting for a tick
		return &pb.StopSubmissionResponse{Header: h.headerAt(r.Index), Stopped: r.Flag}, nil
	})
}

func (a *api) DeleteSubmission(ctx context.Context, req *pb.DeleteSubmissionRequest) (*pb.DeleteSubmissionResponse, error) {
	h := a.h
	if err := checkID("submission_id", req.SubmissionId); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.DeleteSubmission, func() (*pb.DeleteSubmissionResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdJobDelete, req.RequestId, &pb.JobDeleteCommand{SubmissionId: req.SubmissionId})
		if err != nil {
			return nil, err
		}
		return &pb.DeleteSubmissionResponse{Header: h.headerAt(r.Index), Deleted: r.Flag}, nil
	})
}

func (a *api) ReportSubmission(ctx context.Context, req *pb.ReportSubmissionRequest) (*pb.ReportSubmissionResponse, error) {
	h := a.h
	if err := checkID("submission_id", req.SubmissionId); err != nil {
		return nil, err
	}
	if err := checkID("node_id", req.NodeId); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if req.State != pb.JobSubmissionState_SUBMISSION_RUNNING && !fsm.SubmissionEnded(req.State) {
		return nil, rpcerr.Wrapf(ErrBadRequest, "a job cannot be reported %s", req.State)
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ReportSubmission, func() (*pb.ReportSubmissionResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdJobReport, req.RequestId, req)
		if err != nil {
			return nil, err
		}
		return &pb.ReportSubmissionResponse{Header: h.headerAt(r.Index)}, nil
	})
}

// JobLogs serves a job's driver output from the raylet of its node, on
// any head: the job table says where it runs. A follow waits for a
// pending job to be placed, then streams until the job ends.
func (a *api) JobLogs(req *pb.JobLogsRequest, stream pb.ControlPlane_JobLogsServer) error {
	h := a.h
	if err := checkID("submission_id", req.SubmissionId); err != nil {
		return err
	}
	if req.Offset < 0 {
		return rpcerr.Wrapf(ErrBadRequest, "offset %d is negative", req.Offset)
	}
	ctx := stream.Context()
	j := h.fsm.Submission(req.SubmissionId)
	if j == nil {
		// This head may lag behind a submission that just committed: the
		// leader's word decides whether the job exists.
		r, err := a.GetSubmission(ctx, &pb.GetSubmissionRequest{SubmissionId: req.SubmissionId})
		if err != nil {
			return err
		}
		j = r.Job
	}
	// A pending job has no output yet: a follow waits for it to start.
	for req.Follow && j.State == pb.JobSubmissionState_SUBMISSION_PENDING {
		ch, _ := h.fsm.Changed()
		if cur := h.fsm.Submission(req.SubmissionId); cur != nil {
			if j = cur; j.State != pb.JobSubmissionState_SUBMISSION_PENDING {
				break
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if j.NodeAddress == "" || j.State == pb.JobSubmissionState_SUBMISSION_PENDING {
		return nil // not started: no output (yet)
	}
	cc, err := h.jobs.conn(j.NodeAddress)
	if err != nil {
		return err
	}
	rs, err := rpb.NewJobSupervisorClient(cc).JobLogs(ctx, req)
	if err != nil {
		return fmt.Errorf("job %s: logs from node %s: %w", j.SubmissionId, j.NodeId, err)
	}
	for {
		c, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if status.Code(err) == codes.NotFound {
			return nil // ended before its supervisor started it: no output
		}
		if err != nil {
			if n := h.fsm.Node(j.NodeId); n != nil && n.State == pb.NodeState_NODE_DEAD {
				return rpcerr.Wrapf(fsm.ErrNodeDead, "job %s: its node %s died; its logs went with it", j.SubmissionId, j.NodeId)
			}
			return fmt.Errorf("job %s: logs from node %s: %w", j.SubmissionId, j.NodeId, err)
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
}
