package serve

import (
	"context"
	"fmt"
	"strings"
	"time"

	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// RunOption sets an option of Run.
type RunOption func(*runOptions)

type runOptions struct {
	name, route     string
	port            int
	maxRequestBytes int64
	timeout         time.Duration
	wait            bool
}

// Name names the application (default "default").
func Name(n string) RunOption { return func(o *runOptions) { o.name = n } }

// Route is the application's route prefix (default "/").
func Route(prefix string) RunOption { return func(o *runOptions) { o.route = prefix } }

// HTTPPort is the proxies' port (default 8000; 0 picks a free one on each
// node, see Status). The oldest application's port is the one used.
func HTTPPort(p int) RunOption { return func(o *runOptions) { o.port = p } }

// MaxRequestBytes bounds request bodies (default 10 MiB): more is 413.
func MaxRequestBytes(n int64) RunOption { return func(o *runOptions) { o.maxRequestBytes = n } }

// RequestTimeout bounds a request at the proxy (default none): the
// replica's call is cancelled and the client gets 504.
func RequestTimeout(d time.Duration) RunOption { return func(o *runOptions) { o.timeout = d } }

// NoWait makes Run return once the application is recorded, without
// waiting for its replicas.
func NoWait() RunOption { return func(o *runOptions) { o.wait = false } }

func controlPlane() (*core.Worker, error) { return core.Current() }

// AppSpec is the application Run would deploy, for callers that deploy it
// themselves (manta serve deploy).
func AppSpec(ctx context.Context, app *Bound, opts ...RunOption) (*pb.ServeApp, error) {
	o := runOptions{name: "default", route: "/", port: DefaultHTTPPort, wait: true}
	for _, f := range opts {
		f(&o)
	}
	if !strings.HasPrefix(o.route, "/") {
		return nil, fmt.Errorf("%w: route %q must start with '/'", ErrBadConfig, o.route)
	}
	deps, err := app.deployments()
	if err != nil {
		return nil, err
	}
	c, err := controlPlane()
	if err != nil {
		return nil, err
	}
	job, sha := c.Job()
	return &pb.ServeApp{Name: o.name, RoutePrefix: o.route, JobId: job, BinarySha256: sha, Deployments: deps,
		HttpPort: int32(o.port), MaxRequestBytes: o.maxRequestBytes, RequestTimeoutMs: o.timeout.Milliseconds()}, nil
}

// Run deploys the application rooted at app (its ingress deployment,
// which takes HTTP requests at the route) and, unless NoWait, waits until
// every deployment runs its target of replicas of this version (or ctx
// ends). Running it again with changes is a rolling update.
func Run(ctx context.Context, app *Bound, opts ...RunOption) error {
	o := runOptions{wait: true}
	for _, f := range opts {
		f(&o)
	}
	spec, err := AppSpec(ctx, app, opts...)
	if err != nil {
		return err
	}
	c, err := controlPlane()
	if err != nil {
		return err
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return err
	}
	if err := cp.ServeDeploy(ctx, spec); err != nil {
		return fmt.Errorf("serve: deploy %s: %w", spec.Name, err)
	}
	if !o.wait {
		return nil
	}
	return WaitHealthy(ctx, spec.Name)
}

// WaitHealthy waits until every deployment of application app is HEALTHY
// (its target of replicas of its version running, no old ones left) and
// every alive node has a proxy with an address.
func WaitHealthy(ctx context.Context, app string) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := Status(ctx)
		if err == nil {
			if err := st.failed(app); err != nil {
				return err
			}
		}
		if err == nil && st.healthy(app) {
			// Then every proxy must route by a table at least as new as
			// this answer, so a request sent after Run returns finds the
			// application and its replicas.
			return waitProxies(ctx, st.index)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("serve: application %s not healthy: %w (last status %+v, %v)", app, ctx.Err(), st, err)
		case <-t.C:
		}
	}
}

func waitProxies(ctx context.Context, index uint64) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := Status(ctx)
		if err == nil {
			behind := 0
			for _, p := range st.Proxies {
				if p.ActorState == "ALIVE" && p.routesIndex < index {
					behind++
				}
			}
			if behind == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("serve: proxies did not load the routes of index %d: %w", index, ctx.Err())
		case <-t.C:
		}
	}
}

// Delete deletes application app ("": every application); its replicas
// drain and end.
func Delete(ctx context.Context, app string) error {
	c, err := controlPlane()
	if err != nil {
		return err
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return err
	}
	return cp.ServeDelete(ctx, app)
}

// StatusInfo is what serve.Status reports.
type StatusInfo struct {
	Apps    []AppStatus
	Proxies []ProxyStatus
	index   uint64
}

// AppStatus is an application's state.
type AppStatus struct {
	Name, Route string
	Deployments []DeploymentStatus
}

// DeploymentStatus is a deployment's state: Status is HEALTHY, UPDATING,
// UPSCALING or DOWNSCALING.
type DeploymentStatus struct {
	Name, Status, Version string
	Target, Running       int
	Replicas              []ReplicaStatus
	// Message says why, when Status is UNHEALTHY or UPDATING.
	Message string
}

// ReplicaStatus is a replica: State is STARTING, RUNNING or DRAINING.
type ReplicaStatus struct {
	ID, State, ActorState, Node, Version string
	Ongoing                              int
}

// ProxyStatus is a node's proxy and its HTTP address.
type ProxyStatus struct {
	Node, Address, ActorState string
	routesIndex               uint64
}

// failed is the error of an application's deployment whose replicas
// keep failing to start (UNHEALTHY), if any.
func (s *StatusInfo) failed(app string) error {
	for _, a := range s.Apps {
		if a.Name != app {
			continue
		}
		for _, d := range a.Deployments {
			if d.Status == "UNHEALTHY" {
				return fmt.Errorf("%w: deployment %s of %s is unhealthy: %s", ErrDeployFailed, d.Name, app, d.Message)
			}
		}
	}
	return nil
}

func (s *StatusInfo) healthy(app string) bool {
	if s == nil {
		return false
	}
	for _, a := range s.Apps {
		if a.Name != app {
			continue
		}
		for _, d := range a.Deployments {
			if d.Status != "HEALTHY" {
				return false
			}
		}
		if len(s.Proxies) == 0 {
			return false
		}
		for _, p := range s.Proxies {
			if p.Address == "" {
				return false
			}
		}
		return true
	}
	return false
}

// Status is the applications, deployments, replicas and proxies as the
// controller (the leader) sees them.
func Status(ctx context.Context) (*StatusInfo, error) {
	c, err := controlPlane()
	if err != nil {
		return nil, err
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return nil, err
	}
	st, err := cp.ServeStatus(ctx, false)
	if err != nil {
		return nil, err
	}
	return StatusFrom(st), nil
}

// StatusFrom converts the control plane's answer.
func StatusFrom(st *pb.ServeStatusResponse) *StatusInfo {
	out := &StatusInfo{index: st.GetHeader().GetIndex()}
	for _, a := range st.Apps {
		as := AppStatus{Name: a.Name, Route: a.RoutePrefix}
		for _, d := range a.Deployments {
			ds := DeploymentStatus{Name: d.Name, Version: d.Version}
			for _, x := range st.Deployments {
				if x.App == a.Name && x.Name == d.Name {
					ds.Status, ds.Target, ds.Running, ds.Message = x.Status, int(x.TargetReplicas), int(x.RunningReplicas), x.Message
				}
			}
			for _, r := range st.Replicas {
				if r.Replica.App == a.Name && r.Replica.Deployment == d.Name {
					ds.Replicas = append(ds.Replicas, ReplicaStatus{ID: r.Replica.ReplicaId,
						State: strings.TrimPrefix(r.Replica.State.String(), "REPLICA_"), ActorState: r.ActorState,
						Node: r.NodeId, Version: r.Replica.Version, Ongoing: int(r.Ongoing)})
				}
			}
			as.Deployments = append(as.Deployments, ds)
		}
		out.Apps = append(out.Apps, as)
	}
	for _, p := range st.Proxies {
		out.Proxies = append(out.Proxies, ProxyStatus{Node: p.Proxy.NodeId, Address: p.Address, ActorState: p.ActorState,
			routesIndex: p.RoutesIndex})
	}
	return out
}
