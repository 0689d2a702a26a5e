package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// serveState is the Serve controller's replicated state: the applications
// as deployed (the desired state), the replica actors the leader's
// controller created for them, and the proxy actor of each node. Every
// decision of the controller is one of these commands, so a new leader
// carries on an update its predecessor began.
type serveState struct {
	apps     map[string]*pb.ServeApp
	replicas map[string]*pb.ServeReplica
	proxies  map[string]*pb.ServeProxy // by node ID
}

func newServeState() serveState {
	return serveState{apps: map[string]*pb.ServeApp{}, replicas: map[string]*pb.ServeReplica{},
		proxies: map[string]*pb.ServeProxy{}}
}

func (s *serveState) snapshot() *pb.ServeState {
	if len(s.apps) == 0 && len(s.replicas) == 0 && len(s.proxies) == 0 {
		return nil
	}
	return &pb.ServeState{
		Apps:     sortedValues(s.apps, func(a *pb.ServeApp) string { return a.Name }),
		Replicas: sortedValues(s.replicas, func(r *pb.ServeReplica) string { return r.ReplicaId }),
		Proxies:  sortedValues(s.proxies, func(p *pb.ServeProxy) string { return p.NodeId }),
	}
}

func (s *serveState) restore(st *pb.ServeState) {
	for _, a := range st.GetApps() {
		s.apps[a.Name] = a
	}
	for _, r := range st.GetReplicas() {
		s.replicas[r.ReplicaId] = r
	}
	for _, p := range st.GetProxies() {
		s.proxies[p.NodeId] = p
	}
}

// ServeTarget is the replica count a deployment wants now: the
// autoscaler's target when it autoscales, else num_replicas.
func ServeTarget(d *pb.ServeDeployment) int32 {
	if d.Autoscaling != nil {
		t := d.TargetReplicas
		return max(d.Autoscaling.MinReplicas, min(d.Autoscaling.MaxReplicas, t))
	}
	return d.NumReplicas
}

func applyServeDeploy(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.ServeDeployCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	a := r.App
	if a == nil || a.Name == "" || len(a.Deployments) == 0 {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "serve deploy needs an application name and deployments"))
	}
	for _, o := range f.serve.apps {
		if o.Name != a.Name && o.RoutePrefix != "" && o.RoutePrefix == a.RoutePrefix {
			return errResult(rpcerr.Wrapf(ErrServeRouteTaken, "route_prefix %q is application %q's", a.RoutePrefix, o.Name))
		}
	}
	old := f.serve.apps[a.Name]
	for _, d := range a.Deployments {
		if d.Autoscaling == nil {
			continue
		}
		// A redeploy keeps the autoscaler's target (within the new bounds);
		// a new deployment starts at its minimum.
		d.TargetReplicas = d.Autoscaling.MinReplicas
		for _, od := range old.GetDeployments() {
			if od.Name == d.Name && od.Autoscaling != nil {
				d.TargetReplicas = ServeTarget(&pb.ServeDeployment{Autoscaling: d.Autoscaling, TargetReplicas: od.TargetReplicas})
			}
		}
	}
	a.DeployedUnixNano, a.Index = c.timeNanos, c.index
	f.serve.apps[a.Name] = a
	return okResult()
}

func applyServeDelete(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.ServeDeleteCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	if r.App != "" && f.serve.apps[r.App] == nil {
		return errResult(rpcerr.Wrapf(ErrServeAppNotFound, "%q", r.App))
	}
	for name := range f.serve.apps {
		if r.App == "" || name == r.App {
			delete(f.serve.apps, name)
		}
	}
	// The application's replicas drain; the controller ends them.
	for id, rep := range f.serve.replicas {
		if (r.App == "" || rep.App == r.App) && rep.State != pb.ServeReplicaState_REPLICA_DRAINING {
			n := proto.Clone(rep).(*pb.ServeReplica)
			n.State, n.UpdatedUnixNano, n.Reason = pb.ServeReplicaState_REPLICA_DRAINING, c.timeNanos, "application deleted"
			f.serve.replicas[id] = n
		}
	}
	return okResult()
}

func applyServeReplica(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.ServeReplicaCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	rep := r.Replica
	if rep == nil || rep.ReplicaId == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "serve replica without an ID"))
	}
	if r.Remove {
		delete(f.serve.replicas, rep.ReplicaId)
		return okResult()
	}
	if _, known := f.serve.replicas[rep.ReplicaId]; !known && f.serve.apps[rep.App] == nil {
		// The application was deleted after the controller decided.
		return errResult(rpcerr.Wrapf(ErrServeAppNotFound, "%q", rep.App))
	}
	rep.UpdatedUnixNano = c.timeNanos
	f.serve.replicas[rep.ReplicaId] = rep
	return &pb.CommandResult{Id: rep.ReplicaId, Flag: true}
}

func applyServeScale(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.ServeScaleCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	a := f.serve.apps[r.App]
	if a == nil {
		return errResult(rpcerr.Wrapf(ErrServeAppNotFound, "%q", r.App))
	}
	n := proto.Clone(a).(*pb.ServeApp)
	for _, d := range n.Deployments {
		if d.Name == r.Deployment {
			d.TargetReplicas = r.TargetReplicas
			f.serve.apps[r.App] = n
			return okResult()
		}
	}
	return errResult(rpcerr.Wrapf(ErrServeAppNotFound, "deployment %q of %q", r.Deployment, r.App))
}

func applyServeProxy(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var r pb.ServeProxyCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	if r.Proxy == nil || r.Proxy.NodeId == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "serve proxy without a node"))
	}
	if r.Remove {
		if p := f.serve.proxies[r.Proxy.NodeId]; p != nil && (r.Proxy.ActorId == "" || p.ActorId == r.Proxy.ActorId) {
			delete(f.serve.proxies, r.Proxy.NodeId)
		}
		return okResult()
	}
	f.serve.proxies[r.Proxy.NodeId] = r.Proxy
	return okResult()
}

// ServeApps lists the Serve applications by name. The messages are
// shared: callers must not change them.
func (f *FSM) ServeApps() []*pb.ServeApp {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.serve.apps, func(a *pb.ServeApp) string { return a.Name })
}

// ServeReplicas lists the replica records by ID (shared messages).
func (f *FSM) ServeReplicas() []*pb.ServeReplica {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.serve.replicas, func(r *pb.ServeReplica) string { return r.ReplicaId })
}

// ServeProxies lists the proxy records by node (shared messages).
func (f *FSM) ServeProxies() []*pb.ServeProxy {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.serve.proxies, func(p *pb.ServeProxy) string { return p.NodeId })
}
