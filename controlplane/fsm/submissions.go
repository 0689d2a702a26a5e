package fsm

import (
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// The submitted-job table (manta job submit, Ray's Jobs REST API). A
// submission's life:
//
//	PENDING --JobAssign (leader picks a node)--> PENDING on node N
//	        --JobReport RUNNING (N's supervisor started it)--> RUNNING
//	        --JobReport SUCCEEDED/FAILED/STOPPED--> ended
//
// JobStop of a submission on no node ends it STOPPED at once; otherwise it
// marks it for the leader, which asks the node's supervisor to stop it.
// Reports are accepted only from the node the job is assigned to, so a
// late report of a node that lost its job changes nothing.

// SubmissionDriverKey is the driver job's metadata key naming the
// submission whose entrypoint started it (the supervisor passes it through
// the environment), which links the two.
const SubmissionDriverKey = "submission_id"

// SubmissionEnded reports whether a submission state is final.
func SubmissionEnded(s pb.JobSubmissionState) bool {
	return s == pb.JobSubmissionState_SUBMISSION_SUCCEEDED || s == pb.JobSubmissionState_SUBMISSION_FAILED ||
		s == pb.JobSubmissionState_SUBMISSION_STOPPED
}

// submissionSpec is the part of a submission its submitter chose: equal
// specs under one ID are the same job.
func submissionSpec(j *pb.JobSubmission) *pb.JobSubmission {
	return &pb.JobSubmission{SubmissionId: j.SubmissionId, Entrypoint: j.Entrypoint, RuntimeEnv: j.RuntimeEnv,
		RuntimeEnvJson: j.RuntimeEnvJson, Metadata: j.Metadata, EntrypointNumCpus: j.EntrypointNumCpus,
		EntrypointNumGpus: j.EntrypointNumGpus, EntrypointMemory: j.EntrypointMemory,
		EntrypointResources: j.EntrypointResources}
}

func applySubmitJob(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var j pb.JobSubmission
	if err := decode(body, &j); err != nil {
		return errResult(err)
	}
	if j.SubmissionId == "" || j.Entrypoint == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "submission without id or entrypoint"))
	}
	if old := f.submissions[j.SubmissionId]; old != nil {
		if proto.Equal(submissionSpec(old), submissionSpec(&j)) {
			return &pb.CommandResult{Id: old.SubmissionId} // the same job again
		}
		return errResult(rpcerr.Wrapf(ErrSubmissionExists, "%q runs %q", old.SubmissionId, old.Entrypoint))
	}
	s := submissionSpec(&j)
	s.State = pb.JobSubmissionState_SUBMISSION_PENDING
	s.SubmitUnixNano = c.timeNanos
	s.SubmitIndex = c.index
	s.Message = "waiting for a node to run the entrypoint"
	f.putSubmission(c, s)
	return &pb.CommandResult{Id: s.SubmissionId, Flag: true}
}

func applyJobAssign(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.JobAssignCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old := f.submissions[cmd.SubmissionId]
	if old == nil {
		return errResult(rpcerr.Wrapf(ErrJobNotFound, "%q", cmd.SubmissionId))
	}
	if old.State != pb.JobSubmissionState_SUBMISSION_PENDING || old.NodeId != "" {
		return &pb.CommandResult{Flag: old.NodeId == cmd.NodeId && cmd.NodeId != ""}
	}
	if cmd.NodeId == "" {
		if old.Message == cmd.Message {
			return &pb.CommandResult{}
		}
		j := proto.Clone(old).(*pb.JobSubmission)
		j.Message = cmd.Message
		f.putSubmission(c, j)
		return &pb.CommandResult{Flag: true}
	}
	if n := f.nodes[cmd.NodeId]; n == nil || n.State != pb.NodeState_NODE_ALIVE {
		return errResult(rpcerr.Wrapf(ErrNodeNotFound, "no alive node %q", cmd.NodeId))
	}
	j := proto.Clone(old).(*pb.JobSubmission)
	j.NodeId, j.NodeAddress = cmd.NodeId, cmd.NodeAddress
	j.Message = "starting on node " + cmd.NodeId
	f.putSubmission(c, j)
	return &pb.CommandResult{Flag: true}
}

func applyJobReport(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.ReportSubmissionRequest
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	old := f.submissions[r.SubmissionId]
	if old == nil {
		return errResult(rpcerr.Wrapf(ErrJobNotFound, "%q", r.SubmissionId))
	}
	if SubmissionEnded(old.State) || old.NodeId == "" || old.NodeId != r.NodeId {
		return &pb.CommandResult{Flag: false} // late, repeated, or from a node that does not run it
	}
	j := proto.Clone(old).(*pb.JobSubmission)
	switch {
	case r.State == pb.JobSubmissionState_SUBMISSION_RUNNING:
		if old.State != pb.JobSubmissionState_SUBMISSION_PENDING {
			return &pb.CommandResult{Flag: false}
		}
		j.StartUnixNano = c.timeNanos
		j.DriverPid = r.DriverPid
	case SubmissionEnded(r.State):
		j.EndUnixNano = c.timeNanos
		if j.StartUnixNano == 0 {
			j.StartUnixNano = c.timeNanos
		}
		j.ExitCode, j.HasExitCode = r.ExitCode, r.HasExitCode
		j.ErrorType = r.ErrorType
	default:
		return errResult(rpcerr.Wrapf(ErrBadCommand, "a job cannot be reported %s", r.State))
	}
	j.State = r.State
	j.Message = r.Message
	f.putSubmission(c, j)
	if SubmissionEnded(j.State) {
		f.endDriverJobsLocked(c, j)
	}
	return &pb.CommandResult{Flag: true}
}

// endDriverJobsLocked ends the driver job a submission's entrypoint
// registered, if it is still running (the entrypoint was killed before
// ray.Shutdown), which frees its actors and lineage.
func (f *FSM) endDriverJobsLocked(c *applyCtx, s *pb.JobSubmission) {
	if s.DriverJobId == "" {
		return
	}
	state := pb.JobState_JOB_SUCCEEDED
	switch s.State {
	case pb.JobSubmissionState_SUBMISSION_FAILED:
		state = pb.JobState_JOB_FAILED
	case pb.JobSubmissionState_SUBMISSION_STOPPED:
		state = pb.JobState_JOB_STOPPED
	}
	f.finishJobLocked(c, s.DriverJobId, state, "its submission "+s.SubmissionId+" ended: "+s.Message)
}

func applyJobStop(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.JobStopCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old := f.submissions[cmd.SubmissionId]
	if old == nil {
		return errResult(rpcerr.Wrapf(ErrJobNotFound, "%q", cmd.SubmissionId))
	}
	if SubmissionEnded(old.State) {
		return &pb.CommandResult{Flag: false}
	}
	j := proto.Clone(old).(*pb.JobSubmission)
	if j.State == pb.JobSubmissionState_SUBMISSION_PENDING && j.NodeId == "" {
		j.State = pb.JobSubmissionState_SUBMISSION_STOPPED
		j.Message = "stopped before it started"
		j.EndUnixNano = c.timeNanos
	} else {
		j.StopRequested = true
	}
	f.putSubmission(c, j)
	return &pb.CommandResult{Flag: true}
}

func applyJobDelete(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.JobDeleteCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old := f.submissions[cmd.SubmissionId]
	if old == nil {
		return errResult(rpcerr.Wrapf(ErrJobNotFound, "%q", cmd.SubmissionId))
	}
	if !SubmissionEnded(old.State) {
		return errResult(rpcerr.Wrapf(ErrJobNotEnded, "job %s is %s; stop it first", old.SubmissionId, old.State))
	}
	delete(f.submissions, cmd.SubmissionId)
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_JOB_SUBMISSION, Submission: old, Deleted: true})
	return &pb.CommandResult{Flag: true}
}

// linkDriverLocked records the driver job a submission's entrypoint
// registered.
func (f *FSM) linkDriverLocked(c *applyCtx, j *pb.JobInfo) {
	id := j.Metadata[SubmissionDriverKey]
	old := f.submissions[id]
	if id == "" || old == nil || SubmissionEnded(old.State) || old.DriverJobId != "" {
		return
	}
	s := proto.Clone(old).(*pb.JobSubmission)
	s.DriverJobId = j.JobId
	f.putSubmission(c, s)
}

// putSubmission stores a (new) submission message and records the change.
func (f *FSM) putSubmission(c *applyCtx, j *pb.JobSubmission) {
	f.submissions[j.SubmissionId] = j
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_JOB_SUBMISSION, Submission: j})
}

// ---- reads ------------------------------------------------------------------

// Submission returns one submitted job, or nil. The message is shared.
func (f *FSM) Submission(id string) *pb.JobSubmission {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.submissions[id]
}

// Submissions lists the submitted jobs in submission order.
func (f *FSM) Submissions() []*pb.JobSubmission {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pb.JobSubmission, 0, len(f.submissions))
	for _, j := range f.submissions {
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].SubmitIndex != out[b].SubmitIndex {
			return out[a].SubmitIndex < out[b].SubmitIndex
		}
		return out[a].SubmissionId < out[b].SubmissionId
	})
	return out
}

// EntrypointResources is a submitted job's entrypoint's resource shape:
// what the node that runs it must have free, and holds while it runs.
func EntrypointResources(j *pb.JobSubmission) map[string]float64 {
	r := map[string]float64{}
	for k, v := range j.EntrypointResources {
		if v > 0 {
			r[k] = v
		}
	}
	if j.EntrypointNumCpus > 0 {
		r["CPU"] = j.EntrypointNumCpus
	}
	if j.EntrypointNumGpus > 0 {
		r["GPU"] = j.EntrypointNumGpus
	}
	if j.EntrypointMemory > 0 {
		r["memory"] = j.EntrypointMemory
	}
	return r
}
