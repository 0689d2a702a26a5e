package head

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/tlsconfig"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

// JobStopGrace is how long a stopped entrypoint has between SIGTERM and
// SIGKILL (Ray's default is 3 s).
const JobStopGrace = 3 * time.Second

// jobSupervision is the "job-supervision" leader routine: it places
// pending submitted jobs on a node that fits their entrypoint resources,
// asks that node's supervisor to start them (and to stop the ones marked
// stopped), and fails the jobs of dead nodes with "node died". The job
// table is the truth, so a new leader's reconciliation finishes whatever
// its predecessor left: a supervisor starts one submission at most once.
type jobSupervision struct {
	h *Head

	mu    sync.Mutex
	busy  map[string]bool // submissions with a start or stop in flight
	conns map[string]*grpc.ClientConn
	wake  chan struct{}
	wg    sync.WaitGroup
}

func newJobSupervision(h *Head) *jobSupervision {
	return &jobSupervision{h: h, conns: map[string]*grpc.ClientConn{}, wake: make(chan struct{}, 1)}
}

// kick wakes the routine (a stop was written).
func (s *jobSupervision) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *jobSupervision) run(ctx context.Context) {
	s.mu.Lock()
	s.busy = map[string]bool{}
	s.mu.Unlock()
	defer s.wg.Wait()
	t := time.NewTicker(250 * time.Millisecond) // retries placements as nodes come and go
	defer t.Stop()
	for {
		ch, _ := s.h.fsm.Changed()
		s.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-t.C:
		case <-s.wake:
		}
	}
}

func (s *jobSupervision) reconcile(ctx context.Context) {
	nodes := map[string]*cpb.NodeInfo{}
	for _, n := range s.h.fsm.Nodes() {
		nodes[n.NodeId] = n
	}
	// Placements and failures are written concurrently, so that group
	// commit packs a burst of submissions into few Raft entries.
	var writes sync.WaitGroup
	defer writes.Wait()
	apply := func(t fsm.CommandType, body proto.Message) {
		writes.Add(1)
		go func() {
			defer writes.Done()
			_, _ = s.apply(ctx, t, body)
		}()
	}
	for _, j := range s.h.fsm.Submissions() {
		if fsm.SubmissionEnded(j.State) {
			s.mu.Lock()
			delete(s.busy, j.SubmissionId)
			delete(s.busy, j.SubmissionId+"/stop")
			s.mu.Unlock()
			continue
		}
		if j.NodeId == "" {
			if n := s.pickNode(j, nodes); n != nil {
				apply(fsm.CmdJobAssign, &cpb.JobAssignCommand{SubmissionId: j.SubmissionId, NodeId: n.NodeId, NodeAddress: n.Address})
			} else if msg := fmt.Sprintf("waiting for a node with the entrypoint's resources %v (no alive node has them)", JobRequirements(j)); j.Message != msg {
				apply(fsm.CmdJobAssign, &cpb.JobAssignCommand{SubmissionId: j.SubmissionId, Message: msg})
			}
			continue
		}
		n := nodes[j.NodeId]
		if n == nil || n.State != cpb.NodeState_NODE_ALIVE {
			msg := fmt.Sprintf("node died: the node %s running the job's driver died", j.NodeId)
			if n != nil && n.DeathReason != "" {
				msg += " (" + n.DeathReason + ")"
			}
			apply(fsm.CmdJobReport, &cpb.ReportSubmissionRequest{SubmissionId: j.SubmissionId, NodeId: j.NodeId,
				State: cpb.JobSubmissionState_SUBMISSION_FAILED, Message: msg, ErrorType: "JOB_SUPERVISOR_ACTOR_DIED"})
			continue
		}
		switch {
		case j.StopRequested:
			s.async(ctx, j, func(ctx context.Context) error {
				cc, err := s.conn(n.Address)
				if err != nil {
					return err
				}
				_, err = rpb.NewJobSupervisorClient(cc).StopJob(ctx, &rpb.StopJobRequest{SubmissionId: j.SubmissionId,
					GraceMillis: JobStopGrace.Milliseconds()})
				return err
			})
		case j.State == cpb.JobSubmissionState_SUBMISSION_PENDING:
			s.async(ctx, j, func(ctx context.Context) error {
				cc, err := s.conn(n.Address)
				if err != nil {
					return err
				}
				_, err = rpb.NewJobSupervisorClient(cc).StartJob(ctx, &rpb.StartJobRequest{Job: j})
				return err
			})
		}
	}
}

// async runs one start or stop of a job at a time, and leaves the job busy
// for a short pause after a failure, so a failing node is not hammered.
// A success stays busy until the table changes the job's state: the
// supervisor reports it; a repeated call would be a no-op anyway.
func (s *jobSupervision) async(ctx context.Context, j *cpb.JobSubmission, call func(context.Context) error) {
	key := j.SubmissionId
	if j.StopRequested {
		key += "/stop"
	}
	s.mu.Lock()
	if s.busy[key] {
		s.mu.Unlock()
		return
	}
	s.busy[key] = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := call(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			lvl := zap.InfoLevel
			if status.Code(err) == codes.ResourceExhausted {
				lvl = zap.DebugLevel // waits for the node's resources: not news
			}
			s.h.log.Log(lvl, "job supervisor call failed; it will be retried", zap.String("job", j.SubmissionId),
				zap.String("node", j.NodeId), zap.Error(err))
			if status.Code(err) == codes.FailedPrecondition && !j.StopRequested {
				// The supervisor cannot run it (e.g. its working dir failed
				// to unpack): it reports the failure itself.
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(placeRetry):
			}
			s.mu.Lock()
			delete(s.busy, key)
			s.mu.Unlock()
		}
	}()
}

// pickNode chooses an alive node whose total resources fit the
// entrypoint: the one with most CPUs free by its last heartbeat (ties by
// node ID), so drivers spread. nil when none could ever run it.
func (s *jobSupervision) pickNode(j *cpb.JobSubmission, nodes map[string]*cpb.NodeInfo) *cpb.NodeInfo {
	want := JobRequirements(j)
	var fit []*cpb.NodeInfo
	for _, n := range nodes {
		if n.State == cpb.NodeState_NODE_ALIVE && fits(want, n.Resources) {
			fit = append(fit, n)
		}
	}
	if len(fit) == 0 {
		return nil
	}
	sort.Slice(fit, func(a, b int) bool { return fit[a].NodeId < fit[b].NodeId })
	best, bestCPU := fit[0], -1.0
	for i, n := range s.h.liveness.decorate(fit) {
		if n.Available == nil || !fits(want, n.Available) {
			continue
		}
		if cpu := n.Available["CPU"]; cpu > bestCPU {
			best, bestCPU = fit[i], cpu
		}
	}
	return best
}

func (s *jobSupervision) apply(ctx context.Context, t fsm.CommandType, body proto.Message) (bool, error) {
	r, err := s.h.applier.Apply(ctx, t, "", body)
	if err != nil {
		if ctx.Err() == nil {
			s.h.log.Warn("job command", zap.Stringer("command", t), zap.Error(err))
		}
		return false, err
	}
	return r.Flag, nil
}

// conn returns a cached connection to a raylet. It outlives leader terms:
// every head serves job logs from raylets.
func (s *jobSupervision) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cc := s.conns[addr]; cc != nil {
		return cc, nil
	}
	token := s.h.Token()
	cc, err := grpc.NewClient(addr, s.h.cfg.TLS.DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
	if err != nil {
		return nil, err
	}
	s.conns[addr] = cc
	return cc, nil
}

// close drops the cached connections (the head is closing).
func (s *jobSupervision) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cc := range s.conns {
		cc.Close()
	}
	s.conns = map[string]*grpc.ClientConn{}
}
