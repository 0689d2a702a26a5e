package head

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// actorPlacer is the "actor-placement" leader routine. The actor table in
// the FSM is the truth; the routine reconciles toward it on every change:
// PENDING_CREATION and RESTARTING actors get a dedicated worker on a node
// that fits and their constructor run, ALIVE actors of dead nodes are
// failed (restarted or DEAD per max_restarts), and workers of DEAD actors
// are ended. A new leader simply runs the same reconciliation, so it
// finishes whatever its predecessor had under way.
type actorPlacer struct {
	h *Head

	mu      sync.Mutex
	placing map[string]bool // actor IDs with a placement goroutine
	cleaned map[string]bool // DEAD actors whose worker was ended
	// inherited are the actors a previous leader may have been placing:
	// any worker it leased for them is ended before they are placed again.
	inherited map[string]bool
	conns     map[string]*grpc.ClientConn
	wg        sync.WaitGroup
}

func newActorPlacer(h *Head) *actorPlacer { return &actorPlacer{h: h} }

// placeRetry is the pause before a failed placement is tried again.
const placeRetry = 100 * time.Millisecond

func (p *actorPlacer) run(ctx context.Context) {
	p.mu.Lock()
	p.placing, p.cleaned, p.conns = map[string]bool{}, map[string]bool{}, map[string]*grpc.ClientConn{}
	p.inherited = map[string]bool{}
	for _, a := range p.h.fsm.Actors() {
		if a.State == cpb.ActorState_PENDING_CREATION || a.State == cpb.ActorState_RESTARTING {
			p.inherited[a.ActorId] = true
		}
	}
	p.mu.Unlock()
	defer func() {
		p.wg.Wait()
		p.mu.Lock()
		for _, cc := range p.conns {
			cc.Close()
		}
		p.conns = nil
		p.mu.Unlock()
	}()
	t := time.NewTicker(250 * time.Millisecond) // retries infeasible actors as nodes change
	defer t.Stop()
	for {
		ch, _ := p.h.fsm.Changed()
		p.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-t.C:
		}
	}
}

func (p *actorPlacer) reconcile(ctx context.Context) {
	nodes := map[string]*cpb.NodeInfo{}
	for _, n := range p.h.fsm.Nodes() {
		nodes[n.NodeId] = n
	}
	for _, a := range p.h.fsm.Actors() {
		switch a.State {
		case cpb.ActorState_ALIVE:
			if n := nodes[a.NodeId]; n == nil || n.State == cpb.NodeState_NODE_DEAD {
				cause := fmt.Sprintf("its node %s died", a.NodeId)
				if n != nil && n.DeathReason != "" {
					cause += " (" + n.DeathReason + ")"
				}
				_, _ = p.apply(ctx, fsm.CmdActorFailed, &cpb.ActorFailedCommand{ActorId: a.ActorId, WorkerId: a.WorkerId, Cause: cause})
			}
		case cpb.ActorState_PENDING_CREATION, cpb.ActorState_RESTARTING:
			p.mu.Lock()
			busy := p.placing[a.ActorId]
			if !busy {
				p.placing[a.ActorId] = true
				p.wg.Add(1)
			}
			p.mu.Unlock()
			if !busy {
				go func() {
					defer p.wg.Done()
					p.place(ctx, a, nodes)
					p.mu.Lock()
					delete(p.placing, a.ActorId)
					p.mu.Unlock()
				}()
			}
		case cpb.ActorState_DEAD:
			p.mu.Lock()
			done := p.cleaned[a.ActorId]
			p.cleaned[a.ActorId] = true
			p.mu.Unlock()
			if !done && a.WorkerId != "" {
				if n := nodes[a.NodeId]; n != nil && n.State == cpb.NodeState_NODE_ALIVE {
					p.wg.Add(1)
					go func() {
						defer p.wg.Done()
						p.killWorker(ctx, n.Address, a.ActorId, "")
					}()
				}
			}
		}
	}
}

// apply writes an actor command; changed is the command's answer, and
// false when the write failed or its outcome is unknown.
func (p *actorPlacer) apply(ctx context.Context, t fsm.CommandType, body proto.Message) (changed bool, err error) {
	r, err := p.h.applier.Apply(ctx, t, "", body)
	if err != nil {
		if ctx.Err() == nil {
			p.h.log.Warn("actor command", zap.Stringer("command", t), zap.Error(err))
		}
		return false, err
	}
	return r.Flag, nil
}

// place creates one incarnation of an actor; it returns when the actor is
// ALIVE, or when the attempt failed (the next reconcile tries again).
func (p *actorPlacer) place(ctx context.Context, a *cpb.ActorInfo, nodes map[string]*cpb.NodeInfo) {
	log := p.h.log.With(zap.String("actor", a.ActorId), zap.String("class", a.ClassName), zap.Int32("incarnation", a.NumRestarts))
	// End the previous incarnation's worker (or a placement a dead leader
	// left behind) before a new one starts.
	if n := nodes[a.NodeId]; a.NodeId != "" && n != nil && n.State == cpb.NodeState_NODE_ALIVE {
		p.killWorker(ctx, n.Address, a.ActorId, "")
	}
	p.mu.Lock()
	inherited := p.inherited[a.ActorId]
	delete(p.inherited, a.ActorId)
	p.mu.Unlock()
	if inherited {
		for _, n := range nodes {
			if n.State == cpb.NodeState_NODE_ALIVE {
				p.killWorker(ctx, n.Address, a.ActorId, "")
			}
		}
	}
	node, reason, never := p.pickByStrategy(a, nodes)
	if never != "" {
		log.Warn("actor can never be placed", zap.String("why", never))
		_, _ = p.apply(ctx, fsm.CmdActorFailed, &cpb.ActorFailedCommand{ActorId: a.ActorId, Cause: never, NoRestart: true})
		return
	}
	if node == nil {
		if reason == "" {
			reason = fmt.Sprintf("infeasible: no alive node has the resources %v", a.Resources)
		}
		if a.PendingReason != reason { // no Raft write per retry
			_, _ = p.apply(ctx, fsm.CmdActorPending, &cpb.ActorPendingCommand{ActorId: a.ActorId, Reason: reason})
		}
		return
	}
	fail := func(err error) {
		if ctx.Err() != nil {
			return
		}
		log.Info("actor placement failed; it will be retried", zap.String("node", node.NodeId), zap.Error(err))
		_, _ = p.apply(ctx, fsm.CmdActorPending, &cpb.ActorPendingCommand{ActorId: a.ActorId, Reason: err.Error()})
		select {
		case <-ctx.Done():
		case <-time.After(placeRetry):
		}
	}
	addr := node.Address
	req := &rpb.LeaseRequest{JobId: a.JobId, BinarySha256: a.BinarySha256, Resources: a.Resources,
		ActorId: a.ActorId, Detached: a.Detached, Shape: "actor:" + a.ClassName, Strategy: a.Strategy,
		RuntimeEnvVars: a.GetRuntimeEnv().GetEnvVars(), RuntimeEnvWorkingDir: a.GetRuntimeEnv().GetWorkingDir()}
	if !a.Detached {
		// The raylet watches the owner: a non-detached actor dies with it.
		req.OwnerAddress = a.OwnerAddress
	}
	var lease *rpb.LeaseReply
	for {
		cc, err := p.conn(addr)
		if err != nil {
			fail(err)
			return
		}
		lease, err = rpb.NewRayletClient(cc).RequestWorkerLease(ctx, req)
		if errors.Is(rpcerr.FromStatus(err), raylet.ErrUnschedulable) {
			_, _ = p.apply(ctx, fsm.CmdActorFailed, &cpb.ActorFailedCommand{ActorId: a.ActorId, Cause: rpcerr.FromStatus(err).Error(), NoRestart: true})
			return
		}
		if err != nil {
			fail(fmt.Errorf("lease a worker on %s: %w", addr, err))
			return
		}
		if lease.SpillAddress == "" {
			break
		}
		addr = lease.SpillAddress
		req.Hops++
	}
	err := p.construct(ctx, a, lease)
	if err != nil {
		p.killWorker(ctx, addr, a.ActorId, lease.WorkerId)
		if ce, ok := err.(*constructorError); ok {
			// The constructor itself failed: as in Ray, the actor is dead.
			log.Warn("actor constructor failed", zap.String("error", ce.msg))
			_, _ = p.apply(ctx, fsm.CmdActorFailed, &cpb.ActorFailedCommand{ActorId: a.ActorId, Cause: "the constructor failed: " + ce.msg, NoRestart: true})
			return
		}
		fail(err)
		return
	}
	ok, err := p.apply(ctx, fsm.CmdActorAlive, &cpb.ActorAliveCommand{ActorId: a.ActorId, NumRestarts: a.NumRestarts,
		NodeId: lease.NodeId, WorkerId: lease.WorkerId, WorkerAddress: lease.WorkerAddress})
	if err != nil {
		// Leadership lost mid-write: the write may have committed, so this
		// worker may be the actor. The next leader reconciles: it kills the
		// worker only once the table names another.
		return
	}
	if !ok {
		// Killed or already placed meanwhile: this worker is not the actor.
		p.killWorker(ctx, addr, a.ActorId, lease.WorkerId)
		return
	}
	log.Info("actor alive", zap.String("node", lease.NodeId), zap.String("worker", lease.WorkerAddress))
}

type constructorError struct{ msg string }

func (e *constructorError) Error() string { return e.msg }

// construct runs the actor's constructor on its leased worker.
func (p *actorPlacer) construct(ctx context.Context, a *cpb.ActorInfo, lease *rpb.LeaseReply) error {
	spec := &rpb.TaskSpec{}
	if len(a.InitArgs) > 0 {
		var args rpb.PushTasksRequest
		if err := proto.Unmarshal(a.InitArgs, &args); err != nil || len(args.Tasks) != 1 {
			return &constructorError{msg: fmt.Sprintf("undecodable creation spec (%d tasks): %v", len(args.Tasks), err)}
		}
		spec = args.Tasks[0]
	}
	tid := ids.NewTaskID(a.JobId, ids.DriverTaskID(a.JobId), uint64(a.NumRestarts)<<32)
	spec.TaskId, spec.JobId, spec.Function = tid[:], a.JobId, a.ClassName
	spec.ActorId, spec.ActorCreation, spec.MaxConcurrency = a.ActorId, true, a.MaxConcurrency
	// A connection of its own: the worker is the actor's, not the
	// placer's to keep (a cached one would outlive the worker).
	cc, err := p.dial(lease.WorkerAddress)
	if err != nil {
		return err
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	grant := resources.Grant{Resources: a.Resources, GPUs: lease.GpuIds}
	stream, err := rpb.NewCoreWorkerClient(cc).PushTasks(grant.OutgoingContext(sctx))
	if err != nil {
		return err
	}
	if err := stream.Send(&rpb.PushTasksRequest{Tasks: []*rpb.TaskSpec{spec}}); err != nil {
		return err
	}
	reply, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("actor worker %s: %w", lease.WorkerAddress, err)
	}
	_ = stream.CloseSend()
	if len(reply.Results) == 1 && reply.Results[0].Error != nil {
		return &constructorError{msg: reply.Results[0].Error.Message}
	}
	return nil
}

// pickByStrategy chooses the node for an actor by its scheduling strategy:
// a node, or nil and why it waits, or why it never can run (never: the
// actor dies with that cause).
func (p *actorPlacer) pickByStrategy(a *cpb.ActorInfo, nodes map[string]*cpb.NodeInfo) (node *cpb.NodeInfo, wait, never string) {
	s := a.GetStrategy()
	switch s.GetKind() {
	case cpb.SchedulingStrategy_PLACEMENT_GROUP:
		g := p.h.fsm.PlacementGroup(s.PlacementGroupId)
		if g == nil || g.State == cpb.PlacementGroupState_PG_REMOVED {
			return nil, "", fmt.Sprintf("its placement group %s was removed", s.PlacementGroupId)
		}
		var cands []int
		for i, b := range g.Bundles {
			if (s.BundleIndex < 0 || int(s.BundleIndex) == i) && fits(a.Resources, b.Resources) {
				cands = append(cands, i)
			}
		}
		if len(cands) == 0 {
			return nil, "", fmt.Sprintf("infeasible: its resources %v fit no bundle %d of placement group %s", a.Resources, s.BundleIndex, g.PlacementGroupId)
		}
		h := fnv.New32a()
		h.Write([]byte(a.ActorId))
		seed := int(h.Sum32() % uint32(len(cands)))
		for k := range cands {
			b := g.Bundles[cands[(k+seed)%len(cands)]]
			if n := nodes[b.NodeId]; b.NodeId != "" && n != nil && n.State == cpb.NodeState_NODE_ALIVE {
				return n, "", ""
			}
		}
		return nil, fmt.Sprintf("waiting for its placement group %s (%s)", g.PlacementGroupId, g.State), ""
	case cpb.SchedulingStrategy_NODE_AFFINITY:
		n := nodes[s.NodeId]
		switch {
		case n != nil && n.State == cpb.NodeState_NODE_ALIVE && fits(a.Resources, n.Resources):
			return n, "", ""
		case s.Soft:
			return p.pickNode(a, nodes), "", ""
		case n == nil || n.State != cpb.NodeState_NODE_ALIVE:
			return nil, "", fmt.Sprintf("its node affinity names node %s, which is dead or unknown", s.NodeId)
		default:
			return nil, "", fmt.Sprintf("its node affinity names node %s, which can never fit its resources %v", s.NodeId, a.Resources)
		}
	case cpb.SchedulingStrategy_NODE_LABELS:
		hard, soft := map[string]*cpb.NodeInfo{}, map[string]*cpb.NodeInfo{}
		for id, n := range nodes {
			if resources.LabelsMatch(n.Labels, s.HardLabels) {
				hard[id] = n
				if len(s.SoftLabels) > 0 && resources.LabelsMatch(n.Labels, s.SoftLabels) {
					soft[id] = n
				}
			}
		}
		if n := p.pickNode(a, soft); n != nil {
			return n, "", ""
		}
		if n := p.pickNode(a, hard); n != nil {
			return n, "", ""
		}
		return nil, fmt.Sprintf("infeasible: no alive node has the labels %v and the resources %v", s.HardLabels, a.Resources), ""
	}
	return p.pickNode(a, nodes), "", ""
}

// pickNode chooses an alive node whose resources fit the actor: among
// those with the resources free now (by their last heartbeat), the one
// with most CPUs free, ties broken by the actor ID so that a burst of
// actors spreads; else any that has them at all (its raylet queues the
// lease). nil when no node could ever run it.
func (p *actorPlacer) pickNode(a *cpb.ActorInfo, nodes map[string]*cpb.NodeInfo) *cpb.NodeInfo {
	var fit []*cpb.NodeInfo
	for _, n := range nodes {
		if n.State == cpb.NodeState_NODE_ALIVE && fits(a.Resources, n.Resources) {
			fit = append(fit, n)
		}
	}
	if len(fit) == 0 {
		return nil
	}
	sort.Slice(fit, func(i, j int) bool { return fit[i].NodeId < fit[j].NodeId })
	h := fnv.New32a()
	h.Write([]byte(a.ActorId))
	seed := int(h.Sum32() % uint32(len(fit)))
	var best *cpb.NodeInfo
	bestCPU := -1.0
	decorated := p.h.liveness.decorate(fit)
	for k := range fit {
		i := (k + seed) % len(fit) // start the scan at the actor's own node
		n := decorated[i]
		if n.Available == nil || !fits(a.Resources, n.Available) {
			continue
		}
		if cpu := n.Available["CPU"]; cpu > bestCPU {
			best, bestCPU = fit[i], cpu
		}
	}
	if best == nil {
		best = fit[seed]
	}
	return best
}

func fits(want, have map[string]float64) bool {
	for k, q := range want {
		if q > 0 && have[k] < q {
			return false
		}
	}
	return true
}

func (p *actorPlacer) killWorker(ctx context.Context, addr, actorID, workerID string) {
	cc, err := p.conn(addr)
	if err != nil {
		return
	}
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := rpb.NewRayletClient(cc).KillActorWorker(kctx, &rpb.KillActorWorkerRequest{ActorId: actorID, WorkerId: workerID}); err != nil && ctx.Err() == nil {
		p.h.log.Debug("kill actor worker", zap.String("actor", actorID), zap.String("raylet", addr), zap.Error(err))
	}
}

// conn returns a cached connection to a raylet.
func (p *actorPlacer) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc := p.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := p.dial(addr)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

func (p *actorPlacer) dial(addr string) (*grpc.ClientConn, error) {
	token := p.h.Token()
	return grpc.NewClient(addr, p.h.cfg.TLS.DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
}
