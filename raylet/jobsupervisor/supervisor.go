// Package jobsupervisor runs submitted jobs' entrypoints on a raylet's
// node: each in its working dir (the job's unpacked package), in its own
// process group, with the cluster's address and token in its environment
// so that ray.Init in it joins the cluster as a driver. Its output goes to
// a bounded, rotated file on the node, served to heads by JobLogs; its
// start and end are reported to the control plane. StopJob sends SIGTERM,
// then SIGKILL after a grace period.
package jobsupervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/controlplane/fsm"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

// Environment an entrypoint starts with, besides its runtime env's.
const (
	// EnvAddress and EnvToken name the cluster: ray.Init reads them.
	EnvAddress = "MANTA_ADDRESS"
	EnvToken   = "MANTA_TOKEN"
	// EnvRayletAddress is the raylet of the driver's node, which ray.Init
	// submits through.
	EnvRayletAddress = "MANTA_DRIVER_RAYLET_ADDRESS"
	// EnvSubmissionID links the driver's job to its submission (as Ray's
	// RAY_JOB_SUBMISSION_ID does; that is set too).
	EnvSubmissionID    = "MANTA_SUBMISSION_ID"
	envRaySubmissionID = "RAY_JOB_SUBMISSION_ID"
)

// Reporter is where the supervisor reports its jobs (the control plane).
type Reporter interface {
	ReportSubmission(ctx context.Context, req *cpb.ReportSubmissionRequest) error
}

// WorkingDirs resolves a package URI to a local, unpacked directory.
type WorkingDirs interface {
	WorkingDir(ctx context.Context, uri string) (string, error)
}

// Config configures a Supervisor.
type Config struct {
	NodeID string
	// Heads and Token are what entrypoints get to join the cluster.
	Heads []string
	Token string
	// TLSEnv hands entrypoints the raylet's TLS files (KEY=VALUE).
	TLSEnv []string
	// RayletAddress is this node's raylet.
	RayletAddress string
	// Dir holds one directory per job: its log files, and its working
	// directory when it has no package.
	Dir         string
	Reporter    Reporter
	WorkingDirs WorkingDirs
	// Reserve takes the entrypoint's resources from the node while it runs
	// (nil: nothing is reserved). An error means they are not free now.
	Reserve func(res map[string]float64) (release func(), err error)
	// MaxLogBytes bounds a job's log files on disk; default 64 MiB.
	MaxLogBytes int64
	Logger      *zap.Logger
}

// Supervisor runs jobs' entrypoints. Close kills them all and waits.
type Supervisor struct {
	rpb.UnimplementedJobSupervisorServer

	cfg Config
	log *zap.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]*job
}

type job struct {
	id   string
	logs *logFile

	mu       sync.Mutex
	proc     *os.Process // nil until started
	stopped  bool        // a stop was asked for
	killing  bool        // the SIGKILL timer runs
	finished chan struct{}
}

// New returns a supervisor; it starts nothing until asked.
func New(cfg Config) *Supervisor {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = 64 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{cfg: cfg, log: cfg.Logger.Named("jobsupervisor"), ctx: ctx, cancel: cancel, jobs: map[string]*job{}}
}

// StartJob starts a job's entrypoint, once: the control plane's leader may
// ask again (a new leader reconciling) and gets started=false.
func (s *Supervisor) StartJob(_ context.Context, req *rpb.StartJobRequest) (*rpb.StartJobReply, error) {
	j := req.GetJob()
	if j == nil || j.SubmissionId == "" || strings.TrimSpace(j.Entrypoint) == "" {
		return nil, status.Error(codes.InvalidArgument, "a job with a submission ID and an entrypoint is required")
	}
	if j.NodeId != s.cfg.NodeID {
		return nil, status.Errorf(codes.FailedPrecondition, "job %s is assigned to node %s, not %s", j.SubmissionId, j.NodeId, s.cfg.NodeID)
	}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "the raylet is closing")
	}
	if _, ok := s.jobs[j.SubmissionId]; ok {
		s.mu.Unlock()
		return &rpb.StartJobReply{Started: false}, nil
	}
	var release func()
	if s.cfg.Reserve != nil {
		var err error
		if release, err = s.cfg.Reserve(entrypointResources(j)); err != nil {
			s.mu.Unlock()
			return nil, status.Errorf(codes.ResourceExhausted, "job %s: %v", j.SubmissionId, err)
		}
	}
	dir := filepath.Join(s.cfg.Dir, j.SubmissionId)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.mu.Unlock()
		if release != nil {
			release()
		}
		return nil, status.Errorf(codes.Internal, "job dir: %v", err)
	}
	lf, err := openLogFile(filepath.Join(dir, "driver.log"), s.cfg.MaxLogBytes)
	if err != nil {
		s.mu.Unlock()
		if release != nil {
			release()
		}
		return nil, status.Errorf(codes.Internal, "job log: %v", err)
	}
	jb := &job{id: j.SubmissionId, logs: lf, finished: make(chan struct{})}
	s.jobs[j.SubmissionId] = jb
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		if release != nil {
			defer release()
		}
		s.run(jb, j, dir)
	}()
	return &rpb.StartJobReply{Started: true}, nil
}

func entrypointResources(j *cpb.JobSubmission) map[string]float64 { return fsm.EntrypointResources(j) }

// run sets the job up, runs it to its end and reports both.
func (s *Supervisor) run(jb *job, j *cpb.JobSubmission, dir string) {
	defer close(jb.finished)
	defer jb.logs.finish()
	log := s.log.With(zap.String("job", j.SubmissionId))
	end := func(st cpb.JobSubmissionState, msg, errType string, code int, hasCode bool) {
		s.report(&cpb.ReportSubmissionRequest{SubmissionId: j.SubmissionId, NodeId: s.cfg.NodeID, State: st,
			Message: msg, ErrorType: errType, ExitCode: int32(code), HasExitCode: hasCode})
	}
	cwd := dir
	if wd := j.GetRuntimeEnv().GetWorkingDir(); wd != "" {
		setup, cancel := context.WithTimeout(s.ctx, 10*time.Minute)
		var err error
		cwd, err = s.cfg.WorkingDirs.WorkingDir(setup, wd)
		cancel()
		if err != nil {
			log.Warn("runtime env setup failed", zap.Error(err))
			fmt.Fprintf(jb.logs, "runtime env setup failed: %v\n", err)
			end(cpb.JobSubmissionState_SUBMISSION_FAILED, "runtime env setup failed: "+err.Error(), "RUNTIME_ENV_SETUP_FAILURE", 0, false)
			return
		}
	}
	// Ray runs the entrypoint through a shell, so pipes and && work.
	cmd := exec.Command("/bin/sh", "-c", j.Entrypoint)
	cmd.Dir = cwd
	cmd.Env = s.env(j)
	cmd.Stdout, cmd.Stderr = jb.logs, jb.logs
	// Background children that keep the output pipe open must not hold
	// the end of the job: their group is killed right after.
	cmd.WaitDelay = time.Second
	// Its own process group, so a stop reaches the entrypoint's children;
	// Pdeathsig ends it if the raylet dies (its node is then dead to the
	// control plane, which fails the job).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	jb.mu.Lock()
	if jb.stopped {
		jb.mu.Unlock()
		end(cpb.JobSubmissionState_SUBMISSION_STOPPED, "Job was intentionally stopped.", "", 0, false)
		return
	}
	err := cmd.Start()
	if err == nil {
		jb.proc = cmd.Process
	}
	jb.mu.Unlock()
	if err != nil {
		fmt.Fprintf(jb.logs, "could not start the entrypoint: %v\n", err)
		end(cpb.JobSubmissionState_SUBMISSION_FAILED, "could not start the entrypoint: "+err.Error(), "JOB_ENTRYPOINT_COMMAND_START_ERROR", 0, false)
		return
	}
	log.Info("job entrypoint started", zap.Int("pid", cmd.Process.Pid), zap.String("cwd", cwd))
	// The RUNNING report goes on while the entrypoint runs: a short job's
	// end must not wait behind it, but must come after it.
	running := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(running)
		s.report(&cpb.ReportSubmissionRequest{SubmissionId: j.SubmissionId, NodeId: s.cfg.NodeID,
			State: cpb.JobSubmissionState_SUBMISSION_RUNNING, Message: "Job is currently running.", DriverPid: int32(cmd.Process.Pid)})
	}()
	werr := cmd.Wait()
	// The group may hold children that outlived the entrypoint.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-running
	jb.mu.Lock()
	stopped := jb.stopped
	jb.mu.Unlock()
	code := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal()) // as a shell reports it
	}
	log.Info("job entrypoint ended", zap.Int("exit_code", code), zap.Bool("stopped", stopped), zap.NamedError("wait", werr))
	switch {
	case stopped:
		end(cpb.JobSubmissionState_SUBMISSION_STOPPED, "Job was intentionally stopped.", "", code, true)
	case code == 0:
		end(cpb.JobSubmissionState_SUBMISSION_SUCCEEDED, "Job finished successfully.", "", 0, true)
	default:
		msg := fmt.Sprintf("Job entrypoint command failed with exit code %d", code)
		if tail := s.tail(jb, 2000); tail != "" {
			msg += ", last available logs (truncated to 2,000 chars):\n" + tail
		}
		end(cpb.JobSubmissionState_SUBMISSION_FAILED, msg, "JOB_ENTRYPOINT_COMMAND_ERROR", code, true)
	}
}

// env is the raylet's environment, the cluster's address, and the job's
// runtime env vars over them (sorted, so a job's environment is stable).
func (s *Supervisor) env(j *cpb.JobSubmission) []string {
	vars := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	vars[EnvAddress] = strings.Join(s.cfg.Heads, ",")
	vars[EnvToken] = s.cfg.Token
	delete(vars, "MANTA_TOKEN_FILE") // the token above wins
	for _, kv := range s.cfg.TLSEnv {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	vars[EnvRayletAddress] = s.cfg.RayletAddress
	vars[EnvSubmissionID] = j.SubmissionId
	vars[envRaySubmissionID] = j.SubmissionId
	for k, v := range j.GetRuntimeEnv().GetEnvVars() {
		vars[k] = v
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// tail returns the last n bytes of a job's output.
func (s *Supervisor) tail(jb *job, n int) string {
	end := jb.logs.end()
	buf := make([]byte, n)
	got, _, _, _, err := jb.logs.readAt(max(0, end-int64(n)), buf)
	if err != nil {
		return ""
	}
	return string(buf[:got])
}

// report sends a report until the control plane has it, or the job is
// gone from the table, or the supervisor closes.
func (s *Supervisor) report(req *cpb.ReportSubmissionRequest) {
	for {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		err := s.cfg.Reporter.ReportSubmission(ctx, req)
		cancel()
		if err == nil || errors.Is(err, fsm.ErrJobNotFound) || s.ctx.Err() != nil {
			return
		}
		s.log.Warn("report job state; retrying", zap.String("job", req.SubmissionId), zap.Stringer("state", req.State), zap.Error(err))
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// StopJob stops a job: SIGTERM to its process group, SIGKILL after the
// grace period. A job this node never started is remembered as stopped (a
// start that comes later does not run it) and reported STOPPED.
func (s *Supervisor) StopJob(_ context.Context, req *rpb.StopJobRequest) (*rpb.StopJobReply, error) {
	if req.SubmissionId == "" {
		return nil, status.Error(codes.InvalidArgument, "submission_id is required")
	}
	grace := time.Duration(req.GraceMillis) * time.Millisecond
	if grace <= 0 {
		grace = 3 * time.Second
	}
	s.mu.Lock()
	jb := s.jobs[req.SubmissionId]
	if jb == nil {
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			return nil, status.Error(codes.Unavailable, "the raylet is closing")
		}
		jb = &job{id: req.SubmissionId, stopped: true, finished: make(chan struct{})}
		close(jb.finished)
		s.jobs[req.SubmissionId] = jb
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.report(&cpb.ReportSubmissionRequest{SubmissionId: req.SubmissionId, NodeId: s.cfg.NodeID,
				State: cpb.JobSubmissionState_SUBMISSION_STOPPED, Message: "Job was intentionally stopped."})
		}()
		return &rpb.StopJobReply{Stopping: false}, nil
	}
	s.mu.Unlock()
	jb.mu.Lock()
	defer jb.mu.Unlock()
	jb.stopped = true
	if jb.proc == nil {
		return &rpb.StopJobReply{Stopping: true}, nil // run sees stopped before it starts anything
	}
	select {
	case <-jb.finished:
		return &rpb.StopJobReply{Stopping: false}, nil
	default:
	}
	_ = syscall.Kill(-jb.proc.Pid, syscall.SIGTERM)
	if !jb.killing {
		jb.killing = true
		pid := jb.proc.Pid
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-jb.finished:
			case <-t.C:
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			case <-s.ctx.Done():
			}
		}()
	}
	return &rpb.StopJobReply{Stopping: true}, nil
}

// JobLogs streams a job's output from an offset; with follow, until the
// entrypoint has ended and all of it is sent.
func (s *Supervisor) JobLogs(req *cpb.JobLogsRequest, stream rpb.JobSupervisor_JobLogsServer) error {
	s.mu.Lock()
	jb := s.jobs[req.SubmissionId]
	s.mu.Unlock()
	if jb == nil || jb.logs == nil {
		return status.Errorf(codes.NotFound, "no output of job %q on node %s", req.SubmissionId, s.cfg.NodeID)
	}
	off := max(req.Offset, 0)
	buf := make([]byte, 256<<10)
	ctx := stream.Context()
	for {
		n, start, done, changed, err := jb.logs.readAt(off, buf)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if n > 0 {
			c := &cpb.JobLogsChunk{Data: buf[:n], Offset: start + int64(n), Skipped: start - off}
			if err := stream.Send(c); err != nil {
				return err
			}
			off = c.Offset
			continue
		}
		off = start
		if done || !req.Follow {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, "the raylet is closing")
		}
	}
}

// Close kills every running entrypoint and waits for the supervisor's
// goroutines. Their jobs are not reported: the node goes, and the control
// plane fails them as its node's.
func (s *Supervisor) Close() {
	s.mu.Lock()
	s.cancel()
	jobs := make([]*job, 0, len(s.jobs))
	for _, jb := range s.jobs {
		jobs = append(jobs, jb)
	}
	s.mu.Unlock()
	for _, jb := range jobs {
		jb.mu.Lock()
		if jb.proc != nil {
			_ = syscall.Kill(-jb.proc.Pid, syscall.SIGKILL)
		}
		jb.mu.Unlock()
	}
	s.wg.Wait()
}
