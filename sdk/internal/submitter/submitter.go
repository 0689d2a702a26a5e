// Package submitter is an owner's task submitter (Ray's
// NormalTaskSubmitter): it gets worker leases from raylets for each
// resource shape, pushes the owner's tasks to the leased workers, and takes
// back tasks pushed to a busy worker so that they run elsewhere.
//
// The rules that keep every CPU busy and no task behind another:
//   - The owner keeps asking for leases while tasks of a shape wait, queued
//     here or pushed behind a task that is stuck (below), bounded per shape
//     (MaxLeaseRequests, as Ray bounds pending lease requests); requests
//     that nothing needs any more are withdrawn (answered by the raylet,
//     never abandoned, so no grant is lost).
//   - A lease pipelines several tasks to its worker only when tasks of the
//     shape are short: the depth follows the run time the workers report,
//     so slow tasks go one per worker, and a lease whose running task has
//     run far longer than usual (stuck) gets nothing more.
//   - A lease with nothing to do steals the tasks another lease pushed and
//     its worker has not started (the worker gives back what it still has
//     queued): all of them from a stuck lease, half otherwise.
//
// The submitter owns its queues and leases under its own lock and talks to
// the rest of the owner through Handler; it never holds its lock while it
// calls the Handler or the network.
package submitter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// Handler is how the submitter reports what became of a task. It is called
// without the submitter's lock; it may call Submit again (a retry).
type Handler interface {
	// Finished: the worker of lease ran (its node, worker and pid)
	// answered for the task (res.Error is set when the task failed there,
	// or was cancelled).
	Finished(t *Task, res *pb.TaskResult, ran *pb.LeaseReply)
	// WorkerLost: the worker died (or its stream broke) while the task was
	// pushed to it, perhaps running.
	WorkerLost(t *Task, e *pb.TaskError)
	// Failed: the task never ran and never will from here: its shape is
	// infeasible, its job ended, or it was cancelled while queued.
	Failed(t *Task, e *pb.TaskError)
}

// Conns gives the clients of raylets and workers by address.
type Conns interface {
	Raylet(addr string) (pb.RayletClient, error)
	Worker(addr string) (pb.CoreWorkerClient, error)
}

// Config configures a Submitter. Zero tuning fields take the defaults.
type Config struct {
	JobID     string
	BinarySHA string
	// Owner is this process's CoreWorker address.
	Owner string
	// Home is the raylet asked first for every lease.
	Home    string
	Conns   Conns
	Handler Handler
	Log     *zap.Logger

	// MaxLeaseRequests bounds the lease requests in flight per shape.
	MaxLeaseRequests int
	// MaxBatch bounds the tasks pushed in one message.
	MaxBatch int
	// MaxInflight bounds the tasks pushed to one worker and not answered.
	MaxInflight int
	// Linger is how long an idle lease is kept for the next task.
	Linger time.Duration
	// PipelineTarget is how much work (by the shape's mean run time) a
	// lease keeps queued at its worker to hide the round trip.
	PipelineTarget time.Duration
	// StuckAfter is the least time a task must run before the tasks
	// pushed behind it are taken back at once (it is also at least 8
	// times the shape's mean run time).
	StuckAfter time.Duration
}

func (c *Config) defaults() {
	if c.MaxLeaseRequests <= 0 {
		c.MaxLeaseRequests = 8
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 128
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 4 * c.MaxBatch
	}
	if c.Linger <= 0 {
		c.Linger = 5 * time.Millisecond
	}
	if c.PipelineTarget <= 0 {
		c.PipelineTarget = 2 * time.Millisecond
	}
	if c.StuckAfter <= 0 {
		c.StuckAfter = 2 * time.Millisecond
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
}

// Task is one task on its way to a worker.
type Task struct {
	Spec *pb.TaskSpec
	ID   ids.TaskID
	// Res is the task's resource shape; a runtime env (the spec's
	// runtime_env_*) is part of it: a worker runs in one env.
	Res resources.Set
	// Data is the owner's own record of the task.
	Data any

	// Guarded by Submitter.mu.
	sh        *shape
	l         *lease // the lease it was pushed to; nil while queued
	cancelled bool
}

// CancelOutcome says what Cancel did.
type CancelOutcome int

const (
	// NotHere: the task is neither queued nor pushed (finished, or not
	// submitted yet).
	NotHere CancelOutcome = iota
	// Removed: it was queued; it will never run and Handler.Failed was
	// called with a cancelled error.
	Removed
	// Asked: it was pushed to a worker, which was asked to cancel it; its
	// answer comes through Handler.Finished (or WorkerLost).
	Asked
)

// Submitter pushes one owner's tasks to leased workers.
type Submitter struct {
	cfg Config

	mu      sync.Mutex
	shapes  map[string]*shape
	tasks   map[ids.TaskID]*Task // queued or pushed
	closed  bool
	nextReq uint64
	// settled is signalled when a lease request is answered (Close waits).
	settled chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// shape holds the tasks of one resource shape and the leases that run them.
type shape struct {
	key     string
	res     resources.Set
	envVars map[string]string
	envDir  string
	// strategy is the shape's scheduling strategy (part of its key).
	strategy *cpb.SchedulingStrategy
	pending  []*Task // next first; stolen tasks go back to the front
	leases   []*lease
	// requests counts the lease requests in flight and not withdrawn;
	// reqs are all those in flight.
	requests int
	reqs     map[*leaseRequest]struct{}
	// meanRun is a moving average of the run times workers report.
	meanRun time.Duration
	known   bool
}

// leaseRequest is one lease request in flight: where it waits now, and
// whether the owner withdrew it (nothing needs it any more). A withdrawn
// request is answered by its raylet (or granted first: the lease is then
// used or returned), never abandoned, so no grant is lost.
type leaseRequest struct {
	id        string
	addr      string
	withdrawn bool
}

// lease is a worker leased for one shape.
type lease struct {
	sh    *shape
	reply *pb.LeaseReply
	// inflight are the tasks pushed and not answered, in push order; the
	// first one is running (or about to) since headSince.
	inflight  []*Task
	headSince time.Time
	lastBusy  time.Time
	// Control messages the lease's loop sends next: cancels, and a steal
	// request (stealing: one is outstanding).
	cancels  []*pb.CancelTask
	stealAsk int32
	stealing bool
	// A force cancel of its running task dooms a lease: nothing more is
	// pushed, and once the worker confirms the cancel (after giving back
	// what it had queued) it is killed.
	doomed ids.TaskID
	kill   bool
	wake   chan struct{}
	// stuckNoted: the running task's lateness was acted on (leases asked
	// for what waits behind it); reset when the head changes.
	stuckNoted bool
}

// New returns a submitter; Close stops it.
func New(cfg Config) *Submitter {
	cfg.defaults()
	s := &Submitter{cfg: cfg, shapes: map[string]*shape{}, tasks: map[ids.TaskID]*Task{}, settled: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Close stops every lease and request and waits for them. Tasks still
// queued or pushed are abandoned (the owner is going away). Requests are
// withdrawn first, for a while, so that no grant is lost on the way;
// every lease held is returned.
func (s *Submitter) Close() {
	s.mu.Lock()
	s.closed = true
	for _, sh := range s.shapes {
		s.withdrawLocked(sh)
		s.kickLocked(sh)
	}
	s.mu.Unlock()
	deadline := time.NewTimer(2 * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		n := 0
		for _, sh := range s.shapes {
			n += len(sh.reqs)
		}
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-s.settled:
			continue
		case <-deadline.C:
		}
		break
	}
	s.cancel()
	s.wg.Wait()
}

// Submit queues a task whose arguments are resolved.
func (s *Submitter) Submit(t *Task) {
	key := t.Res.Key() + envKey(t.Spec) + strategyKey(t.Spec.Strategy)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	sh := s.shapes[key]
	if sh == nil {
		sh = &shape{key: key, res: t.Res, envVars: t.Spec.RuntimeEnvVars, envDir: t.Spec.RuntimeEnvWorkingDir, strategy: t.Spec.Strategy}
		s.shapes[key] = sh
	}
	// One set per shape: a queued task keeps no map of its own.
	t.Res = sh.res
	t.sh, t.l = sh, nil
	s.tasks[t.ID] = t
	sh.pending = append(sh.pending, t)
	s.kickLocked(sh)
	s.maybeLeaseLocked(sh)
	s.mu.Unlock()
}

// Cancel cancels a queued or pushed task; see CancelOutcome.
func (s *Submitter) Cancel(id ids.TaskID, force, recursive bool) CancelOutcome {
	s.mu.Lock()
	t := s.tasks[id]
	if t == nil {
		s.mu.Unlock()
		return NotHere
	}
	if t.l == nil {
		sh := t.sh
		for i, x := range sh.pending {
			if x == t {
				sh.pending = append(sh.pending[:i:i], sh.pending[i+1:]...)
				break
			}
		}
		delete(s.tasks, id)
		s.maybeLeaseLocked(sh) // its lease request may be needed no more
		s.mu.Unlock()
		s.cfg.Handler.Failed(t, CancelledError(t.Spec.Function, "while it waited for a worker"))
		return Removed
	}
	if !t.cancelled {
		t.cancelled = true
		l := t.l
		l.cancels = append(l.cancels, &pb.CancelTask{TaskId: id[:], Force: force, Recursive: recursive})
		if force {
			// Nothing more goes to this worker until it answers: if the
			// task runs there, the answer says to kill it.
			l.doomed = id
		}
		kick(l)
	}
	s.mu.Unlock()
	return Asked
}

// envKey names a spec's runtime env in its shape's key: tasks of different
// envs never share a lease.
func envKey(spec *pb.TaskSpec) string {
	if len(spec.RuntimeEnvVars) == 0 && spec.RuntimeEnvWorkingDir == "" {
		return ""
	}
	kv := make([]string, 0, len(spec.RuntimeEnvVars))
	for k, v := range spec.RuntimeEnvVars {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return " env{" + strings.Join(kv, ",") + ";wd=" + spec.RuntimeEnvWorkingDir + "}"
}

// strategyKey names a spec's scheduling strategy in its shape's key: tasks
// of different strategies never share a lease (a SPREAD task must not run
// on a worker leased for a task pinned to one node, nor a task of one
// bundle on another's).
func strategyKey(s *cpb.SchedulingStrategy) string {
	if s == nil || s.Kind == cpb.SchedulingStrategy_DEFAULT {
		return ""
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	return fmt.Sprintf(" strategy{%s %x}", s.Kind, b)
}

// CancelledError is the error of a cancelled task.
func CancelledError(function, when string) *pb.TaskError {
	return &pb.TaskError{Kind: pb.ErrorKind_ERROR_TASK_CANCELLED, Function: function, Message: "task cancelled " + when}
}

// ShapeStats describes one shape's queue.
type ShapeStats struct {
	Shape    string
	Queued   int // waiting for a worker here
	Pushed   int // pushed to workers, running or behind a running task
	Leases   int
	Requests int
	MeanRun  time.Duration
}

// Stats lists every shape with tasks or leases.
func (s *Submitter) Stats() []ShapeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ShapeStats
	for _, sh := range s.shapes {
		st := ShapeStats{Shape: sh.key, Queued: len(sh.pending), Leases: len(sh.leases), Requests: sh.requests, MeanRun: sh.meanRun}
		for _, l := range sh.leases {
			st.Pushed += len(l.inflight)
		}
		if st.Queued+st.Pushed+st.Leases+st.Requests > 0 {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Shape < out[j].Shape })
	return out
}

// ---- leases --------------------------------------------------------------------

// waitingLocked counts the shape's tasks that wait: queued here, or pushed
// behind a running task (the owner's backlog, for the raylet's status).
func (sh *shape) waitingLocked() int {
	n := len(sh.pending)
	for _, l := range sh.leases {
		n += max(0, len(l.inflight)-1)
	}
	return n
}

// needLocked counts the shape's tasks that another lease would start
// sooner: queued here, or pushed behind a stuck task. Tasks pipelined
// behind a task that runs as long as usual are about PipelineTarget of
// work: not worth a lease (a lease request per pipelined task would cost
// a stream of trivial tasks more than it gains).
func (s *Submitter) needLocked(sh *shape, now time.Time) int {
	n := len(sh.pending)
	for _, l := range sh.leases {
		if s.stuckLocked(l, now) {
			n += len(l.inflight) - 1
		}
	}
	return n
}

// idleLocked says whether the shape has no task queued or pushed.
func (sh *shape) idleLocked() bool {
	if len(sh.pending) > 0 {
		return false
	}
	for _, l := range sh.leases {
		if len(l.inflight) > 0 {
			return false
		}
	}
	return true
}

// maybeLeaseLocked asks for leases while tasks wait that the idle leases
// will not take, and withdraws the requests nothing needs any more.
func (s *Submitter) maybeLeaseLocked(sh *shape) {
	if s.closed {
		return
	}
	if sh.requests >= s.cfg.MaxLeaseRequests && len(sh.pending) > 0 {
		return // as many requests as allowed, and still needed
	}
	need := s.needLocked(sh, time.Now())
	for _, l := range sh.leases {
		if len(l.inflight) == 0 {
			need-- // an idle lease takes the next task at once
		}
	}
	if need <= 0 {
		if sh.requests > 0 && sh.idleLocked() {
			// The work is done, not just balanced for a moment: a spilled
			// request counts against its target node until it is used.
			s.withdrawLocked(sh)
		}
		return
	}
	for sh.requests < min(s.cfg.MaxLeaseRequests, need) {
		s.nextReq++
		r := &leaseRequest{id: strconv.FormatUint(s.nextReq, 36), addr: s.cfg.Home}
		if sh.reqs == nil {
			sh.reqs = map[*leaseRequest]struct{}{}
		}
		sh.reqs[r] = struct{}{}
		sh.requests++
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.leaseAndRun(sh, r)
		}()
	}
}

// withdrawLocked withdraws every request of the shape in flight: each
// raylet holding one answers it.
func (s *Submitter) withdrawLocked(sh *shape) {
	byAddr := map[string][]string{}
	for r := range sh.reqs {
		if !r.withdrawn {
			r.withdrawn = true
			sh.requests--
			byAddr[r.addr] = append(byAddr[r.addr], r.id)
		}
	}
	for addr, reqIDs := range byAddr {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			rc, err := s.cfg.Conns.Raylet(addr)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			defer cancel()
			if _, err := rc.CancelLeaseRequests(ctx, &pb.CancelLeaseRequestsRequest{OwnerAddress: s.cfg.Owner, RequestIds: reqIDs}); err != nil {
				s.cfg.Log.Debug("withdraw lease requests", zap.String("raylet", addr), zap.Error(err))
			}
		}()
	}
}

func kick(l *lease) {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// kickLocked wakes every lease of the shape: there is work, or something
// to steal.
func (s *Submitter) kickLocked(sh *shape) {
	for _, l := range sh.leases {
		kick(l)
	}
}

// leaseAndRun gets a lease (following spillbacks) and runs tasks on it
// until it is idle.
func (s *Submitter) leaseAndRun(sh *shape, r *leaseRequest) {
	ctx := s.ctx
	addr := s.cfg.Home
	backoff := 10 * time.Millisecond
	var reply *pb.LeaseReply
	// settle ends the request's accounting once it is answered.
	settle := func() {
		delete(sh.reqs, r)
		if !r.withdrawn {
			r.withdrawn = true
			sh.requests--
		}
		select {
		case s.settled <- struct{}{}:
		default:
		}
	}
	done := func() {
		s.mu.Lock()
		settle()
		s.maybeLeaseLocked(sh)
		s.mu.Unlock()
	}
	// send asks addr; false when the request was withdrawn meanwhile.
	send := func(req *pb.LeaseRequest) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if r.withdrawn {
			return false
		}
		r.addr = addr
		req.Backlog = int32(sh.waitingLocked())
		return true
	}
	for {
		req := &pb.LeaseRequest{JobId: s.cfg.JobID, BinarySha256: s.cfg.BinarySHA, Resources: sh.res,
			OwnerAddress: s.cfg.Owner, Shape: sh.key, RequestId: r.id,
			RuntimeEnvVars: sh.envVars, RuntimeEnvWorkingDir: sh.envDir, Strategy: sh.strategy}
		var err error
		withdrawn := false
		for hops := int32(0); ; hops++ {
			req.Hops = hops
			if !send(req) {
				withdrawn = true
				break
			}
			var rc pb.RayletClient
			if rc, err = s.cfg.Conns.Raylet(addr); err == nil {
				reply, err = rc.RequestWorkerLease(ctx, req)
				err = rpcerr.FromStatus(err) // the raylet's sentinels, for errors.Is
			}
			if err != nil || reply.SpillAddress == "" {
				break
			}
			addr = reply.SpillAddress
		}
		if withdrawn || ctx.Err() != nil || (err == nil && reply.Withdrawn) {
			done()
			return
		}
		if err == nil {
			break
		}
		switch code := rpcerr.Code(err); {
		case code == codes.InvalidArgument || status.Code(err) == codes.InvalidArgument:
			s.failShape(sh, &pb.TaskError{Kind: pb.ErrorKind_ERROR_INFEASIBLE, Message: err.Error()})
			done()
			return
		case errors.Is(err, raylet.ErrUnschedulable):
			s.failShape(sh, &pb.TaskError{Kind: pb.ErrorKind_ERROR_UNSCHEDULABLE, Message: err.Error()})
			done()
			return
		case errors.Is(err, raylet.ErrRuntimeEnvSetup):
			s.failShape(sh, &pb.TaskError{Kind: pb.ErrorKind_ERROR_RUNTIME_ENV_SETUP, Message: err.Error()})
			done()
			return
		case errors.Is(err, raylet.ErrJobEnded):
			s.failShape(sh, &pb.TaskError{Kind: pb.ErrorKind_ERROR_WORKER_CRASHED, Message: err.Error()})
			done()
			return
		}
		if addr == s.cfg.Home {
			s.cfg.Log.Warn("lease request failed; retrying", zap.String("raylet", addr), zap.Error(err))
		} else {
			// A spillback target that went away: start again at home.
			s.cfg.Log.Debug("lease request at a spillback target failed", zap.String("raylet", addr), zap.Error(err))
			addr = s.cfg.Home
		}
		select {
		case <-ctx.Done():
			done()
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	l := &lease{sh: sh, reply: reply, wake: make(chan struct{}, 1), lastBusy: time.Now()}
	s.mu.Lock()
	settle()
	sh.leases = append(sh.leases, l)
	s.mu.Unlock()
	failed := s.runLease(l)
	s.mu.Lock()
	for i, x := range sh.leases {
		if x == l {
			sh.leases = append(sh.leases[:i:i], sh.leases[i+1:]...)
			break
		}
	}
	s.maybeLeaseLocked(sh)
	s.mu.Unlock()
	if rc, err := s.cfg.Conns.Raylet(addr); err == nil {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = rc.ReturnWorkerLease(rctx, &pb.ReturnLeaseRequest{LeaseId: reply.LeaseId, WorkerFailed: failed})
		cancel()
	}
}

// failShape fails every queued task of a shape (its leases cannot be had).
func (s *Submitter) failShape(sh *shape, e *pb.TaskError) {
	s.mu.Lock()
	ts := sh.pending
	sh.pending = nil
	for _, t := range ts {
		delete(s.tasks, t.ID)
	}
	s.mu.Unlock()
	for _, t := range ts {
		s.cfg.Handler.Failed(t, e)
	}
}

// depthLocked is how many tasks a lease may have pushed and unanswered.
func (s *Submitter) depthLocked(sh *shape) int {
	if !sh.known {
		return 1 // learn the run time first
	}
	if sh.meanRun <= 0 {
		return s.cfg.MaxInflight
	}
	d := math.Ceil(float64(s.cfg.PipelineTarget) / float64(sh.meanRun))
	return int(min(max(d, 1), float64(s.cfg.MaxInflight)))
}

func (s *Submitter) stuckAfterLocked(sh *shape) time.Duration {
	return max(s.cfg.StuckAfter, 8*sh.meanRun)
}

// stuckLocked says whether l's running task has run so long that what
// waits behind it should go elsewhere.
func (s *Submitter) stuckLocked(l *lease, now time.Time) bool {
	return len(l.inflight) > 0 && now.Sub(l.headSince) > s.stuckAfterLocked(l.sh)
}

// takeLocked picks the tasks l pushes next.
func (s *Submitter) takeLocked(l *lease, now time.Time) []*Task {
	sh := l.sh
	if len(sh.pending) == 0 || l.doomed != (ids.TaskID{}) || s.stuckLocked(l, now) {
		return nil
	}
	room := min(s.depthLocked(sh), s.cfg.MaxInflight) - len(l.inflight)
	// At most a fair share of what waits among the leases held, so that a
	// burst spreads over every worker leased. (Requests do not count: most
	// may never be granted, and a lease granted later takes its share of
	// what is still queued, or steals.)
	leases := max(1, len(sh.leases))
	share := (len(sh.pending)+len(l.inflight)+leases-1)/leases - len(l.inflight)
	n := min(room, s.cfg.MaxBatch, len(sh.pending), share)
	if n <= 0 {
		return nil
	}
	batch := sh.pending[:n:n]
	sh.pending = sh.pending[n:]
	if len(l.inflight) == 0 {
		l.headSince, l.stuckNoted = now, false
	}
	for _, t := range batch {
		t.l = l
	}
	l.inflight = append(l.inflight, batch...)
	return batch
}

// victimLocked picks a lease of l's shape to steal from: the one with the
// most tasks waiting behind its running task, when stealing pays (it is
// stuck, or what waits there is worth more than a round trip). It
// returns how many to steal, or when to look again (0: nothing to wait
// for).
func (s *Submitter) victimLocked(l *lease, now time.Time) (v *lease, n int32, retry time.Duration) {
	sh := l.sh
	var best *lease
	for _, x := range sh.leases {
		if x == l || x.stealing || x.stealAsk > 0 || len(x.inflight) < 2 || x.doomed != (ids.TaskID{}) {
			continue
		}
		if best == nil || len(x.inflight) > len(best.inflight) {
			best = x
		}
	}
	if best == nil {
		return nil, 0, 0
	}
	waiting := len(best.inflight) - 1
	if s.stuckLocked(best, now) {
		return best, int32(waiting), 0
	}
	if time.Duration(waiting)*sh.meanRun >= 2*s.cfg.PipelineTarget {
		return best, int32((waiting + 1) / 2), 0
	}
	return nil, 0, s.stuckAfterLocked(sh) - now.Sub(best.headSince) + time.Millisecond
}

// runLease pushes tasks to a leased worker and handles its answers until
// the lease has been idle for Linger; it reports whether the worker
// failed.
func (s *Submitter) runLease(l *lease) (workerFailed bool) {
	wc, err := s.cfg.Conns.Worker(l.reply.WorkerAddress)
	if err != nil {
		s.lostAll(l, err)
		return true
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The lease's grant goes with the stream: its tasks see it (and
	// their GPUs) in the worker.
	stream, err := wc.PushTasks(resources.Grant{Resources: l.sh.res, GPUs: l.reply.GpuIds}.OutgoingContext(ctx))
	if err != nil {
		s.lostAll(l, err)
		return true
	}
	recvDone := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		recvDone <- s.receive(l, stream)
	}()
	// crashed ends the lease after its stream broke; the receiver has
	// returned (or will, the stream being cancelled).
	crashed := func(err error) bool {
		cancel()
		if err == nil {
			err = <-recvDone
		} else {
			<-recvDone
		}
		if s.ctx.Err() != nil {
			return false
		}
		s.lostAll(l, err)
		return true
	}
	timer := time.NewTimer(s.cfg.Linger)
	defer timer.Stop()
	for {
		now := time.Now()
		s.mu.Lock()
		if l.kill {
			s.mu.Unlock()
			return crashed(errors.New("killed to force a cancel"))
		}
		if s.closed {
			// The owner is going away: its tasks are abandoned and the
			// lease goes back; a worker still running one of them is
			// killed rather than handed to someone else busy.
			busy := len(l.inflight) > 0
			s.mu.Unlock()
			return busy
		}
		msg := &pb.PushTasksRequest{}
		if len(l.cancels) > 0 {
			msg.Cancel, l.cancels = l.cancels, nil
		}
		if l.stealAsk > 0 && !l.stealing {
			msg.Steal, l.stealAsk, l.stealing = l.stealAsk, 0, true
		}
		batch := s.takeLocked(l, now)
		wait := s.cfg.Linger
		idleDone := false
		if len(l.inflight) > 1 {
			// Tasks wait behind the running one: once it has run long
			// enough to be stuck, they need another lease (and thieves).
			if until := l.headSince.Add(s.stuckAfterLocked(l.sh)).Sub(now); until > 0 {
				wait = min(wait, until+time.Millisecond)
			} else if !l.stuckNoted {
				l.stuckNoted = true
				s.maybeLeaseLocked(l.sh)
				s.kickLocked(l.sh)
			}
		}
		if len(batch) > 0 || len(l.inflight) > 0 {
			l.lastBusy = now
		} else if len(l.sh.pending) == 0 && l.doomed == (ids.TaskID{}) {
			v, n, retry := s.victimLocked(l, now)
			switch {
			case v != nil:
				v.stealAsk = n
				kick(v)
				l.lastBusy = now
			case retry > 0:
				wait = min(retry, s.cfg.Linger)
				l.lastBusy = now
			case now.Sub(l.lastBusy) >= s.cfg.Linger && !s.stealPendingLocked(l.sh):
				idleDone = true
			default:
				wait = s.cfg.Linger - now.Sub(l.lastBusy)
			}
		}
		if idleDone {
			// Leave the shape's lease list now, under the lock, so no
			// thief or pusher picks this lease any more.
			s.dropLeaseLocked(l)
		}
		s.mu.Unlock()
		if idleDone {
			_ = stream.CloseSend()
			err := <-recvDone
			if err != nil && err != io.EOF {
				s.lostAll(l, err)
				return true
			}
			s.lostAll(l, errors.New("the worker closed the stream with tasks unanswered"))
			return false
		}
		if len(batch) > 0 {
			msg.Tasks = make([]*pb.TaskSpec, len(batch))
			for i, t := range batch {
				msg.Tasks[i] = t.Spec
			}
		}
		if len(msg.Tasks) > 0 || len(msg.Cancel) > 0 || msg.Steal > 0 {
			if err := stream.Send(msg); err != nil {
				return crashed(nil)
			}
			continue
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(wait, 100*time.Microsecond))
		select {
		case <-l.wake:
		case err := <-recvDone:
			recvDone <- err
			return crashed(nil)
		case <-timer.C:
		case <-s.ctx.Done():
			return false
		}
	}
}

// stealPendingLocked says whether a steal is asked or outstanding in the
// shape: its tasks come back to the queue soon.
func (s *Submitter) stealPendingLocked(sh *shape) bool {
	for _, l := range sh.leases {
		if l.stealing || l.stealAsk > 0 {
			return true
		}
	}
	return false
}

func (s *Submitter) dropLeaseLocked(l *lease) {
	sh := l.sh
	for i, x := range sh.leases {
		if x == l {
			sh.leases = append(sh.leases[:i:i], sh.leases[i+1:]...)
			return
		}
	}
}

// receive handles a lease's answers until its stream ends.
func (s *Submitter) receive(l *lease, stream pb.CoreWorker_PushTasksClient) error {
	sh := l.sh
	for {
		reply, err := stream.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		done := make([]*Task, 0, len(reply.Results))
		results := make([]*pb.TaskResult, 0, len(reply.Results))
		s.mu.Lock()
		for _, res := range reply.Results {
			t := l.removeLocked(res.TaskId, now)
			if t == nil {
				continue // not pushed here (a protocol slip): nothing to do
			}
			delete(s.tasks, t.ID)
			t.l = nil
			done = append(done, t)
			results = append(results, res)
			if res.KillWorker {
				l.kill = true
				kick(l)
			} else if l.doomed == t.ID {
				l.doomed = ids.TaskID{} // it finished, or had not started
			}
			if res.Error == nil {
				run := time.Duration(res.RunNanos)
				if !sh.known {
					sh.meanRun, sh.known = run, true
				} else {
					sh.meanRun = (4*sh.meanRun + run) / 5
				}
			}
		}
		if len(reply.Stolen) > 0 {
			var back []*Task
			for _, id := range reply.Stolen {
				if t := l.removeLocked(id, now); t != nil {
					t.l = nil
					if t.cancelled {
						// Cancelled on its way back: it never runs.
						delete(s.tasks, t.ID)
						done = append(done, t)
						results = append(results, &pb.TaskResult{TaskId: id, Error: CancelledError(t.Spec.Function, "before it started")})
						continue
					}
					back = append(back, t)
				}
			}
			sh.pending = append(back, sh.pending...)
		}
		if reply.StealAnswered {
			l.stealing = false
		}
		if len(sh.pending) > 0 || len(reply.Stolen) > 0 {
			s.kickLocked(sh)
		}
		s.maybeLeaseLocked(sh)
		s.mu.Unlock()
		for i, t := range done {
			s.cfg.Handler.Finished(t, results[i], l.reply)
		}
	}
}

// removeLocked takes a task out of l's in-flight list by ID.
func (l *lease) removeLocked(id []byte, now time.Time) *Task {
	tid, err := ids.TaskFromBytes(id)
	if err != nil {
		return nil
	}
	for i, t := range l.inflight {
		if t.ID == tid {
			if i == 0 {
				l.inflight[0] = nil
				l.inflight = l.inflight[1:]
				l.headSince, l.stuckNoted = now, false
			} else {
				l.inflight = append(l.inflight[:i:i], l.inflight[i+1:]...)
			}
			return t
		}
	}
	return nil
}

// lostAll hands every task still pushed to l back to the owner as lost
// with its worker.
func (s *Submitter) lostAll(l *lease, err error) {
	s.mu.Lock()
	lost := l.inflight
	l.inflight = nil
	for _, t := range lost {
		delete(s.tasks, t.ID)
		t.l = nil
	}
	s.dropLeaseLocked(l)
	s.maybeLeaseLocked(l.sh)
	s.mu.Unlock()
	if len(lost) == 0 {
		return
	}
	r := l.reply
	s.cfg.Log.Info("leased worker failed; its tasks go back to their owner", zap.String("worker", r.WorkerId),
		zap.Int32("pid", r.WorkerPid), zap.Int("tasks", len(lost)), zap.Error(err))
	e := &pb.TaskError{Kind: pb.ErrorKind_ERROR_WORKER_CRASHED,
		Message: fmt.Sprintf("worker %s (pid %d) on node %s died: %v", r.WorkerId, r.WorkerPid, r.NodeId, errOr(err))}
	for _, t := range lost {
		s.cfg.Handler.WorkerLost(t, e)
	}
}

func errOr(err error) error {
	if err == nil {
		return errors.New("reply incomplete")
	}
	return err
}
