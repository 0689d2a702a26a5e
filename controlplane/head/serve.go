package head

// The Serve controller (Ray's ServeController) as a leader routine. The
// applications users deploy are the desired state in the FSM; the routine
// reconciles toward it: a proxy actor on every alive node, and for each
// deployment replica actors of its current version, started, checked,
// replaced, rolled over to a new version (new ones RUNNING before old ones
// drain) and scaled by load. Each decision is a Raft command (replica and
// proxy records are written before their actors are registered, with the
// same ID), so a new leader finds every replica its predecessor started
// and finishes the update rather than starting it again. What replicas
// and proxies report (load, health, address) is soft state the leader
// holds; a new leader waits a grace period for fresh reports before it
// judges health.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Serve controller timings. Replicas and proxies report every
// ServeReportPeriod (sdk/serve); a replica not heard of for
// serveReportTimeout, or reporting itself unhealthy, is replaced.
const (
	// ServeProxyClass is the proxy's actor class, registered by sdk/serve
	// in every binary that imports it (TestProxyClassName keeps the two
	// names equal).
	ServeProxyClass    = "manta.serve.proxy"
	serveReportTimeout = 10 * time.Second
	// serveDrainTimeout bounds how long a draining replica may finish
	// its requests before it is ended.
	serveDrainTimeout = 5 * time.Second
	serveTick         = 200 * time.Millisecond
)

type serveReport struct {
	ongoing int32
	healthy bool
	msg     string
	addr    string
	queued  map[string]int32
	worker  string
	routes  uint64
	at      time.Time
}

// startFailures counts a deployment's replicas that died before they ran
// (a constructor that fails, a class the binary lacks): new ones are
// started with a growing pause, and the status says why.
type startFailures struct {
	n       int
	last    time.Time
	cause   string
	version string // a new version starts afresh
}

// startBackoff is the pause before another replica of a deployment whose
// last n replicas failed to start: none for the first two, then from
// 200 ms doubling to 30 s.
func startBackoff(n int) time.Duration {
	if n < 3 {
		return 0
	}
	d := 200 * time.Millisecond << min(n-3, 8)
	return min(d, 30*time.Second)
}

// scaleWant is a deployment's pending autoscaling wish and since when.
type scaleWant struct {
	target int32
	since  time.Time
}

type serveController struct {
	h *Head

	mu      sync.Mutex
	reports map[string]*serveReport // by replica or proxy actor ID
	wants   map[string]scaleWant    // by app/deployment
	fails   map[string]*startFailures
	since   time.Time // when this head began to lead
}

func newServeController(h *Head) *serveController {
	return &serveController{h: h, reports: map[string]*serveReport{}, wants: map[string]scaleWant{}, fails: map[string]*startFailures{}}
}

func (s *serveController) report(r *pb.ServeReportRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports[r.ActorId] = &serveReport{ongoing: r.Ongoing, healthy: r.Healthy, msg: r.Message,
		addr: r.Address, queued: r.Queued, worker: r.WorkerId, routes: r.RoutesIndex, at: time.Now()}
}

func (s *serveController) lastReport(id string) *serveReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reports[id]
}

func (s *serveController) run(ctx context.Context) {
	s.mu.Lock()
	s.reports, s.wants, s.since = map[string]*serveReport{}, map[string]scaleWant{}, time.Now()
	s.fails = map[string]*startFailures{}
	s.mu.Unlock()
	t := time.NewTicker(serveTick)
	defer t.Stop()
	for {
		ch, _ := s.h.fsm.Changed()
		s.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ch:
			// Changes come in bursts (actor placement); a short pause
			// folds them into one pass.
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		case <-t.C:
		}
	}
}

func (s *serveController) apply(ctx context.Context, t fsm.CommandType, body proto.Message) error {
	_, err := s.h.applier.Apply(ctx, t, "", body)
	if err != nil && ctx.Err() == nil {
		s.h.log.Warn("serve command", zap.Stringer("command", t), zap.Error(err))
	}
	return err
}

func (s *serveController) reconcile(ctx context.Context) {
	apps := s.h.fsm.ServeApps()
	s.reconcileProxies(ctx, apps)
	byApp := map[string]*pb.ServeApp{}
	for _, a := range apps {
		byApp[a.Name] = a
	}
	groups := map[string][]*pb.ServeReplica{}
	for _, r := range s.h.fsm.ServeReplicas() {
		if ctx.Err() != nil {
			return
		}
		d := findDeployment(byApp[r.App], r.Deployment)
		if d == nil || r.State == pb.ServeReplicaState_REPLICA_DRAINING {
			s.drain(ctx, r)
			continue
		}
		if keep := s.check(ctx, byApp[r.App], d, r); keep {
			groups[r.App+"/"+r.Deployment] = append(groups[r.App+"/"+r.Deployment], r)
		}
	}
	live := map[string]string{}
	for _, a := range apps {
		for _, d := range a.Deployments {
			if ctx.Err() != nil {
				return
			}
			live[a.Name+"/"+d.Name] = d.Version
			s.mu.Lock()
			if f := s.fails[a.Name+"/"+d.Name]; f != nil && f.version != d.Version {
				delete(s.fails, a.Name+"/"+d.Name) // a new version starts afresh
			}
			s.mu.Unlock()
			s.autoscale(ctx, a, d, groups[a.Name+"/"+d.Name])
			s.scale(ctx, a, d, groups[a.Name+"/"+d.Name])
		}
	}
	s.mu.Lock()
	for k := range s.fails {
		if _, ok := live[k]; !ok {
			delete(s.fails, k) // deleted (or redeployed under another name)
		}
	}
	s.mu.Unlock()
}

func findDeployment(a *pb.ServeApp, name string) *pb.ServeDeployment {
	for _, d := range a.GetDeployments() {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// check looks after one live replica record: its actor registered, its
// promotion to RUNNING once healthy, its replacement when dead or
// unhealthy. It reports whether the record stays.
func (s *serveController) check(ctx context.Context, a *pb.ServeApp, d *pb.ServeDeployment, r *pb.ServeReplica) bool {
	actor := s.h.fsm.Actor(r.ReplicaId)
	if actor == nil {
		// The record was written but the leader failed before the actor.
		s.registerReplica(ctx, a, d, r.ReplicaId)
		return true
	}
	if actor.State == pb.ActorState_DEAD {
		if r.State == pb.ServeReplicaState_REPLICA_STARTING {
			s.startFailed(r.App+"/"+r.Deployment, r.Version, actor.DeathCause)
		}
		_ = s.apply(ctx, fsm.CmdServeReplica, &pb.ServeReplicaCommand{Replica: r, Remove: true})
		return false
	}
	rep := s.lastReport(r.ReplicaId)
	if actor.State != pb.ActorState_ALIVE {
		return true // placing or restarting: it keeps its place in the count
	}
	fresh := rep != nil && rep.worker == actor.WorkerId
	switch {
	case fresh && !rep.healthy:
		s.replace(ctx, r, "health check failed: "+rep.msg)
		return false
	case r.State == pb.ServeReplicaState_REPLICA_STARTING && fresh && rep.healthy:
		s.mu.Lock()
		delete(s.fails, r.App+"/"+r.Deployment)
		s.mu.Unlock()
		n := proto.Clone(r).(*pb.ServeReplica)
		n.State, n.Reason = pb.ServeReplicaState_REPLICA_RUNNING, ""
		_ = s.apply(ctx, fsm.CmdServeReplica, &pb.ServeReplicaCommand{Replica: n})
	case r.State == pb.ServeReplicaState_REPLICA_RUNNING && time.Since(s.leadSince()) > serveReportTimeout &&
		(rep == nil || time.Since(rep.at) > serveReportTimeout):
		s.replace(ctx, r, "no health report for "+serveReportTimeout.String())
		return false
	}
	return true
}

func (s *serveController) startFailed(key, version, cause string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fails[key]
	if f == nil || f.version != version {
		f = &startFailures{version: version}
		s.fails[key] = f
	}
	f.n, f.last, f.cause = f.n+1, time.Now(), cause
	s.h.log.Warn("serve replica failed to start", zap.String("deployment", key), zap.Int("failures", f.n), zap.String("cause", cause))
}

// startFailure is a deployment's run of failed starts, if any.
func (s *serveController) startFailure(key string) (n int, cause string, wait time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fails[key]
	if f == nil {
		return 0, "", 0
	}
	return f.n, f.cause, time.Until(f.last.Add(startBackoff(f.n)))
}

func (s *serveController) leadSince() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.since
}

// replace ends an unhealthy replica; the count logic starts another.
func (s *serveController) replace(ctx context.Context, r *pb.ServeReplica, why string) {
	s.h.log.Warn("serve replica replaced", zap.String("replica", r.ReplicaId), zap.String("app", r.App),
		zap.String("deployment", r.Deployment), zap.String("reason", why))
	if s.apply(ctx, fsm.CmdActorFailed, &pb.ActorFailedCommand{ActorId: r.ReplicaId, Cause: "serve: " + why, NoRestart: true}) == nil {
		_ = s.apply(ctx, fsm.CmdServeReplica, &pb.ServeReplicaCommand{Replica: r, Remove: true})
	}
}

// drain ends a DRAINING replica (or one whose deployment is gone) once it
// has no request left or the drain timeout passed.
func (s *serveController) drain(ctx context.Context, r *pb.ServeReplica) {
	if r.State != pb.ServeReplicaState_REPLICA_DRAINING {
		n := proto.Clone(r).(*pb.ServeReplica)
		n.State, n.Reason = pb.ServeReplicaState_REPLICA_DRAINING, "deployment removed"
		_ = s.apply(ctx, fsm.CmdServeReplica, &pb.ServeReplicaCommand{Replica: n})
		return
	}
	actor := s.h.fsm.Actor(r.ReplicaId)
	rep := s.lastReport(r.ReplicaId)
	drained := time.Since(time.Unix(0, r.UpdatedUnixNano))
	// The proxies stop routing to it once they see DRAINING (they poll
	// every 100 ms); the last report must postdate that to count.
	idle := rep != nil && rep.ongoing == 0 && rep.at.UnixNano() > r.UpdatedUnixNano+int64(300*time.Millisecond)
	if actor != nil && actor.State != pb.ActorState_DEAD && !idle && drained < serveDrainTimeout {
		return
	}
	if actor != nil && actor.State != pb.ActorState_DEAD {
		if s.apply(ctx, fsm.CmdActorFailed, &pb.ActorFailedCommand{ActorId: r.ReplicaId, Cause: "serve: replica drained (" + r.Reason + ")", NoRestart: true}) != nil {
			return
		}
	}
	_ = s.apply(ctx, fsm.CmdServeReplica, &pb.ServeReplicaCommand{Replica: r, Remove: true})
}

// scale starts and drains replicas of one deployment toward its target
// at its current version. A rolling update starts one new replica at a
// time and drains an old one for each new one that runs, so capacity
// never drops below the target.
func (s *serveController) scale(ctx context.Context, a *pb.ServeApp, d *pb.ServeDeployment, reps []*pb.ServeReplica) {
	target := int(fsm.ServeTarget(d))
	var cur, old []*pb.ServeReplica
	curStarting, running := 0, 0
	for _, r := range reps {
		if r.Version == d.Version {
			cur = append(cur, r)
			if r.State == pb.ServeReplicaState_REPLICA_STARTING {
				curStarting++
			}
		} else {
			old = append(old, r)
		}
		if r.State == pb.ServeReplicaState_REPLICA_RUNNING {
			running++
		}
	}
	need := target - len(cur)
	if len(old) > 0 {
		// Rolling: one surge replica at a time.
		need = min(need, 1)
		if curStarting > 0 {
			need = 0
		}
	}
	if n, _, wait := s.startFailure(a.Name + "/" + d.Name); n >= 3 {
		// Its last replicas failed to start: one at a time, after a
		// growing pause, until one runs.
		if wait > 0 || curStarting > 0 {
			need = 0
		} else {
			need = min(need, 1)
		}
	}
	for range max(need, 0) {
		id := auth.RandomHex(8)
		r := &pb.ServeReplica{ReplicaId: id, App: a.Name, Deployment: d.Name, Version: d.Version,
			State: pb.ServeReplicaState_REPLICA_STARTING}
		if s.apply(ctx, fsm.CmdServeReplica, &pb.ServeReplicaCommand{Replica: r}) != nil {
			return
		}
		s.registerReplica(ctx, a, d, id)
		s.h.log.Info("serve replica started", zap.String("replica", id), zap.String("app", a.Name),
			zap.String("deployment", d.Name), zap.String("version", d.Version))
	}
	// Old versions: a starting one goes at once; a running one once enough
	// current ones run to keep the target.
	sortForDrain(old)
	for _, r := range old {
		if r.State == pb.ServeReplicaState_REPLICA_RUNNING && running <= target {
			break
		}
		s.startDrain(ctx, r, "rolling update to version "+d.Version)
		if r.State == pb.ServeReplicaState_REPLICA_RUNNING {
			running--
		}
	}
	// Too many of the current version (scaled down).
	if extra := len(cur) - target; extra > 0 {
		sortForDrain(cur)
		for _, r := range cur[:extra] {
			s.startDrain(ctx, r, "scaled down")
		}
	}
}

// sortForDrain puts starting replicas first, then the newest.
func sortForDrain(rs []*pb.ServeReplica) {
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].State != rs[j].State {
			return rs[i].State == pb.ServeReplicaState_REPLICA_STARTING
		}
		return rs[i].ReplicaId < rs[j].ReplicaId
	})
}

func (s *serveController) startDrain(ctx context.Context, r *pb.ServeReplica, why string) {
	n := proto.Clone(r).(*pb.ServeReplica)
	n.State, n.Reason = pb.ServeReplicaState_REPLICA_DRAINING, why
	_ = s.apply(ctx, fsm.CmdServeReplica, &pb.ServeReplicaCommand{Replica: n})
}

func (s *serveController) registerReplica(ctx context.Context, a *pb.ServeApp, d *pb.ServeDeployment, id string) {
	info := &pb.ActorInfo{ActorId: id, JobId: a.JobId, ClassName: d.ClassName, Detached: true, MaxRestarts: -1,
		// Health checks and the proxies' calls run beside each other.
		MaxConcurrency: d.MaxOngoingRequests + 2, Resources: d.Resources, BinarySha256: a.BinarySha256,
		Strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_SPREAD}, RuntimeEnv: serveRuntimeEnv(d.EnvVars)}
	s.registerActor(ctx, info)
}

func (s *serveController) registerActor(ctx context.Context, info *pb.ActorInfo) {
	_, err := s.h.applier.Apply(ctx, fsm.CmdRegisterActor, "", info)
	if err != nil && !errors.Is(err, fsm.ErrActorExists) && ctx.Err() == nil {
		s.h.log.Warn("serve: register actor", zap.String("actor", info.ActorId), zap.Error(err))
	}
}

// autoscale moves a deployment's target toward ceil(load / target
// ongoing requests) once the wish has held for the up- or downscale
// delay. Load is the replicas' ongoing requests and the proxies' queues.
func (s *serveController) autoscale(ctx context.Context, a *pb.ServeApp, d *pb.ServeDeployment, reps []*pb.ServeReplica) {
	as := d.Autoscaling
	if as == nil || as.TargetOngoingRequests <= 0 {
		return
	}
	key := a.Name + "/" + d.Name
	var load float64
	s.mu.Lock()
	for _, r := range reps {
		if rep := s.reports[r.ReplicaId]; rep != nil && r.State == pb.ServeReplicaState_REPLICA_RUNNING {
			load += float64(rep.ongoing)
		}
	}
	for _, rep := range s.reports {
		if time.Since(rep.at) < serveReportTimeout {
			load += float64(rep.queued[key])
		}
	}
	s.mu.Unlock()
	want := int32(math.Ceil(load / as.TargetOngoingRequests))
	want = max(as.MinReplicas, min(as.MaxReplicas, want))
	cur := fsm.ServeTarget(d)
	s.mu.Lock()
	w, ok := s.wants[key]
	if want == cur {
		delete(s.wants, key)
		s.mu.Unlock()
		return
	}
	if !ok || (w.target > cur) != (want > cur) {
		w = scaleWant{since: time.Now()}
	}
	w.target = want
	s.wants[key] = w
	delay := time.Duration(as.UpscaleDelayMs) * time.Millisecond
	if want < cur {
		delay = time.Duration(as.DownscaleDelayMs) * time.Millisecond
	}
	due := time.Since(w.since) >= delay
	if due {
		delete(s.wants, key)
	}
	s.mu.Unlock()
	if due {
		s.h.log.Info("serve autoscale", zap.String("deployment", key), zap.Int32("from", cur), zap.Int32("to", want),
			zap.Float64("load", load))
		_ = s.apply(ctx, fsm.CmdServeScale, &pb.ServeScaleCommand{App: a.Name, Deployment: d.Name, TargetReplicas: want})
	}
}

// reconcileProxies keeps one proxy actor per alive node while any
// application is deployed. The proxies run the binary of the oldest
// application's job (sdk/serve registers the proxy class in every binary
// that imports it).
func (s *serveController) reconcileProxies(ctx context.Context, apps []*pb.ServeApp) {
	var job *pb.ServeApp
	jobs := map[string]bool{}
	for _, a := range apps {
		jobs[a.JobId] = true
		if job == nil || a.Index < job.Index {
			job = a
		}
	}
	alive := map[string]bool{}
	for _, n := range s.h.fsm.Nodes() {
		if n.State == pb.NodeState_NODE_ALIVE {
			alive[n.NodeId] = true
		}
	}
	have := map[string]bool{}
	for _, p := range s.h.fsm.ServeProxies() {
		actor := s.h.fsm.Actor(p.ActorId)
		// With no application left the proxies stay (answering 404), as
		// Ray's do after serve.delete, until shutdown; they are replaced
		// when the oldest application is of another job.
		switch {
		case !alive[p.NodeId] || (job != nil && !jobs[p.JobId]) || (actor != nil && actor.State == pb.ActorState_DEAD):
			if actor != nil && actor.State != pb.ActorState_DEAD {
				_ = s.apply(ctx, fsm.CmdActorFailed, &pb.ActorFailedCommand{ActorId: p.ActorId, Cause: "serve: proxy no longer needed", NoRestart: true})
			}
			_ = s.apply(ctx, fsm.CmdServeProxy, &pb.ServeProxyCommand{Proxy: p, Remove: true})
		case actor == nil:
			s.registerProxy(ctx, job, p)
			have[p.NodeId] = true
		default:
			have[p.NodeId] = true
		}
	}
	if job == nil {
		return
	}
	nodes := make([]string, 0, len(alive))
	for n := range alive {
		if !have[n] {
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		p := &pb.ServeProxy{NodeId: n, ActorId: auth.RandomHex(8), JobId: job.JobId}
		if s.apply(ctx, fsm.CmdServeProxy, &pb.ServeProxyCommand{Proxy: p}) != nil {
			return
		}
		s.registerProxy(ctx, job, p)
	}
}

func (s *serveController) registerProxy(ctx context.Context, a *pb.ServeApp, p *pb.ServeProxy) {
	s.registerActor(ctx, &pb.ActorInfo{ActorId: p.ActorId, JobId: a.JobId, ClassName: ServeProxyClass, Detached: true,
		MaxRestarts: -1, MaxConcurrency: 4, BinarySha256: a.BinarySha256,
		Strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_NODE_AFFINITY, NodeId: p.NodeId}, RuntimeEnv: serveRuntimeEnv(nil)})
}

// serveRuntimeEnv is a replica's or proxy's runtime env: the
// deployment's env vars, and task events off (sdk/internal/core's
// MANTA_NO_TASK_EVENTS): every request is an actor call, and an event per
// request to the control plane cost more than the request itself.
func serveRuntimeEnv(vars map[string]string) *pb.RuntimeEnv {
	env := map[string]string{"MANTA_NO_TASK_EVENTS": "1"}
	for k, v := range vars {
		env[k] = v
	}
	return &pb.RuntimeEnv{EnvVars: env}
}

// status is the full serve view with this head's soft state.
func (s *serveController) status() *pb.ServeStatusResponse {
	h := s.h
	out := &pb.ServeStatusResponse{Apps: h.fsm.ServeApps()}
	actorState := func(id string) (string, string) {
		if a := h.fsm.Actor(id); a != nil {
			return a.State.String(), a.NodeId
		}
		return "", ""
	}
	running := map[string]int32{}
	stale := map[string]int32{}
	for _, r := range h.fsm.ServeReplicas() {
		st := &pb.ServeReplicaStatus{Replica: r}
		st.ActorState, st.NodeId = actorState(r.ReplicaId)
		if rep := s.lastReport(r.ReplicaId); rep != nil {
			st.Ongoing, st.Healthy, st.ReportedUnixNano = rep.ongoing, rep.healthy, rep.at.UnixNano()
		}
		out.Replicas = append(out.Replicas, st)
		key := r.App + "/" + r.Deployment
		if d := findDeployment(findApp(out.Apps, r.App), r.Deployment); d != nil && r.State == pb.ServeReplicaState_REPLICA_RUNNING {
			if r.Version == d.Version {
				running[key]++
			} else {
				stale[key]++
			}
		}
	}
	for _, p := range h.fsm.ServeProxies() {
		st := &pb.ServeProxyStatus{Proxy: p}
		st.ActorState, _ = actorState(p.ActorId)
		if rep := s.lastReport(p.ActorId); rep != nil {
			st.Address, st.RoutesIndex = rep.addr, rep.routes
		}
		out.Proxies = append(out.Proxies, st)
	}
	for _, a := range out.Apps {
		for _, d := range a.Deployments {
			key := a.Name + "/" + d.Name
			t := fsm.ServeTarget(d)
			ds := &pb.ServeDeploymentStatus{App: a.Name, Name: d.Name, TargetReplicas: t, RunningReplicas: running[key]}
			n, cause, _ := s.startFailure(key)
			switch {
			case n >= 3:
				ds.Status, ds.Message = "UNHEALTHY", fmt.Sprintf("%d replicas in a row failed to start; last: %s", n, cause)
			case stale[key] > 0:
				ds.Status, ds.Message = "UPDATING", fmt.Sprintf("%d replicas of an older version", stale[key])
			case running[key] < t:
				ds.Status = "UPSCALING"
			case running[key] > t:
				ds.Status = "DOWNSCALING"
			default:
				ds.Status = "HEALTHY"
			}
			out.Deployments = append(out.Deployments, ds)
		}
	}
	return out
}

func findApp(apps []*pb.ServeApp, name string) *pb.ServeApp {
	for _, a := range apps {
		if a.Name == name {
			return a
		}
	}
	return nil
}
