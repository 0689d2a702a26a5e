package fsm

import (
	"errors"
	"io"
	"testing"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestJobSubmissionLifecycle(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	a.apply(cmd(t, CmdRegisterNode, "", &pb.NodeInfo{NodeId: "n1", Address: "a1"}))
	spec := &pb.JobSubmission{SubmissionId: "s1", Entrypoint: "./app", RuntimeEnv: &pb.RuntimeEnv{EnvVars: map[string]string{"K": "V"}}}
	if r := a.apply(cmd(t, CmdSubmitJob, "", spec))[0]; r.Id != "s1" || !r.Flag {
		t.Fatalf("submit: %v", r)
	}
	if r := a.apply(cmd(t, CmdSubmitJob, "", spec))[0]; ResultError(r) != nil || r.Flag {
		t.Fatalf("the same spec again: %v; want the same job, not a new one", r)
	}
	other := &pb.JobSubmission{SubmissionId: "s1", Entrypoint: "./other"}
	if err := ResultError(a.apply(cmd(t, CmdSubmitJob, "", other))[0]); !errors.Is(err, ErrSubmissionExists) || !errors.Is(err, rpcerr.ErrAlreadyExists) {
		t.Fatalf("another entrypoint under the same ID: %v; want AlreadyExists", err)
	}
	if got := a.f.Submission("s1"); got.State != pb.JobSubmissionState_SUBMISSION_PENDING || got.Entrypoint != "./app" {
		t.Fatalf("after submit: %v", got)
	}
	evs, _, ok := a.f.EventsSince(0, func(k pb.EventKind) bool { return k == pb.EventKind_EVENT_JOB_SUBMISSION })
	if !ok || len(evs) != 1 || evs[0].Submission.GetSubmissionId() != "s1" {
		t.Fatalf("watch events: %v %v; want the submission once", evs, ok)
	}
	report := func(node string, st pb.JobSubmissionState, code int32) bool {
		r := a.apply(cmd(t, CmdJobReport, "", &pb.ReportSubmissionRequest{SubmissionId: "s1", NodeId: node, State: st, ExitCode: code, HasExitCode: code >= 0}))[0]
		if err := ResultError(r); err != nil {
			t.Fatal(err)
		}
		return r.Flag
	}
	if report("n1", pb.JobSubmissionState_SUBMISSION_RUNNING, -1) {
		t.Fatal("a report before the job was assigned counted")
	}
	if !a.apply(cmd(t, CmdJobAssign, "", &pb.JobAssignCommand{SubmissionId: "s1", NodeId: "n1", NodeAddress: "a1"}))[0].Flag {
		t.Fatal("assign failed")
	}
	if report("n2", pb.JobSubmissionState_SUBMISSION_RUNNING, -1) || !report("n1", pb.JobSubmissionState_SUBMISSION_RUNNING, -1) {
		t.Fatal("only the assigned node's report counts")
	}
	// The entrypoint's ray.Init registers a driver job linked to it.
	driver := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{Metadata: map[string]string{SubmissionDriverKey: "s1"}}))[0].Id
	a.apply(cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: "x", ClassName: "C", JobId: driver}))
	if got := a.f.Submission("s1"); got.DriverJobId != driver || got.State != pb.JobSubmissionState_SUBMISSION_RUNNING {
		t.Fatalf("running: %v; want driver job %s", got, driver)
	}
	if err := ResultError(a.apply(cmd(t, CmdJobDelete, "", &pb.JobDeleteCommand{SubmissionId: "s1"}))[0]); !errors.Is(err, ErrJobNotEnded) {
		t.Fatalf("delete of a running job: %v; want ErrJobNotEnded", err)
	}
	if !a.apply(cmd(t, CmdJobStop, "", &pb.JobStopCommand{SubmissionId: "s1"}))[0].Flag || !a.f.Submission("s1").StopRequested {
		t.Fatal("stop of a running job must mark it")
	}
	if !report("n1", pb.JobSubmissionState_SUBMISSION_STOPPED, 143) || report("n1", pb.JobSubmissionState_SUBMISSION_FAILED, 1) {
		t.Fatal("the first end must win")
	}
	got := a.f.Submission("s1")
	if got.State != pb.JobSubmissionState_SUBMISSION_STOPPED || got.ExitCode != 143 || got.EndUnixNano == 0 {
		t.Fatalf("stopped: %v", got)
	}
	// Its driver job ended with it, and took its actor along.
	if j := a.f.jobs[driver]; j.State != pb.JobState_JOB_STOPPED {
		t.Fatalf("driver job after the stop: %v", j)
	}
	if a.f.Actor("x").State != pb.ActorState_DEAD {
		t.Fatalf("the driver's actor outlived the job: %v", a.f.Actor("x"))
	}
	if !a.apply(cmd(t, CmdJobDelete, "", &pb.JobDeleteCommand{SubmissionId: "s1"}))[0].Flag || a.f.Submission("s1") != nil {
		t.Fatal("delete of an ended job")
	}
	if err := ResultError(a.apply(cmd(t, CmdJobStop, "", &pb.JobStopCommand{SubmissionId: "s1"}))[0]); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("stop of a deleted job: %v", err)
	}
}

func TestJobStopBeforePlacementAndSnapshot(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	a.apply(cmd(t, CmdSubmitJob, "", &pb.JobSubmission{SubmissionId: "s1", Entrypoint: "x"}))
	a.apply(cmd(t, CmdSubmitJob, "", &pb.JobSubmission{SubmissionId: "s2", Entrypoint: "y", EntrypointNumCpus: 2}))
	a.apply(cmd(t, CmdJobStop, "", &pb.JobStopCommand{SubmissionId: "s1"}))
	if got := a.f.Submission("s1"); got.State != pb.JobSubmissionState_SUBMISSION_STOPPED {
		t.Fatalf("a job on no node must stop at once: %v", got)
	}
	if err := ResultError(a.apply(cmd(t, CmdJobAssign, "", &pb.JobAssignCommand{SubmissionId: "s2", NodeId: "nope"}))[0]); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("assign to an unknown node: %v", err)
	}
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	g := New(nil)
	if err := g.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	h1, _ := a.f.StateHash()
	h2, _ := g.StateHash()
	if h1 != h2 || len(g.Submissions()) != 2 || g.Submissions()[0].SubmissionId != "s1" {
		t.Fatalf("restore: hash %s vs %s, %v", h1, h2, g.Submissions())
	}
}
