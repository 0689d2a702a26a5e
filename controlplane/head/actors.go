package head

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
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
	// reserved are the placements of this leader that the chosen node's
	// heartbeats may not show yet, by node: a burst of placements between
	// two heartbeats must not all pick the node that looked freest.
	reserved map[string][]*reservation
	wg       sync.WaitGroup

	// Owned by the run goroutine: the node table as of the last node
	// change, and the FSM index the actor table was last looked at.
	view  *nodeView
	index uint64
}

// reservation is one placement's resources on a node, from when it was
// chosen until a heartbeat of the node shows them: the second one
// received after the grant (the first may have left the node before it).
type reservation struct {
	at    time.Time
	first time.Time // the first heartbeat received after at, if any
	res   map[string]float64
}

// nodeView is the node table the placer works from: every node by ID, and
// the alive ones sorted by ID (the order pickNode scans them in).
type nodeView struct {
	byID  map[string]*cpb.NodeInfo
	alive []*cpb.NodeInfo
}

func newNodeView(nodes []*cpb.NodeInfo) *nodeView {
	v := &nodeView{byID: make(map[string]*cpb.NodeInfo, len(nodes))}
	for _, n := range nodes { // sorted by ID
		v.byID[n.NodeId] = n
		if n.State == cpb.NodeState_NODE_ALIVE {
			v.alive = append(v.alive, n)
		}
	}
	return v
}

func newActorPlacer(h *Head) *actorPlacer { return &actorPlacer{h: h} }

// placeRetry is the pause before a failed placement is tried again.
const placeRetry = 100 * time.Millisecond

// fullReconcile is how often every actor is looked at again, though no
// change names it: infeasible actors are retried as free resources move.
const fullReconcile = 250 * time.Millisecond

func (p *actorPlacer) run(ctx context.Context) {
	p.mu.Lock()
	p.placing, p.cleaned, p.conns = map[string]bool{}, map[string]bool{}, map[string]*grpc.ClientConn{}
	p.inherited, p.reserved = map[string]bool{}, map[string][]*reservation{}
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
	t := time.NewTicker(fullReconcile)
	defer t.Stop()
	full := true
	for {
		ch, _ := p.h.fsm.Changed()
		if full {
			p.reconcile(ctx)
		} else {
			p.reconcileChanges(ctx)
		}
		full = false
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-t.C:
			full = true
		}
	}
}

// reconcile looks at every actor.
func (p *actorPlacer) reconcile(ctx context.Context) {
	_, p.index = p.h.fsm.Changed()
	p.view = newNodeView(p.h.fsm.Nodes())
	for _, a := range p.h.fsm.Actors() {
		p.consider(ctx, a)
	}
}

// reconcileChanges looks only at the actors changed since the last look,
// from the FSM's change log: a scan of the whole table on every change
// made placing n actors cost O(n²). A node change, or a log that no longer
// reaches back, means a whole pass.
func (p *actorPlacer) reconcileChanges(ctx context.Context) {
	events, now, ok := p.h.fsm.EventsSince(p.index, func(k cpb.EventKind) bool {
		return k == cpb.EventKind_EVENT_ACTOR || k == cpb.EventKind_EVENT_NODE
	})
	if !ok {
		p.reconcile(ctx)
		return
	}
	seen := make(map[string]bool, len(events))
	for _, e := range events {
		if e.Kind == cpb.EventKind_EVENT_NODE {
			p.reconcile(ctx)
			return
		}
	}
	p.index = now
	for _, e := range events {
		id := e.GetActor().GetActorId()
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		if a := p.h.fsm.Actor(id); a != nil {
			p.consider(ctx, a)
		}
	}
}

// consider does what one actor's state asks for.
func (p *actorPlacer) consider(ctx context.Context, a *cpb.ActorInfo) {
	nodes := p.view.byID
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
			view := p.view
			go func() {
				defer p.wg.Done()
				// Read the actor again now that this goroutine holds its
				// placement: the copy above may predate the commit of a
				// placement that just finished (placing it twice).
				if a := p.h.fsm.Actor(a.ActorId); a != nil && (a.State == cpb.ActorState_PENDING_CREATION || a.State == cpb.ActorState_RESTARTING) {
					p.place(ctx, a, view)
				}
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
func (p *actorPlacer) place(ctx context.Context, a *cpb.ActorInfo, view *nodeView) {
	nodes := view.byID
	log := p.h.log.With(zap.String("actor", a.ActorId), zap.String("class", a.ClassName), zap.Int32("incarnation", a.NumRestarts))
	// End the previous incarnation's worker (or a placement a dead leader
	// left behind) before a new one starts.
	if n := nodes[a.NodeId]; a.NodeId != "" && n != nil && n.State == cpb.NodeState_NODE_ALIVE {
		p.killWorker(ctx, n.Address, a.ActorId, "")
	}
	node, resv, reason, never := p.pickByStrategy(a, view)
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
	// The reservation stands until the node's heartbeats show the actor,
	// unless no worker of the node took it.
	granted := false
	defer func() {
		if !granted {
			p.unreserve(node.NodeId, resv)
		}
	}()
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
	// A previous leader may have leased a worker for it: end any on the
	// node it goes to now before leasing there. Workers it left on other
	// nodes are the raylets' to end (their stray-actor check kills a
	// worker of an actor ALIVE elsewhere): asking every node about every
	// inherited actor was nodes x actors calls after a failover in a
	// burst of creations (a million for 5,000 actors on 200 nodes).
	p.mu.Lock()
	inherited := p.inherited[a.ActorId]
	delete(p.inherited, a.ActorId)
	p.mu.Unlock()
	if inherited && node.NodeId != a.NodeId {
		p.killWorker(ctx, node.Address, a.ActorId, "")
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
			if granted = lease.NodeId == node.NodeId; granted {
				p.grantedAt(resv)
			}
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
// a node (and the placement's reservation on it, if any), or nil and why it
// waits, or why it never can run (never: the actor dies with that cause).
func (p *actorPlacer) pickByStrategy(a *cpb.ActorInfo, view *nodeView) (node *cpb.NodeInfo, resv *reservation, wait, never string) {
	nodes := view.byID
	s := a.GetStrategy()
	switch s.GetKind() {
	case cpb.SchedulingStrategy_PLACEMENT_GROUP:
		g := p.h.fsm.PlacementGroup(s.PlacementGroupId)
		if g == nil || g.State == cpb.PlacementGroupState_PG_REMOVED {
			return nil, nil, "", fmt.Sprintf("its placement group %s was removed", s.PlacementGroupId)
		}
		var cands []int
		for i, b := range g.Bundles {
			if (s.BundleIndex < 0 || int(s.BundleIndex) == i) && fits(a.Resources, b.Resources) {
				cands = append(cands, i)
			}
		}
		if len(cands) == 0 {
			return nil, nil, "", fmt.Sprintf("infeasible: its resources %v fit no bundle %d of placement group %s", a.Resources, s.BundleIndex, g.PlacementGroupId)
		}
		seed := int(actorSeed(a.ActorId) % uint32(len(cands)))
		for k := range cands {
			b := g.Bundles[cands[(k+seed)%len(cands)]]
			if n := nodes[b.NodeId]; b.NodeId != "" && n != nil && n.State == cpb.NodeState_NODE_ALIVE {
				return n, nil, "", ""
			}
		}
		return nil, nil, fmt.Sprintf("waiting for its placement group %s (%s)", g.PlacementGroupId, g.State), ""
	case cpb.SchedulingStrategy_NODE_AFFINITY:
		n := nodes[s.NodeId]
		switch {
		case n != nil && n.State == cpb.NodeState_NODE_ALIVE && fits(a.Resources, n.Resources):
			return n, nil, "", ""
		case s.Soft:
			n, r := p.pickNode(a, view.alive)
			return n, r, "", ""
		case n == nil || n.State != cpb.NodeState_NODE_ALIVE:
			return nil, nil, "", fmt.Sprintf("its node affinity names node %s, which is dead or unknown", s.NodeId)
		default:
			return nil, nil, "", fmt.Sprintf("its node affinity names node %s, which can never fit its resources %v", s.NodeId, a.Resources)
		}
	case cpb.SchedulingStrategy_NODE_LABELS:
		var hard, soft []*cpb.NodeInfo
		for _, n := range view.alive {
			if resources.LabelsMatch(n.Labels, s.HardLabels) {
				hard = append(hard, n)
				if len(s.SoftLabels) > 0 && resources.LabelsMatch(n.Labels, s.SoftLabels) {
					soft = append(soft, n)
				}
			}
		}
		if n, r := p.pickNode(a, soft); n != nil {
			return n, r, "", ""
		}
		if n, r := p.pickNode(a, hard); n != nil {
			return n, r, "", ""
		}
		return nil, nil, fmt.Sprintf("infeasible: no alive node has the labels %v and the resources %v", s.HardLabels, a.Resources), ""
	}
	n, r := p.pickNode(a, view.alive)
	return n, r, "", ""
}

func actorSeed(actorID string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(actorID))
	return h.Sum32()
}

// pickNode chooses, among alive nodes sorted by ID, one whose resources
// fit the actor: among those with the resources free now (by their last
// heartbeat, less what this leader placed there since), the one with most
// CPUs free, ties broken by the actor ID so that a burst of actors
// spreads; else any that has them at all (its raylet queues the lease).
// The chosen node holds a reservation for the actor until its heartbeats
// show it. nil when no node could ever run it.
func (p *actorPlacer) pickNode(a *cpb.ActorInfo, alive []*cpb.NodeInfo) (*cpb.NodeInfo, *reservation) {
	var fit []*cpb.NodeInfo
	for _, n := range alive {
		if fits(a.Resources, n.Resources) {
			fit = append(fit, n)
		}
	}
	if len(fit) == 0 {
		return nil, nil
	}
	seed := int(actorSeed(a.ActorId) % uint32(len(fit)))
	avail := make([]map[string]float64, len(fit))
	seen := make([]time.Time, len(fit))
	p.h.liveness.freeSince(fit, avail, seen)
	p.mu.Lock()
	defer p.mu.Unlock()
	best, bestCPU := -1, -1.0
	for k := range fit {
		i := (k + seed) % len(fit) // start the scan at the actor's own node
		if avail[i] == nil {
			continue
		}
		free := p.freeLocked(fit[i].NodeId, avail[i], seen[i])
		if !fits(a.Resources, free) {
			continue
		}
		if cpu := free["CPU"]; cpu > bestCPU {
			best, bestCPU = i, cpu
		}
	}
	if best < 0 {
		best = seed
	}
	r := &reservation{at: time.Now(), res: a.Resources}
	if p.reserved != nil {
		p.reserved[fit[best].NodeId] = append(p.reserved[fit[best].NodeId], r)
	}
	return fit[best], r
}

// freeLocked is a node's free resources by its heartbeat of time seen,
// less the reservations that heartbeat cannot show yet; the older ones are
// dropped.
func (p *actorPlacer) freeLocked(nodeID string, avail map[string]float64, seen time.Time) map[string]float64 {
	rs := p.reserved[nodeID]
	if len(rs) == 0 {
		return avail
	}
	kept := rs[:0]
	for _, r := range rs {
		switch {
		case !seen.After(r.at):
		case r.first.IsZero():
			r.first = seen
		case seen.After(r.first):
			continue // shown by now
		}
		kept = append(kept, r)
	}
	clear(rs[len(kept):])
	if len(kept) == 0 {
		delete(p.reserved, nodeID)
		return avail
	}
	p.reserved[nodeID] = kept
	free := maps.Clone(avail)
	for _, r := range kept {
		for k, q := range r.res {
			free[k] -= q
		}
	}
	return free
}

// granted restarts a reservation's clock when the node's raylet granted
// the lease: only a heartbeat received after that shows the actor.
func (p *actorPlacer) grantedAt(r *reservation) {
	if r == nil {
		return
	}
	p.mu.Lock()
	r.at, r.first = time.Now(), time.Time{}
	p.mu.Unlock()
}

// unreserve drops a placement's reservation that no worker took.
func (p *actorPlacer) unreserve(nodeID string, r *reservation) {
	if r == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.reserved[nodeID]
	for i, x := range rs {
		if x == r {
			p.reserved[nodeID] = append(rs[:i:i], rs[i+1:]...)
			break
		}
	}
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
