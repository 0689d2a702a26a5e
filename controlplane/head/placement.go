package head

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// groupPlacer is the "placement-group placement" leader routine. The group
// table in the FSM is the truth; raylets hold what it says, nothing else:
//
//   - A waiting group (PENDING, INFEASIBLE, RESCHEDULING) is placed in two
//     phases: its bundles are prepared on the chosen raylets (resources set
//     aside, not usable), PlacementGroupPlaced is committed to Raft (the
//     decision), and only then are they committed on the raylets (usable by
//     leases). A failed prepare releases what the others prepared.
//   - The recovery pass, run first on gaining leadership and then every
//     bundleAudit, lists every raylet's bundles and releases each one the
//     table does not place on that node, and commits each one it does. A
//     leader that died between prepare and Placed leaves prepared bundles
//     of a group still waiting: they are released before the group is
//     placed again, so nothing leaks and nothing is booked twice. One that
//     died between Placed and commit leaves them prepared: they are
//     committed.
//
// Everything runs on the routine's one goroutine, so a recovery pass never
// sees a prepare of this leader's own under way.
type groupPlacer struct {
	h     *Head
	kicks chan struct{}

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// released are the REMOVED groups whose bundles this leader released.
	released map[string]bool
	// retryAt paces the groups that could not be placed: a busy cluster
	// changes the store often, and each change wakes the routine.
	retryAt map[string]time.Time
}

// placeRetryPause is how long a group that could not be placed waits
// before the next try (nodes report freed resources by heartbeat).
const placeRetryPause = 200 * time.Millisecond

func newGroupPlacer(h *Head) *groupPlacer {
	return &groupPlacer{h: h, kicks: make(chan struct{}, 1)}
}

// bundleAudit is how often the leader compares raylets' bundles with the
// group table.
const bundleAudit = time.Second

// kick asks for a placement pass soon (a removal to release).
func (p *groupPlacer) kick() {
	select {
	case p.kicks <- struct{}{}:
	default:
	}
}

func (p *groupPlacer) run(ctx context.Context) {
	p.mu.Lock()
	p.conns, p.released, p.retryAt = map[string]*grpc.ClientConn{}, map[string]bool{}, map[string]time.Time{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for _, cc := range p.conns {
			cc.Close()
		}
		p.conns = nil
		p.mu.Unlock()
	}()
	p.audit(ctx)
	lastAudit := time.Now()
	// The audit released what raylets held of groups removed before this
	// leadership: only later removals need a release of their own.
	p.mu.Lock()
	for _, g := range p.h.fsm.PlacementGroups() {
		if g.State == cpb.PlacementGroupState_PG_REMOVED {
			p.released[g.PlacementGroupId] = true
		}
	}
	p.mu.Unlock()
	t := time.NewTicker(250 * time.Millisecond) // retries waiting groups as nodes free up
	defer t.Stop()
	for {
		ch, _ := p.h.fsm.Changed()
		if time.Since(lastAudit) >= bundleAudit {
			p.audit(ctx)
			lastAudit = time.Now()
		}
		p.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-p.kicks:
		case <-t.C:
		}
	}
}

// reconcile releases the bundles of newly removed groups and places every
// waiting group it can.
func (p *groupPlacer) reconcile(ctx context.Context) {
	groups := p.h.fsm.PlacementGroups()
	nodes := p.aliveNodes()
	// What this pass reserves, so one pass does not count a node's free
	// resources twice (heartbeats lag behind).
	taken := map[string]resources.Set{}
	var prepared []*preparedGroup
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		if ctx.Err() != nil {
			return
		}
		seen[g.PlacementGroupId] = true
		switch {
		case g.State == cpb.PlacementGroupState_PG_REMOVED:
			p.mu.Lock()
			done := p.released[g.PlacementGroupId]
			p.released[g.PlacementGroupId] = true
			p.mu.Unlock()
			if !done {
				p.releaseGroup(ctx, g, nodes)
			}
		case g.State == cpb.PlacementGroupState_PG_PENDING || g.State == cpb.PlacementGroupState_PG_INFEASIBLE ||
			g.State == cpb.PlacementGroupState_PG_RESCHEDULING:
			if time.Now().Before(p.retryAt[g.PlacementGroupId]) {
				continue
			}
			if pg := p.prepare(ctx, g, nodes, taken); pg != nil {
				prepared = append(prepared, pg)
				delete(p.retryAt, g.PlacementGroupId)
			} else {
				p.retryAt[g.PlacementGroupId] = time.Now().Add(placeRetryPause)
			}
		}
	}
	p.mu.Lock()
	for id := range p.released {
		if !seen[id] {
			delete(p.released, id) // evicted from the table
		}
	}
	for id := range p.retryAt {
		if !seen[id] {
			delete(p.retryAt, id)
		}
	}
	p.mu.Unlock()
	p.record(ctx, prepared)
}

// preparedGroup is a group whose bundles are prepared on their nodes and
// whose placement is not recorded yet.
type preparedGroup struct {
	g      *cpb.PlacementGroupInfo
	assign []string
	byNode map[string][]*rpb.BundleSpec
	addr   map[string]string
}

// record commits the placements prepared in one pass to Raft at once (they
// share log entries), then commits their bundles on the raylets.
func (p *groupPlacer) record(ctx context.Context, gs []*preparedGroup) {
	var wg sync.WaitGroup
	for _, pg := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.finish(ctx, pg)
		}()
	}
	wg.Wait()
}

// finish records one prepared placement and commits its bundles, or
// releases them when the record was refused.
func (p *groupPlacer) finish(ctx context.Context, pg *preparedGroup) {
	g := pg.g
	log := p.h.log.With(zap.String("placement_group", g.PlacementGroupId))
	ok, err := p.apply(ctx, fsm.CmdPlacementGroupPlaced, &cpb.PlacementGroupPlacedCommand{PlacementGroupId: g.PlacementGroupId, NodeIds: pg.assign})
	if err != nil {
		// Its outcome is unknown (leadership lost mid-write): the next
		// leader's recovery pass releases or commits the prepared bundles.
		return
	}
	if !ok {
		for id, bs := range pg.byNode {
			p.release(ctx, pg.addr[id], g.PlacementGroupId, indexes(bs), "the group was removed, or a node died, during its placement")
		}
		return
	}
	// Phase 2: commit. A failure here is retried by the recovery pass.
	if _, err := p.onNodes(ctx, pg.byNode, pg.addr, func(c rpb.RayletClient, ctx context.Context, req *rpb.BundlesRequest) error {
		_, err := c.CommitBundles(ctx, req)
		return err
	}); err != nil {
		log.Warn("commit bundles; the audit retries", zap.Error(err))
	}
	log.Debug("placement group placed", zap.Strings("nodes", pg.assign), zap.Stringer("strategy", g.Strategy))
}

// aliveNodes are the alive nodes, with their last heartbeat's free resources.
func (p *groupPlacer) aliveNodes() []*cpb.NodeInfo {
	var alive []*cpb.NodeInfo
	for _, n := range p.h.fsm.Nodes() {
		if n.State == cpb.NodeState_NODE_ALIVE {
			alive = append(alive, n)
		}
	}
	return p.h.liveness.decorate(alive)
}

// prepare chooses nodes for one waiting group and prepares its bundles
// there; nil when it cannot be placed now (why is recorded).
func (p *groupPlacer) prepare(ctx context.Context, g *cpb.PlacementGroupInfo, nodes []*cpb.NodeInfo, taken map[string]resources.Set) *preparedGroup {
	log := p.h.log.With(zap.String("placement_group", g.PlacementGroupId))
	free := map[string]resources.Set{}
	total := map[string]resources.Set{}
	for _, n := range nodes {
		total[n.NodeId] = resources.Set(n.Resources)
		f := resources.Set(n.Available).Clone()
		if n.LastHeartbeatUnixNano == 0 && len(f) == 0 {
			f = resources.Set(n.Resources).Clone()
		}
		if t := taken[n.NodeId]; t != nil {
			f.Sub(t)
		}
		free[n.NodeId] = f
	}
	assign := assignBundles(g, free)
	if assign == nil {
		reason, infeasible := "waiting for resources: no alive nodes have the bundles' resources free", false
		if assignBundles(g, total) == nil {
			reason, infeasible = fmt.Sprintf("infeasible: no set of alive nodes can hold the bundles with strategy %s", g.Strategy), true
		}
		if g.Reason != reason {
			_, _ = p.apply(ctx, fsm.CmdPlacementGroupPending, &cpb.PlacementGroupPendingCommand{PlacementGroupId: g.PlacementGroupId, Reason: reason, Infeasible: infeasible})
		}
		return nil
	}
	byNode := map[string][]*rpb.BundleSpec{}
	for i, id := range assign {
		if g.Bundles[i].NodeId != "" {
			continue // still held from before a reschedule
		}
		byNode[id] = append(byNode[id], &rpb.BundleSpec{PlacementGroupId: g.PlacementGroupId, Index: int32(i), Resources: g.Bundles[i].Resources})
	}
	addr := map[string]string{}
	for _, n := range nodes {
		addr[n.NodeId] = n.Address
	}
	// Phase 1: prepare everywhere, in parallel.
	prepared, err := p.onNodes(ctx, byNode, addr, func(c rpb.RayletClient, ctx context.Context, req *rpb.BundlesRequest) error {
		_, err := c.PrepareBundles(ctx, req)
		return err
	})
	if fk := p.h.cfg.Knobs.AfterPrepare; fk != nil {
		fk(g.PlacementGroupId)
	}
	release := func(why string) {
		for id := range prepared {
			p.release(ctx, addr[id], g.PlacementGroupId, indexes(byNode[id]), why)
		}
	}
	if err != nil {
		log.Debug("prepare failed; the group waits", zap.Error(err))
		release("a prepare on another node failed")
		// A stable reason: one naming the free amounts would be a new Raft
		// write at every try.
		reason := "waiting for resources: a chosen node had not the bundles' resources free"
		if g.State != cpb.PlacementGroupState_PG_RESCHEDULING && g.Reason != reason {
			_, _ = p.apply(ctx, fsm.CmdPlacementGroupPending, &cpb.PlacementGroupPendingCommand{PlacementGroupId: g.PlacementGroupId, Reason: reason})
		}
		return nil
	}
	for id, bs := range byNode {
		for _, b := range bs {
			if taken[id] == nil {
				taken[id] = resources.Set{}
			}
			taken[id].Add(b.Resources)
		}
	}
	return &preparedGroup{g: g, assign: assign, byNode: byNode, addr: addr}
}

func indexes(bs []*rpb.BundleSpec) []int32 {
	out := make([]int32, len(bs))
	for i, b := range bs {
		out[i] = b.Index
	}
	return out
}

// onNodes calls f on every node's bundles at once; it returns the nodes
// where f succeeded, and the first error.
func (p *groupPlacer) onNodes(ctx context.Context, byNode map[string][]*rpb.BundleSpec, addr map[string]string,
	f func(rpb.RayletClient, context.Context, *rpb.BundlesRequest) error) (map[string]bool, error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	ok := map[string]bool{}
	var first error
	for id, bs := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.call(ctx, addr[id], func(c rpb.RayletClient, ctx context.Context) error {
				return f(c, ctx, &rpb.BundlesRequest{Bundles: bs})
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = fmt.Errorf("node %s: %w", id, err)
				}
				return
			}
			ok[id] = true
		}()
	}
	wg.Wait()
	return ok, first
}

func (p *groupPlacer) call(ctx context.Context, addr string, f func(rpb.RayletClient, context.Context) error) error {
	cc, err := p.conn(addr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return f(rpb.NewRayletClient(cc), cctx)
}

func (p *groupPlacer) release(ctx context.Context, addr, pg string, idx []int32, why string) {
	err := p.call(ctx, addr, func(c rpb.RayletClient, ctx context.Context) error {
		_, err := c.ReleaseBundles(ctx, &rpb.ReleaseBundlesRequest{PlacementGroupId: pg, Indexes: idx, Reason: why})
		return err
	})
	if err != nil && ctx.Err() == nil {
		p.h.log.Debug("release bundles; the audit retries", zap.String("placement_group", pg), zap.String("raylet", addr), zap.Error(err))
	}
}

// releaseGroup releases a removed group's bundles wherever it was placed.
func (p *groupPlacer) releaseGroup(ctx context.Context, g *cpb.PlacementGroupInfo, nodes []*cpb.NodeInfo) {
	on := map[string]bool{}
	for _, b := range g.Bundles {
		on[b.NodeId] = true
	}
	for _, n := range nodes {
		if on[n.NodeId] {
			p.release(ctx, n.Address, g.PlacementGroupId, nil, "placement group "+g.PlacementGroupId+" was removed: "+g.Reason)
		}
	}
}

// audit is the recovery pass: every alive raylet's bundles are made to
// match the table.
func (p *groupPlacer) audit(ctx context.Context) {
	groups := map[string]*cpb.PlacementGroupInfo{}
	for _, g := range p.h.fsm.PlacementGroups() {
		groups[g.PlacementGroupId] = g
	}
	for _, n := range p.aliveNodes() {
		if ctx.Err() != nil {
			return
		}
		var held *rpb.ListBundlesReply
		err := p.call(ctx, n.Address, func(c rpb.RayletClient, ctx context.Context) error {
			var err error
			held, err = c.ListBundles(ctx, &rpb.ListBundlesRequest{})
			return err
		})
		if err != nil {
			continue
		}
		have := map[string]map[int32]bool{}
		for _, b := range held.Bundles {
			if have[b.PlacementGroupId] == nil {
				have[b.PlacementGroupId] = map[int32]bool{}
			}
			have[b.PlacementGroupId][b.Index] = true
			g := groups[b.PlacementGroupId]
			placedHere := g != nil && int(b.Index) < len(g.Bundles) && g.Bundles[b.Index].NodeId == n.NodeId &&
				(g.State == cpb.PlacementGroupState_PG_CREATED || g.State == cpb.PlacementGroupState_PG_RESCHEDULING)
			switch {
			case !placedHere:
				p.h.log.Info("releasing a bundle the group table does not place here",
					zap.String("placement_group", b.PlacementGroupId), zap.Int32("bundle", b.Index), zap.String("node", n.NodeId), zap.Bool("committed", b.Committed))
				p.release(ctx, n.Address, b.PlacementGroupId, []int32{b.Index}, "the placement group does not hold this bundle here")
			case !b.Committed:
				p.commit(ctx, n.Address, g, b.Index)
			}
		}
		// Bundles the table places here that the raylet lacks (a commit
		// that never arrived): committed, which reserves them.
		for _, g := range groups {
			if g.State != cpb.PlacementGroupState_PG_CREATED && g.State != cpb.PlacementGroupState_PG_RESCHEDULING {
				continue
			}
			for i, b := range g.Bundles {
				if b.NodeId == n.NodeId && !have[g.PlacementGroupId][int32(i)] {
					p.commit(ctx, n.Address, g, int32(i))
				}
			}
		}
	}
}

func (p *groupPlacer) commit(ctx context.Context, addr string, g *cpb.PlacementGroupInfo, i int32) {
	err := p.call(ctx, addr, func(c rpb.RayletClient, ctx context.Context) error {
		_, err := c.CommitBundles(ctx, &rpb.BundlesRequest{Bundles: []*rpb.BundleSpec{{PlacementGroupId: g.PlacementGroupId, Index: i, Resources: g.Bundles[i].Resources}}})
		return err
	})
	if err != nil && ctx.Err() == nil {
		p.h.log.Warn("commit a placed bundle", zap.String("placement_group", g.PlacementGroupId), zap.Int32("bundle", i), zap.Error(err))
	}
}

func (p *groupPlacer) apply(ctx context.Context, t fsm.CommandType, body proto.Message) (bool, error) {
	r, err := p.h.applier.Apply(ctx, t, "", body)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			p.h.log.Warn("placement group command", zap.Stringer("command", t), zap.Error(err))
		}
		return false, err
	}
	return r.Flag, nil
}

func (p *groupPlacer) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc := p.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := p.h.actors.dial(addr)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

// assignBundles chooses a node for every bundle of g given what each node
// has (free now, or in total for a feasibility check); nil when the
// strategy cannot be met. Bundles already placed (a reschedule) keep their
// node, and count for the strategy. Deterministic for given inputs: nodes
// are scanned by ID.
func assignBundles(g *cpb.PlacementGroupInfo, have map[string]resources.Set) []string {
	ids := make([]string, 0, len(have))
	for id := range have {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	left := map[string]resources.Set{}
	for _, id := range ids {
		left[id] = have[id].Clone()
	}
	out := make([]string, len(g.Bundles))
	used := map[string]int{}
	for i, b := range g.Bundles {
		if b.NodeId != "" {
			out[i] = b.NodeId
			used[b.NodeId]++
		}
	}
	// Larger bundles first: a greedy fit fails less often.
	order := make([]int, 0, len(g.Bundles))
	for i, b := range g.Bundles {
		if b.NodeId == "" {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool {
		return g.Bundles[order[a]].Resources[resources.CPU] > g.Bundles[order[b]].Resources[resources.CPU]
	})
	if g.Strategy == cpb.PlacementStrategy_STRICT_PACK || g.Strategy == cpb.PlacementStrategy_PACK {
		// One node for all, if one can.
		sum := resources.Set{}
		for _, i := range order {
			sum.Add(g.Bundles[i].Resources)
		}
		var cands []string
		if len(used) > 0 {
			for id := range used {
				cands = append(cands, id)
			}
			sort.Strings(cands)
		} else {
			cands = ids
		}
		for _, id := range cands {
			if left[id] != nil && left[id].Fits(sum) {
				for _, i := range order {
					out[i] = id
				}
				return out
			}
		}
		if g.Strategy == cpb.PlacementStrategy_STRICT_PACK {
			return nil
		}
	}
	for _, i := range order {
		want := g.Bundles[i].Resources
		best := ""
		score := func(id string) (int, float64) {
			// PACK prefers nodes the group uses, SPREAD nodes it does not;
			// then the node with most CPUs left.
			pref := 0
			switch g.Strategy {
			case cpb.PlacementStrategy_PACK:
				if used[id] > 0 {
					pref = 1
				}
			default:
				pref = -used[id]
			}
			return pref, left[id][resources.CPU]
		}
		for _, id := range ids {
			if !left[id].Fits(want) {
				continue
			}
			if g.Strategy == cpb.PlacementStrategy_STRICT_SPREAD && used[id] > 0 {
				continue
			}
			if best == "" {
				best = id
				continue
			}
			p1, c1 := score(id)
			p2, c2 := score(best)
			if p1 > p2 || (p1 == p2 && c1 > c2) {
				best = id
			}
		}
		if best == "" {
			return nil
		}
		out[i] = best
		used[best]++
		left[best].Sub(want)
	}
	return out
}
