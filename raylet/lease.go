package raylet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// leaseReq is a lease request waiting in the queue.
type leaseReq struct {
	req        *pb.LeaseRequest
	res        resources.Set
	done       chan leaseResult // buffered; gets exactly one result
	once       sync.Once
	cancelled  bool // under Raylet.mu
	infeasible bool // under Raylet.mu
	arrived    time.Time
	gpus       []int32 // assigned at grant (gpus.go), under Raylet.mu
	bundle     *bundle // the placement-group pool it was granted from
}

type leaseResult struct {
	reply *pb.LeaseReply
	err   error
}

func (q *leaseReq) finish(res leaseResult) { q.once.Do(func() { q.done <- res }) }

// lease is a worker granted to an owner.
type lease struct {
	id    string
	jobID string
	owner string
	res   resources.Set
	gpus  []int32 // the GPU indices it holds (gpus.go)
	// bundle is the placement-group pool it holds resources of (nil: the
	// node's free pool).
	bundle  *bundle
	worker  *workerpool.Worker
	blocked bool // its CPUs are lent back while it waits in Get
	// actorID is set for an actor's dedicated worker: its death is
	// reported to the control plane, which restarts or buries the actor.
	actorID string
	granted time.Time
	// For `manta status`: how many of the owner's tasks of its shape
	// waited when it asked.
	backlog int32
}

func (r *Raylet) RequestWorkerLease(ctx context.Context, req *pb.LeaseRequest) (*pb.LeaseReply, error) {
	if req.JobId == "" {
		return nil, fmt.Errorf("%w: no job ID", ErrBadLease)
	}
	if err := resources.Validate(req.Resources); err != nil {
		return nil, err
	}
	r.metrics.leaseRequests.Inc()
	q := &leaseReq{req: req, res: resources.Set(req.Resources).Clone(), done: make(chan leaseResult, 1), arrived: time.Now()}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	r.queue = append(r.queue, q)
	r.mu.Unlock()
	r.wake()
	select {
	case res := <-q.done:
		return res.reply, res.err
	case <-ctx.Done():
		r.mu.Lock()
		q.cancelled = true
		r.removeQueuedLocked(q)
		r.mu.Unlock()
		select {
		case res := <-q.done:
			if res.reply != nil && res.reply.LeaseId != "" {
				r.releaseLease(res.reply.LeaseId, false)
			}
		default:
		}
		return nil, ctx.Err()
	}
}

// CancelLeaseRequests answers an owner's named requests that still wait
// here as withdrawn; granted ones are the owner's to return.
func (r *Raylet) CancelLeaseRequests(_ context.Context, req *pb.CancelLeaseRequestsRequest) (*pb.CancelLeaseRequestsReply, error) {
	want := make(map[string]bool, len(req.RequestIds))
	for _, id := range req.RequestIds {
		want[id] = true
	}
	r.mu.Lock()
	keep := r.queue[:0:0]
	var gone []*leaseReq
	for _, q := range r.queue {
		if q.req.OwnerAddress == req.OwnerAddress && q.req.RequestId != "" && want[q.req.RequestId] {
			q.cancelled = true
			gone = append(gone, q)
			continue
		}
		keep = append(keep, q)
	}
	r.queue = keep
	r.mu.Unlock()
	for _, q := range gone {
		q.finish(leaseResult{reply: &pb.LeaseReply{Withdrawn: true}})
	}
	return &pb.CancelLeaseRequestsReply{}, nil
}

func (r *Raylet) removeQueuedLocked(q *leaseReq) {
	for i, x := range r.queue {
		if x == q {
			r.queue = append(r.queue[:i:i], r.queue[i+1:]...)
			return
		}
	}
}

func (r *Raylet) ReturnWorkerLease(_ context.Context, req *pb.ReturnLeaseRequest) (*pb.ReturnLeaseReply, error) {
	r.releaseLease(req.LeaseId, req.WorkerFailed)
	return &pb.ReturnLeaseReply{}, nil
}

// releaseLease ends a lease: its resources come back, its worker goes back
// to the pool (or is killed when it failed).
func (r *Raylet) releaseLease(id string, workerFailed bool) {
	r.mu.Lock()
	l := r.leases[id]
	if l == nil {
		r.mu.Unlock()
		return
	}
	r.dropLeaseLocked(l)
	r.mu.Unlock()
	if workerFailed {
		r.pool.Kill(l.worker)
	} else {
		r.pool.Push(l.worker)
	}
	r.wake()
}

func (r *Raylet) dropLeaseLocked(l *lease) {
	delete(r.leases, l.id)
	delete(r.byWorker, l.worker.ID)
	back := l.res.Clone()
	if l.blocked {
		back[resources.CPU] = 0 // already lent back
	}
	r.poolLocked(l.bundle).Add(back)
	r.gpus.put(l.gpus)
}

// workerExited is the pool's report of a dead worker process: its lease
// ends (the owner sees its push fail and retries the task).
func (r *Raylet) workerExited(w *workerpool.Worker) {
	r.mu.Lock()
	l := r.byWorker[w.ID]
	if l != nil {
		r.log.Info("leased worker exited", zap.String("worker", w.ID), zap.Int("pid", w.PID), zap.String("lease", l.id))
		r.dropLeaseLocked(l)
	}
	closed := r.closed
	if l != nil && l.actorID != "" && !closed {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.reportActorFailure(l.actorID, w, false)
		}()
	}
	r.mu.Unlock()
	r.wake()
}

func (r *Raylet) NotifyBlocked(_ context.Context, req *pb.NotifyBlockedRequest) (*pb.NotifyBlockedReply, error) {
	r.mu.Lock()
	l := r.byWorker[req.WorkerId]
	if l != nil && l.blocked != req.Blocked {
		cpu := l.res[resources.CPU]
		pool := r.poolLocked(l.bundle)
		if req.Blocked {
			pool[resources.CPU] = resources.Round(pool[resources.CPU] + cpu)
		} else {
			pool[resources.CPU] = resources.Round(pool[resources.CPU] - cpu)
		}
		l.blocked = req.Blocked
	}
	r.mu.Unlock()
	if req.Blocked {
		r.wake()
	}
	return &pb.NotifyBlockedReply{}, nil
}

// jobEnded kills a finished job's workers and drops its queued requests.
func (r *Raylet) jobEnded(jobID, why string) {
	r.mu.Lock()
	var keep []*leaseReq
	for _, q := range r.queue {
		if q.req.JobId == jobID {
			q.finish(leaseResult{err: fmt.Errorf("%w: %s", ErrJobEnded, why)})
			continue
		}
		keep = append(keep, q)
	}
	r.queue = keep
	r.mu.Unlock()
	if n := r.pool.KillJob(jobID); n > 0 {
		r.log.Info("killed the workers of an ended job", zap.String("job", jobID), zap.Int("workers", n), zap.String("why", why))
	}
}

// poolLocked is where a grant from bundle b takes its resources: the
// bundle's pool, or the node's free pool.
func (r *Raylet) poolLocked(b *bundle) resources.Set {
	if b != nil {
		return b.avail
	}
	return r.avail
}

func (r *Raylet) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// scheduleLoop runs the scheduler when woken (a request, freed resources,
// a new view) and every 100ms, so queued requests see other nodes free up.
func (r *Raylet) scheduleLoop() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
		}
		r.schedule()
	}
}

// schedule decides every queued request: grant here, spill to another node,
// keep waiting, or wait as infeasible.
func (r *Raylet) schedule() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	keep := r.queue[:0:0]
	for _, q := range r.queue {
		p := r.placeLocked(q)
		switch p.kind {
		case placeLocal:
			r.grantLocked(q, p.bundle)
		case placeSpill:
			r.spillLocked(q, p)
		case placeFail:
			r.metrics.leaseFailures.Inc()
			r.log.Info("lease request fails: its scheduling strategy cannot be met", zap.String("job", q.req.JobId), zap.Error(p.err))
			q.finish(leaseResult{err: p.err})
		case placeInfeasible:
			if !q.infeasible {
				q.infeasible = true
				r.metrics.leaseInfeasible.Inc()
				r.log.Warn("infeasible lease request: no live node has the resources; it waits for one to join",
					zap.String("job", q.req.JobId), zap.String("resources", q.res.Key()))
			}
			keep = append(keep, q)
		default:
			keep = append(keep, q)
		}
	}
	r.queue = keep
}

func (r *Raylet) spillLocked(q *leaseReq, p placement) {
	n := p.node
	if !p.spillAny {
		n.avail.Sub(q.res) // until the next view refresh
	}
	r.metrics.leaseSpillbacks.Inc()
	if q.infeasible {
		r.log.Info("infeasible lease request found a node", zap.String("node", n.id), zap.String("resources", q.res.Key()))
	}
	q.finish(leaseResult{reply: &pb.LeaseReply{SpillNodeId: n.id, SpillAddress: n.address}})
}

// grantLocked takes the resources and hands the request to a goroutine
// that finds it a worker (an idle one, or a new process).
func (r *Raylet) grantLocked(q *leaseReq, b *bundle) {
	q.bundle = b
	r.poolLocked(b).Sub(q.res)
	if r.gpus == nil {
		r.gpus = newGPUSlots(r.total)
	}
	q.gpus = r.gpus.take(q.res[resources.GPU])
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.grant(q)
	}()
}

func (r *Raylet) grant(q *leaseReq) {
	fail := func(err error) {
		r.metrics.leaseFailures.Inc()
		r.mu.Lock()
		r.poolLocked(q.bundle).Add(q.res)
		r.gpus.put(q.gpus)
		r.mu.Unlock()
		q.finish(leaseResult{err: err})
		r.wake()
	}
	binary := r.cfg.LocalBinary
	if q.req.BinarySha256 != "" {
		p, err := r.arts.Path(r.ctx, q.req.BinarySha256)
		if err != nil {
			fail(fmt.Errorf("%w: fetch the job's binary: %v", ErrWorkerStart, err))
			return
		}
		binary = p
	}
	if binary == "" {
		fail(fmt.Errorf("%w: the job names no binary and this raylet has no local one", ErrWorkerStart))
		return
	}
	env, err := r.leaseEnv(r.ctx, q.req)
	if err != nil {
		if !errors.Is(err, ErrRuntimeEnvSetup) {
			err = fmt.Errorf("%w: %v", ErrWorkerStart, err)
		}
		fail(err)
		return
	}
	w, err := r.pool.PopEnv(r.ctx, q.req.JobId, binary, q.req.BinarySha256, env)
	if err != nil {
		fail(fmt.Errorf("%w: %v", ErrWorkerStart, err))
		return
	}
	if q.req.ActorId != "" && env.Key() == "" {
		// An actor's worker is dedicated to it and never comes back: warm
		// the job's next ones, as Ray prestarts workers.
		r.pool.Prestart(q.req.JobId, binary, q.req.BinarySha256)
	}
	r.mu.Lock()
	if q.cancelled || r.closed {
		r.poolLocked(q.bundle).Add(q.res)
		r.gpus.put(q.gpus)
		r.mu.Unlock()
		r.pool.Push(w)
		r.wake()
		return
	}
	select {
	case <-w.Exited():
		r.mu.Unlock()
		fail(fmt.Errorf("%w: worker %s exited", ErrWorkerStart, w.ID))
		return
	default:
	}
	l := &lease{id: auth.RandomHex(8), jobID: q.req.JobId, owner: q.req.OwnerAddress, res: q.res, gpus: q.gpus, bundle: q.bundle, worker: w, actorID: q.req.ActorId,
		granted: time.Now(), backlog: q.req.Backlog}
	if q.req.Detached {
		r.pool.Detach(w)
	}
	r.leases[l.id] = l
	r.byWorker[w.ID] = l
	r.mu.Unlock()
	r.metrics.leaseGrants.Inc()
	q.finish(leaseResult{reply: &pb.LeaseReply{LeaseId: l.id, WorkerId: w.ID, WorkerAddress: w.Address,
		WorkerPid: int32(w.PID), NodeId: r.cfg.NodeID, GpuIds: q.gpus}})
}
