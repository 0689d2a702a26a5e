package autoscaler

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Cluster is what the autoscaler reads and writes: the leader's view of
// the control store and of the raylets' reports.
type Cluster interface {
	// Nodes are the registered nodes; alive ones carry the free
	// resources of their last heartbeat in Available.
	Nodes() []*pb.NodeInfo
	// Load is the raylets' reported demand, by shape over all nodes, and
	// how many objects each node's store holds.
	Load() (demand []*pb.ResourceDemand, objects map[string]int64)
	PlacementGroups() []*pb.PlacementGroupInfo
	Instances() []*pb.AutoscalerInstance
	RequestedResources() []*pb.Bundle
	// Apply commits a command through Raft.
	Apply(ctx context.Context, t fsm.CommandType, body proto.Message) error
}

// Options configure an Autoscaler.
type Options struct {
	Config   *Config
	Provider Provider
	Cluster  Cluster
	Logger   *zap.Logger
}

// Autoscaler is the leader's autoscaler. Run is a leader routine; its soft
// state (idle timers, launch errors) starts afresh with each leadership.
type Autoscaler struct {
	cfg  *Config
	prov Provider
	cl   Cluster
	log  *zap.Logger

	mu sync.Mutex
	// ensured are the pending instances this leadership handed to the
	// provider; the others (a predecessor's) are launched again, which
	// the provider ignores if they were.
	ensured   map[string]bool
	idleSince map[string]time.Time
	errs      map[string]*launchErrors
	errsTotal int64
	demand    []*pb.ResourceDemand // pending demand of the last round
	running   bool
}

type launchErrors struct {
	n     int
	until time.Time
	last  string
}

// New returns an autoscaler; the config must have been validated.
func New(o Options) *Autoscaler {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	a := &Autoscaler{cfg: o.Config, prov: o.Provider, cl: o.Cluster, log: o.Logger.Named("autoscaler")}
	a.reset()
	return a
}

func (a *Autoscaler) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ensured = map[string]bool{}
	a.idleSince = map[string]time.Time{}
	a.errs = map[string]*launchErrors{}
	a.demand = nil
}

// Run runs a round every Interval until ctx ends.
func (a *Autoscaler) Run(ctx context.Context) {
	a.reset()
	a.mu.Lock()
	a.running = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
	}()
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		if err := a.Round(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("autoscaler round", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Round reconciles the instances with their nodes and the provider, then
// launches for demand and removes idle nodes.
func (a *Autoscaler) Round(ctx context.Context) error {
	now := time.Now()
	nodes := map[string]*pb.NodeInfo{}
	for _, n := range a.cl.Nodes() {
		nodes[n.NodeId] = n
	}
	provided, err := a.prov.Instances(ctx)
	if err != nil {
		a.log.Warn("list provider instances", zap.Error(err))
		provided = nil
	}
	if err := a.reconcile(ctx, now, nodes, provided); err != nil {
		return err
	}
	insts := a.cl.Instances()
	plan, used, reasons := a.plan(nodes, insts)
	if err := a.launch(ctx, plan, reasons); err != nil {
		return err
	}
	return a.scaleDown(ctx, now, nodes, a.cl.Instances(), used)
}

// reconcile moves each live instance along: a pending one whose node
// registered is running; one that failed, died or never registered in
// time is terminated and marked failed (its demand, still there, launches
// another); a terminating one is terminated.
func (a *Autoscaler) reconcile(ctx context.Context, now time.Time, nodes map[string]*pb.NodeInfo, provided map[string]InstanceStatus) error {
	for _, in := range a.cl.Instances() {
		n := nodes[in.InstanceId]
		alive := n != nil && n.State == pb.NodeState_NODE_ALIVE
		switch in.State {
		case pb.InstanceState_INSTANCE_PENDING:
			t := a.cfg.nodeType(in.NodeType)
			switch {
			case alive:
				a.clearErrors(in.NodeType)
				if err := a.setState(ctx, in, pb.InstanceState_INSTANCE_RUNNING, "node registered"); err != nil {
					return err
				}
			case t == nil:
				if err := a.fail(ctx, in, fmt.Sprintf("node type %q is no longer in the config", in.NodeType)); err != nil {
					return err
				}
			case n != nil:
				if err := a.fail(ctx, in, "node died before it was seen running: "+n.DeathReason); err != nil {
					return err
				}
			case provided != nil && provided[in.InstanceId] == StatusFailed:
				if err := a.fail(ctx, in, "node failed before it registered"); err != nil {
					return err
				}
			case now.Sub(time.Unix(0, in.LaunchedUnixNano)) > a.cfg.LaunchTimeout:
				if err := a.fail(ctx, in, fmt.Sprintf("node did not register within %s", a.cfg.LaunchTimeout)); err != nil {
					return err
				}
			case !a.isEnsured(in.InstanceId):
				// A predecessor's launch: repeat it (the provider ignores it if it was made).
				a.providerLaunch(ctx, in, *t)
			}
		case pb.InstanceState_INSTANCE_RUNNING:
			switch {
			case n == nil || n.State == pb.NodeState_NODE_DEAD:
				reason := "node is gone"
				if n != nil {
					reason = "node died: " + n.DeathReason
				}
				if err := a.fail(ctx, in, reason); err != nil {
					return err
				}
			case provided != nil && provided[in.InstanceId] == StatusFailed:
				if err := a.fail(ctx, in, "node's process or pod failed"); err != nil {
					return err
				}
			}
		case pb.InstanceState_INSTANCE_TERMINATING:
			if err := a.terminate(ctx, in, pb.InstanceState_INSTANCE_TERMINATED, "terminated"); err != nil {
				return err
			}
		}
	}
	return nil
}

// fail terminates an instance and records it failed; a launch failure
// counts toward its type's backoff.
func (a *Autoscaler) fail(ctx context.Context, in *pb.AutoscalerInstance, reason string) error {
	a.log.Warn("instance failed", zap.String("instance", in.InstanceId), zap.String("type", in.NodeType), zap.String("reason", reason))
	if in.State == pb.InstanceState_INSTANCE_PENDING {
		a.recordError(in.NodeType, reason)
	}
	return a.terminate(ctx, in, pb.InstanceState_INSTANCE_FAILED, reason)
}

func (a *Autoscaler) terminate(ctx context.Context, in *pb.AutoscalerInstance, final pb.InstanceState, reason string) error {
	if err := a.prov.Terminate(ctx, in.InstanceId); err != nil {
		// Retried next round: the instance stays as it is.
		a.log.Warn("terminate instance", zap.String("instance", in.InstanceId), zap.Error(err))
		return nil
	}
	return a.setState(ctx, in, final, reason)
}

func (a *Autoscaler) setState(ctx context.Context, in *pb.AutoscalerInstance, st pb.InstanceState, reason string) error {
	nodeID := ""
	if st == pb.InstanceState_INSTANCE_RUNNING {
		nodeID = in.InstanceId
	}
	return a.cl.Apply(ctx, fsm.CmdAutoscalerInstance, &pb.AutoscalerInstanceCommand{
		InstanceId: in.InstanceId, State: st, NodeId: nodeID, Reason: reason})
}

func (a *Autoscaler) isEnsured(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ensured[id]
}

// providerLaunch asks the provider; an error marks the instance failed
// (the demand launches another after the type's backoff).
func (a *Autoscaler) providerLaunch(ctx context.Context, in *pb.AutoscalerInstance, t NodeType) {
	err := a.prov.Launch(ctx, Instance{ID: in.InstanceId, Type: t})
	if err == nil {
		a.mu.Lock()
		a.ensured[in.InstanceId] = true
		a.mu.Unlock()
		return
	}
	reason := "launch: " + err.Error()
	a.log.Warn("launch failed", zap.String("instance", in.InstanceId), zap.String("type", t.Name), zap.Error(err))
	a.recordError(t.Name, reason)
	if err := a.terminate(ctx, in, pb.InstanceState_INSTANCE_FAILED, reason); err != nil {
		a.log.Warn("record failed launch", zap.Error(err))
	}
}

func (a *Autoscaler) recordError(nodeType, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.errs[nodeType]
	if e == nil {
		e = &launchErrors{}
		a.errs[nodeType] = e
	}
	e.n++
	a.errsTotal++
	e.last = reason
	backoff := a.cfg.Interval << min(e.n-1, 20)
	e.until = time.Now().Add(min(backoff, a.cfg.MaxBackoff))
}

func (a *Autoscaler) clearErrors(nodeType string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.errs[nodeType]; e != nil {
		e.n, e.until = 0, time.Time{}
	}
}

func (a *Autoscaler) backedOff(nodeType string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.errs[nodeType]
	return e != nil && now.Before(e.until)
}

// plan bin-packs the demand. Requested resources (RequestResources) are
// packed first onto the nodes' totals, as Ray's request_resources: they
// size the cluster whatever runs on it. Then the raylets' waiting
// requests and pending placement groups are packed onto the nodes' free
// resources, pending launches and the nodes just planned. It returns the
// launches per type, the nodes the requested resources or the waiting
// demand need (not removed while idle) and the reasons of launches per type.
func (a *Autoscaler) plan(nodes map[string]*pb.NodeInfo, insts []*pb.AutoscalerInstance) (map[string]int, map[string]bool, map[string]string) {
	now := time.Now()
	live := map[string]int{}
	pendingCount, liveTotal := 0, 0
	var pending []*pb.AutoscalerInstance
	for _, in := range insts {
		switch in.State {
		case pb.InstanceState_INSTANCE_PENDING:
			pending = append(pending, in)
			pendingCount++
			fallthrough
		case pb.InstanceState_INSTANCE_RUNNING, pb.InstanceState_INSTANCE_TERMINATING:
			live[in.NodeType]++
			liveTotal++
		}
	}
	room := map[string]int{}
	for _, t := range a.cfg.NodeTypes {
		if !a.backedOff(t.Name, now) {
			room[t.Name] = max(0, t.MaxCount-live[t.Name])
		}
	}
	upscale := max(5, int(math.Ceil(a.cfg.UpscalingSpeed*float64(liveTotal))))
	budget := max(0, min(a.cfg.MaxNodes-liveTotal, upscale-pendingCount))
	launch := map[string]int{}
	reasons := map[string]string{}

	// Min counts come first: they are not demand, they are the floor.
	for _, t := range a.cfg.NodeTypes {
		if k := min(t.MinCount-live[t.Name], room[t.Name], budget); k > 0 {
			launch[t.Name] += k
			room[t.Name] -= k
			budget -= k
			reasons[t.Name] = fmt.Sprintf("min_count %d", t.MinCount)
		}
	}

	var totals, free []Bin
	ids := sortedKeys(nodes)
	for _, id := range ids {
		n := nodes[id]
		if n.State != pb.NodeState_NODE_ALIVE {
			continue
		}
		nt := n.Labels[LabelNodeType]
		totals = append(totals, Bin{ID: id, NodeType: nt, Free: n.Resources, Labels: n.Labels})
		avail := n.Available
		if avail == nil {
			avail = n.Resources
		}
		free = append(free, Bin{ID: id, NodeType: nt, Free: avail, Labels: n.Labels})
	}
	for _, in := range pending {
		if t := a.cfg.nodeType(in.NodeType); t != nil && nodes[in.InstanceId] == nil {
			lb := Instance{ID: in.InstanceId, Type: *t}.Labels()
			totals = append(totals, Bin{ID: in.InstanceId, NodeType: t.Name, Free: t.Resources, Labels: lb})
			free = append(free, Bin{ID: in.InstanceId, NodeType: t.Name, Free: t.Resources, Labels: lb})
		}
	}
	for name, k := range launch {
		for i := 0; i < k; i++ {
			t := a.cfg.nodeType(name)
			free = append(free, Bin{ID: fmt.Sprintf("min-%s-%d", name, i), NodeType: name, Free: t.Resources, Labels: t.Labels})
			totals = append(totals, Bin{ID: fmt.Sprintf("min-%s-%d", name, i), NodeType: name, Free: t.Resources, Labels: t.Labels})
		}
	}

	var all []*pb.ResourceDemand
	var requested []Demand
	for _, b := range a.cl.RequestedResources() {
		requested = append(requested, Demand{Shape: b.Resources, Count: 1, Source: "request_resources"})
	}
	pk := Packer{Types: a.cfg.NodeTypes, Room: room, Budget: budget}
	pa := pk.Pack(totals, nil, requested)
	used := pa.Used
	a.take(pa, launch, reasons, room, &budget, "request_resources")
	for name, k := range pa.Launch {
		for i := 0; i < k; i++ {
			t := a.cfg.nodeType(name)
			free = append(free, Bin{ID: fmt.Sprintf("req-%s-%d", name, i), NodeType: name, Free: t.Resources, Labels: t.Labels})
		}
	}
	all = append(all, demandsPB(pa.Infeasible, true)...)
	all = append(all, demandsPB(pa.Unmet, false)...)

	load, _ := a.cl.Load()
	var demands []Demand
	for _, d := range load {
		demands = append(demands, Demand{Shape: d.Shape, Labels: d.Labels, Count: int(d.Count), Source: "tasks"})
	}
	var gangs []Gang
	for _, g := range a.cl.PlacementGroups() {
		switch g.State {
		case pb.PlacementGroupState_PG_PENDING, pb.PlacementGroupState_PG_INFEASIBLE, pb.PlacementGroupState_PG_RESCHEDULING:
		default:
			continue
		}
		gang := Gang{Strategy: g.Strategy, Source: "placement group " + g.PlacementGroupId}
		for _, b := range g.Bundles {
			if b.NodeId == "" {
				gang.Bundles = append(gang.Bundles, b.Resources)
			}
		}
		if len(gang.Bundles) > 0 {
			gangs = append(gangs, gang)
		}
	}
	pk = Packer{Types: a.cfg.NodeTypes, Room: room, Budget: budget}
	pb2 := pk.Pack(free, gangs, demands)
	// A node that waiting demand fits on is not idle: it is about to get
	// work (a node launched for a task is free until the task reaches it).
	for id := range pb2.Used {
		used[id] = true
	}
	a.take(pb2, launch, reasons, room, &budget, "")
	// Task demand is shown as the raylets report it, marked when no node
	// type fits it or limits hold it back; groups' as the packer left them.
	why := map[string]string{}
	for _, d := range pb2.Infeasible {
		if d.Source == "tasks" {
			why[DemandKey(d.Shape, d.Labels)] = " (no node type fits it)"
		}
	}
	for _, d := range pb2.Unmet {
		if d.Source == "tasks" {
			why[DemandKey(d.Shape, d.Labels)] = " (limits: max_count, max_nodes, upscaling_speed or launch backoff)"
		}
	}
	for _, d := range load {
		if w := why[DemandKey(d.Shape, d.Labels)]; w != "" {
			d = proto.Clone(d).(*pb.ResourceDemand)
			d.Source += w
		}
		all = append(all, d)
	}
	var groups []Demand
	for _, d := range pb2.Infeasible {
		if d.Source != "tasks" {
			groups = append(groups, d)
		}
	}
	all = append(all, demandsPB(groups, true)...)
	groups = groups[:0]
	for _, d := range pb2.Unmet {
		if d.Source != "tasks" {
			groups = append(groups, d)
		}
	}
	all = append(all, demandsPB(groups, false)...)
	a.mu.Lock()
	a.demand = all
	a.mu.Unlock()
	return launch, used, reasons
}

// take adds a plan's launches to launch and says why.
func (a *Autoscaler) take(p *Plan, launch map[string]int, reasons map[string]string, room map[string]int, budget *int, source string) {
	for name, k := range p.Launch {
		launch[name] += k
		room[name] -= k
		*budget -= k
		if source != "" {
			reasons[name] = source
		}
	}
	if source == "" {
		for name := range p.Launch {
			reasons[name] = p.Reasons[name]
		}
	}
	for _, d := range p.Infeasible {
		a.log.Debug("demand fits no node type", zap.String("shape", ShapeKey(d.Shape)), zap.Int("count", d.Count), zap.String("source", d.Source))
	}
}

func demandsPB(ds []Demand, infeasible bool) []*pb.ResourceDemand {
	out := make([]*pb.ResourceDemand, 0, len(ds))
	for _, d := range ds {
		src := d.Source
		if infeasible {
			src += " (no node type fits it)"
		} else {
			src += " (limits: max_count, max_nodes, upscaling_speed or launch backoff)"
		}
		out = append(out, &pb.ResourceDemand{Shape: d.Shape, Labels: d.Labels, Count: int32(d.Count), Infeasible: infeasible, Source: src})
	}
	return out
}

// launch records each launch in Raft, then asks the provider.
func (a *Autoscaler) launch(ctx context.Context, launch map[string]int, reasons map[string]string) error {
	for _, name := range sortedKeys(launch) {
		t := a.cfg.nodeType(name)
		for i := 0; i < launch[name]; i++ {
			id := instanceID(name)
			reason := reasons[name]
			if reason == "" {
				reason = "demand"
			}
			if err := a.cl.Apply(ctx, fsm.CmdAutoscalerLaunch, &pb.AutoscalerLaunchCommand{InstanceId: id, NodeType: name, Reason: reason}); err != nil {
				return err
			}
			a.log.Info("launching node", zap.String("instance", id), zap.String("type", name), zap.String("reason", reason))
			a.providerLaunch(ctx, &pb.AutoscalerInstance{InstanceId: id, NodeType: name, State: pb.InstanceState_INSTANCE_PENDING}, *t)
		}
	}
	return nil
}

// instanceID is a fresh instance (and node) ID: a DNS label, so it can name
// a pod too.
func instanceID(nodeType string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(nodeType) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
	}
	t := strings.Trim(sb.String(), "-")
	if len(t) > 40 {
		t = t[:40]
	}
	return "manta-" + t + "-" + auth.RandomHex(4)
}

// scaleDown removes running instances idle for IdleTimeout: no resources
// in use, no objects in the store (Ray's rule: a node holding objects is
// not idle, so no only copy is lost), not needed by requested resources,
// and above their type's min_count.
func (a *Autoscaler) scaleDown(ctx context.Context, now time.Time, nodes map[string]*pb.NodeInfo, insts []*pb.AutoscalerInstance, keep map[string]bool) error {
	_, objects := a.cl.Load()
	live := map[string]int{}
	for _, in := range insts {
		if in.State == pb.InstanceState_INSTANCE_PENDING || in.State == pb.InstanceState_INSTANCE_RUNNING {
			live[in.NodeType]++
		}
	}
	seen := map[string]bool{}
	for _, in := range insts {
		if in.State != pb.InstanceState_INSTANCE_RUNNING {
			continue
		}
		n := nodes[in.InstanceId]
		if n == nil || n.State != pb.NodeState_NODE_ALIVE {
			continue
		}
		seen[n.NodeId] = true
		idle := n.Available != nil && sameResources(n.Available, n.Resources) && objects[n.NodeId] == 0 && !keep[n.NodeId]
		a.mu.Lock()
		since, ok := a.idleSince[n.NodeId]
		if !idle {
			delete(a.idleSince, n.NodeId)
		} else if !ok {
			a.idleSince[n.NodeId], since = now, now
		}
		a.mu.Unlock()
		t := a.cfg.nodeType(in.NodeType)
		if !idle || now.Sub(since) < a.cfg.IdleTimeout || (t != nil && live[in.NodeType] <= t.MinCount) {
			continue
		}
		live[in.NodeType]--
		reason := fmt.Sprintf("idle for %s (idle_timeout %s)", now.Sub(since).Round(time.Second), a.cfg.IdleTimeout)
		a.log.Info("removing idle node", zap.String("instance", in.InstanceId), zap.String("reason", reason))
		if err := a.setState(ctx, in, pb.InstanceState_INSTANCE_TERMINATING, reason); err != nil {
			return err
		}
		// Marked dead first: its raylet takes no more leases, and its
		// end is not mistaken for a failure.
		if err := a.cl.Apply(ctx, fsm.CmdMarkNodeDead, &pb.MarkNodeDeadCommand{NodeId: n.NodeId, Reason: "removed by the autoscaler: " + reason}); err != nil {
			return err
		}
		if err := a.terminate(ctx, in, pb.InstanceState_INSTANCE_TERMINATED, reason); err != nil {
			return err
		}
	}
	a.mu.Lock()
	for id := range a.idleSince {
		if !seen[id] {
			delete(a.idleSince, id)
		}
	}
	a.mu.Unlock()
	return nil
}

func sameResources(a, b map[string]float64) bool {
	for k, v := range b {
		if math.Abs(a[k]-v) > 1e-6 {
			return false
		}
	}
	return true
}

// Status is the autoscaler's view for `manta status`.
func (a *Autoscaler) Status() *pb.AutoscalerStatusResponse {
	insts := a.cl.Instances()
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &pb.AutoscalerStatusResponse{Enabled: true, Instances: insts, PendingDemands: a.demand,
		Decisions: nil, RequestedResources: a.cl.RequestedResources(), LaunchErrorsTotal: a.errsTotal}
	for _, t := range a.cfg.NodeTypes {
		s := &pb.NodeTypeStatus{Name: t.Name, MinCount: int32(t.MinCount), MaxCount: int32(t.MaxCount), Resources: t.Resources}
		for _, in := range insts {
			if in.NodeType != t.Name {
				continue
			}
			switch in.State {
			case pb.InstanceState_INSTANCE_RUNNING:
				s.Active++
			case pb.InstanceState_INSTANCE_PENDING:
				s.Pending++
			case pb.InstanceState_INSTANCE_FAILED:
				s.Failed++
			}
		}
		if e := a.errs[t.Name]; e != nil {
			s.LaunchErrors, s.LastError = int32(e.n), e.last
			if !e.until.IsZero() {
				s.BackoffUntilUnixNano = e.until.UnixNano()
			}
		}
		out.NodeTypes = append(out.NodeTypes, s)
	}
	sort.Slice(out.NodeTypes, func(i, j int) bool { return out.NodeTypes[i].Name < out.NodeTypes[j].Name })
	return out
}
