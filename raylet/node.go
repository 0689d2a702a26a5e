package raylet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/fsm"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// remoteNode is another alive node as the cluster view last saw it.
type remoteNode struct {
	id, address  string
	total, avail resources.Set
	labels       map[string]string
}

func (r *Raylet) register(ctx context.Context) error {
	_, err := r.cp.RegisterNode(ctx, &cpb.NodeInfo{NodeId: r.cfg.NodeID, Address: r.Address(),
		Resources: r.total.Clone(), Labels: r.cfg.Labels, ObjectStoreAddress: r.Address(), MetricsAddress: r.MetricsAddress()})
	if err != nil {
		return err
	}
	r.log.Info("node registered")
	return nil
}

// heartbeatLoop reports the free resources. A leader that does not know the
// node (a failover, or a registration it lost) gets it registered again; a
// node marked dead ends the raylet, as Ray's does: its tasks have been
// given up on, and a restarted raylet registers as a new node.
//
// Besides every HeartbeatInterval, it reports within availabilityPoll of
// a change of its free resources: other raylets spill work here from
// their view of them, and a stale view leaves CPUs idle while requests
// wait elsewhere.
func (r *Raylet) heartbeatLoop() {
	t := time.NewTicker(min(availabilityPoll, r.cfg.HeartbeatInterval))
	defer t.Stop()
	var sent resources.Set
	var sentDemand string
	var last time.Time
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if f := r.cfg.Knobs.SkipHeartbeat; f != nil && f() {
			continue
		}
		r.mu.Lock()
		avail := r.avail.Clone()
		demand, sig := r.demandLocked()
		r.mu.Unlock()
		if time.Since(last) < r.cfg.HeartbeatInterval && maps.Equal(avail, sent) && sig == sentDemand {
			continue
		}
		sent, sentDemand, last = avail, sig, time.Now()
		objects, _ := r.store.Stats()
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		_, err := r.cp.Heartbeat(ctx, &cpb.HeartbeatRequest{NodeId: r.cfg.NodeID, Available: avail,
			Demand: demand, Objects: int64(objects)})
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, fsm.ErrNodeNotFound):
			r.log.Warn("control plane does not know this node; registering again")
			if err := r.register(r.ctx); err != nil {
				r.log.Warn("re-register", zap.Error(err))
			}
		case errors.Is(err, fsm.ErrNodeDead):
			r.log.Error("control plane marked this node dead; the raylet exits")
			r.fail(ErrNodeDead)
			return
		default:
			if r.ctx.Err() == nil {
				r.log.Debug("heartbeat", zap.Error(err))
			}
		}
	}
}

// availabilityPoll is how often a raylet looks for a change of its free
// resources to report.
const availabilityPoll = 50 * time.Millisecond

// viewLoop refreshes the cluster resource view from the leader; after the
// first whole list the leader sends only the nodes that changed. In a
// cluster of more than a few hundred nodes it refreshes less often, so
// the leader answers at most ~1,000 refreshes a second in all.
func (r *Raylet) viewLoop() {
	t := time.NewTicker(r.cfg.ViewInterval)
	defer t.Stop()
	nodes := r.cp.NewNodeView()
	for {
		ctx, cancel := context.WithTimeout(r.ctx, 3*time.Second)
		_, err := nodes.Refresh(ctx)
		cancel()
		if err == nil {
			// Rebuilt every time, changed or not: scheduling subtracts what
			// it spills to a node from the view until the next refresh.
			view := r.buildView(nodes.Nodes())
			r.mu.Lock()
			changed := len(view) != len(r.view)
			for id := range view {
				if r.view[id] == nil {
					changed = true
				}
			}
			r.view = view
			wantGroups := false
			for _, q := range r.queue {
				wantGroups = wantGroups || q.req.GetStrategy().GetKind() == cpb.SchedulingStrategy_PLACEMENT_GROUP
			}
			r.mu.Unlock()
			if wantGroups {
				r.refreshGroups()
			}
			if changed {
				r.log.Info("cluster view changed", zap.Int("other_nodes", len(view)))
			}
			r.wake()
		} else if r.ctx.Err() == nil {
			r.log.Debug("refresh cluster view", zap.Error(err))
		}
		t.Reset(nodes.Interval(r.cfg.ViewInterval))
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// buildView turns the leader's alive nodes into this raylet's view of the
// others.
func (r *Raylet) buildView(nodes map[string]*cpb.NodeInfo) map[string]*remoteNode {
	view := make(map[string]*remoteNode, len(nodes))
	for _, n := range nodes {
		if n.NodeId == r.cfg.NodeID || n.State != cpb.NodeState_NODE_ALIVE {
			continue
		}
		avail := resources.Set(n.Available)
		if n.LastHeartbeatUnixNano == 0 && len(avail) == 0 {
			avail = resources.Set(n.Resources).Clone()
		}
		view[n.NodeId] = &remoteNode{id: n.NodeId, address: n.Address,
			total: resources.Set(n.Resources).Clone(), avail: avail.Clone(), labels: n.Labels}
	}
	return view
}

// jobLoop watches jobs and, for every job that ends, kills its workers and
// frees its objects on this node.
func (r *Raylet) jobLoop() {
	err := r.cp.Watch(r.ctx, &cpb.WatchRequest{Kinds: []cpb.EventKind{cpb.EventKind_EVENT_JOB}}, func(w *cpb.WatchResponse) error {
		for _, ev := range w.Events {
			if j := ev.Job; j != nil && j.State != cpb.JobState_JOB_RUNNING && j.State != cpb.JobState_JOB_STATE_UNSPECIFIED {
				r.jobEnded(j.JobId, "job "+j.State.String())
				r.jobEndedObjects(j.JobId, j.Retained)
			}
		}
		return nil
	})
	if err != nil && r.ctx.Err() == nil {
		r.log.Warn("job watch ended", zap.Error(err))
	}
}

// refreshGroups reads where placement groups' bundles are, for requests
// of groups whose bundles this node does not hold.
func (r *Raylet) refreshGroups() {
	ctx, cancel := context.WithTimeout(r.ctx, 3*time.Second)
	resp, err := r.cp.ListPlacementGroups(ctx, true)
	cancel()
	if err != nil {
		if r.ctx.Err() == nil {
			r.log.Debug("refresh placement groups", zap.Error(err))
		}
		return
	}
	groups := make(map[string]*groupView, len(resp))
	for _, g := range resp {
		v := &groupView{removed: g.State == cpb.PlacementGroupState_PG_REMOVED}
		for _, b := range g.Bundles {
			node := b.NodeId
			if g.State != cpb.PlacementGroupState_PG_CREATED && g.State != cpb.PlacementGroupState_PG_RESCHEDULING {
				node = ""
			}
			v.bundles = append(v.bundles, bundleView{res: resources.Set(b.Resources), node: node})
		}
		groups[g.PlacementGroupId] = v
	}
	r.mu.Lock()
	r.groups = groups
	r.mu.Unlock()
}

// demandLocked sums the waiting lease requests by resource shape: per
// owner and shape, the backlog its latest request reported (its tasks of
// the shape waiting for a worker; an owner may send more requests than it
// has tasks, so requests alone overcount), or its queued requests if it
// reported none, as Ray's raylets report their load. The signature changes when
// the demand does, so a change is reported at once.
func (r *Raylet) demandLocked() ([]*cpb.ResourceDemand, string) {
	type ownerShape struct{ owner, shape string }
	type agg struct {
		res        resources.Set
		labels     map[string]string
		queued     int32
		backlog    int32
		arrived    time.Time
		infeasible bool
	}
	per := map[ownerShape]*agg{}
	var order []ownerShape
	for _, q := range r.queue {
		st := q.req.Strategy
		switch {
		case q.cancelled:
			continue
		case st.GetKind() == cpb.SchedulingStrategy_PLACEMENT_GROUP:
			continue // waits for its group's bundle: the group is the demand
		case st.GetKind() == cpb.SchedulingStrategy_NODE_AFFINITY && !st.GetSoft():
			continue // only its node will do: no new node helps
		}
		var labels map[string]string
		shape := q.res.Key()
		if st.GetKind() == cpb.SchedulingStrategy_NODE_LABELS && len(st.GetHardLabels()) > 0 {
			labels = st.GetHardLabels()
			shape += "|" + labelKey(labels)
		}
		k := ownerShape{q.req.OwnerAddress, shape}
		a := per[k]
		if a == nil {
			a = &agg{res: q.res, labels: labels}
			per[k] = a
			order = append(order, k)
		}
		a.queued++
		if q.arrived.After(a.arrived) || a.arrived.IsZero() {
			a.arrived, a.backlog = q.arrived, q.req.Backlog
		}
		a.infeasible = a.infeasible || q.infeasible
	}
	byShape := map[string]*cpb.ResourceDemand{}
	var shapes []string
	for _, k := range order {
		a := per[k]
		d := byShape[k.shape]
		if d == nil {
			d = &cpb.ResourceDemand{Shape: a.res.Clone(), Labels: a.labels}
			byShape[k.shape] = d
			shapes = append(shapes, k.shape)
		}
		if a.backlog > 0 {
			d.Count += a.backlog
		} else {
			d.Count += a.queued
		}
		d.Infeasible = d.Infeasible || a.infeasible
	}
	sort.Strings(shapes)
	out := make([]*cpb.ResourceDemand, 0, len(shapes))
	var sig strings.Builder
	for _, s := range shapes {
		d := byShape[s]
		out = append(out, d)
		fmt.Fprintf(&sig, "%s:%d:%t;", s, d.Count, d.Infeasible)
	}
	return out, sig.String()
}

func labelKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%s,", k, m[k])
	}
	return sb.String()
}
