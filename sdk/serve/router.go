package serve

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// routePoll is how often a router reads the routing table.
const routePoll = 100 * time.Millisecond

// router is a process's view of where requests can go: applications by
// route prefix, and per deployment its running replicas with the requests
// this process has in flight to each. Proxies and handles share it.
type router struct {
	cp  *cpclient.Client
	log *zap.Logger

	mu     sync.Mutex
	routes []*pb.ServeApp // by route prefix, longest first
	deps   map[string]*depRoutes
	// proxy options from the oldest application
	opts     *pb.ServeApp
	ready    chan struct{} // closed after the first table
	lastRead time.Time
	// index is the applied index of the table; changed is signalled when
	// it grows (the proxy reports it at once).
	index   uint64
	changed chan struct{}

	stop chan struct{}
	done chan struct{}
}

type depRoutes struct {
	spec     *pb.ServeDeployment
	replicas []*replicaRoute
	queued   int
	// wake is closed (and replaced) when a slot may have freed.
	wake chan struct{}
}

type replicaRoute struct {
	id       string
	inflight int
}

func newRouter(cp *cpclient.Client, log *zap.Logger) *router {
	r := &router{cp: cp, log: log, deps: map[string]*depRoutes{}, ready: make(chan struct{}), changed: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.poll()
	return r
}

func (r *router) close() {
	close(r.stop)
	<-r.done
}

func (r *router) poll() {
	defer close(r.done)
	t := time.NewTicker(routePoll)
	defer t.Stop()
	first := true
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.refresh(ctx)
		cancel()
		if err == nil && first {
			close(r.ready)
			first = false
		} else if err != nil {
			r.log.Debug("read serve routes", zap.Error(err))
		}
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
	}
}

// refresh reads the table now.
func (r *router) refresh(ctx context.Context) error {
	// The table is as new as the moment it was asked for: a read that
	// began before a deployment returned may not show it.
	asked := time.Now()
	st, err := r.cp.ServeStatus(ctx, true)
	if err != nil {
		return err
	}
	r.update(st, asked)
	return nil
}

// matchFresh is match, reading the table again first when nothing
// matched and it is older than half a poll (a route deployed a moment
// ago is not a 404).
func (r *router) matchFresh(ctx context.Context, path string) *pb.ServeApp {
	if a := r.match(path); a != nil {
		return a
	}
	r.mu.Lock()
	old := time.Since(r.lastRead) > routePoll/2
	r.mu.Unlock()
	if old && r.refresh(ctx) == nil {
		return r.match(path)
	}
	return nil
}

// update installs a new table, keeping the in-flight counts of replicas
// that stay.
func (r *router) update(st *pb.ServeStatusResponse, asked time.Time) {
	alive := map[string][]string{}
	for _, rs := range st.Replicas {
		rep := rs.Replica
		if rep.State == pb.ServeReplicaState_REPLICA_RUNNING && rs.ActorState == pb.ActorState_ALIVE.String() {
			k := rep.App + "/" + rep.Deployment
			alive[k] = append(alive[k], rep.ReplicaId)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if asked.Before(r.lastRead) {
		return // a newer table is installed already
	}
	r.lastRead = asked
	if i := st.GetHeader().GetIndex(); i > r.index {
		r.index = i
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}
	r.routes = r.routes[:0]
	var oldest *pb.ServeApp
	seen := map[string]bool{}
	for _, a := range st.Apps {
		r.routes = append(r.routes, a)
		if oldest == nil || a.Index < oldest.Index {
			oldest = a
		}
		for _, d := range a.Deployments {
			k := a.Name + "/" + d.Name
			seen[k] = true
			dr := r.deps[k]
			if dr == nil {
				dr = &depRoutes{wake: make(chan struct{})}
				r.deps[k] = dr
			}
			dr.spec = d
			old := map[string]*replicaRoute{}
			for _, x := range dr.replicas {
				old[x.id] = x
			}
			dr.replicas = dr.replicas[:0:0]
			for _, id := range alive[k] {
				x := old[id]
				if x == nil {
					x = &replicaRoute{id: id}
				}
				dr.replicas = append(dr.replicas, x)
			}
			close(dr.wake)
			dr.wake = make(chan struct{})
		}
	}
	for k, dr := range r.deps {
		if !seen[k] {
			close(dr.wake)
			delete(r.deps, k)
		}
	}
	sort.Slice(r.routes, func(i, j int) bool { return len(r.routes[i].RoutePrefix) > len(r.routes[j].RoutePrefix) })
	r.opts = oldest
}

// match finds the application whose route prefix is the longest one of
// path (on a path-segment boundary).
func (r *router) match(path string) *pb.ServeApp {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.routes {
		p := a.RoutePrefix
		if p == "/" || path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return a
		}
	}
	return nil
}

// tableIndex is the applied index of the table in use.
func (r *router) tableIndex() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.index
}

// queued is the requests waiting per deployment (for the autoscaler).
func (r *router) queued() map[string]int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int32{}
	for k, dr := range r.deps {
		if dr.queued > 0 {
			out[k] = int32(dr.queued)
		}
	}
	return out
}

var errQueueFull = errors.New("serve: every replica is busy and the queue is full")

// pick chooses a replica of deployment key by power of two choices on the
// requests in flight, skipping full ones; with none free it waits in the
// bounded queue until one frees, ctx ends, or the queue is full. release
// must be called when the request ends.
func (r *router) pick(ctx context.Context, key string, exclude string) (id string, release func(), err error) {
	queued, refreshed := false, false
	defer func() {
		if queued {
			r.mu.Lock()
			if dr := r.deps[key]; dr != nil {
				dr.queued--
			}
			r.mu.Unlock()
		}
	}()
	for {
		r.mu.Lock()
		dr := r.deps[key]
		if dr == nil {
			r.mu.Unlock()
			return "", nil, ErrNotFound
		}
		limit := int(dr.spec.MaxOngoingRequests)
		var free []*replicaRoute
		for _, x := range dr.replicas {
			if x.inflight < limit && x.id != exclude {
				free = append(free, x)
			}
		}
		if len(free) == 0 && exclude != "" {
			for _, x := range dr.replicas {
				if x.inflight < limit {
					free = append(free, x)
				}
			}
		}
		if len(free) > 0 {
			x := free[rand.IntN(len(free))]
			if len(free) > 1 {
				y := free[rand.IntN(len(free)-1)]
				if y == x {
					y = free[len(free)-1]
				}
				if y.inflight < x.inflight {
					x = y
				}
			}
			x.inflight++
			r.mu.Unlock()
			return x.id, func() { r.release(key, x) }, nil
		}
		if len(dr.replicas) == 0 && !refreshed && time.Since(r.lastRead) > routePoll/2 {
			// None known: a deployment that just started may have some
			// this table does not show yet.
			refreshed = true
			r.mu.Unlock()
			_ = r.refresh(ctx)
			continue
		}
		if !queued {
			if dr.queued >= int(dr.spec.MaxQueuedRequests) {
				r.mu.Unlock()
				return "", nil, errQueueFull
			}
			dr.queued++
			queued = true
		}
		wake := dr.wake
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-wake:
		}
	}
}

func (r *router) release(key string, x *replicaRoute) {
	r.mu.Lock()
	defer r.mu.Unlock()
	x.inflight--
	if dr := r.deps[key]; dr != nil {
		close(dr.wake)
		dr.wake = make(chan struct{})
	}
}

// call sends req to a replica of app/deployment and waits for its answer.
// When ctx ends first the replica call is cancelled. A replica that died
// under a retryable request is replaced by another for up to two more
// tries: the request was not answered, and the proxy gives it to a live
// replica.
func (r *router) call(ctx context.Context, app string, dep *pb.ServeDeployment, req *wireRequest) (*wireResponse, error) {
	def := lookupClass(dep.ClassName)
	if def == nil {
		return nil, errors.New("serve: deployment class " + dep.ClassName + " is not registered in this binary")
	}
	key := app + "/" + dep.Name
	last := ""
	for attempt := 0; ; attempt++ {
		id, release, err := r.pick(ctx, key, last)
		if err != nil {
			return nil, err
		}
		ref := def.call(ctx, id, req)
		resp, err := ray.Get(ctx, ref)
		release()
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			// Client gone or timed out: stop the replica's work.
			cancelCall(r.log, ref)
			return nil, ctx.Err()
		}
		if !errors.Is(err, ray.ErrActorDied) && !errors.Is(err, ray.ErrWorkerCrashed) || attempt >= 2 || !retryable(req) {
			return nil, err
		}
		r.log.Info("replica died under a request; retrying on another", zap.String("replica", id), zap.Error(err))
		r.drop(key, id)
		last = id
	}
}

// retryable: a request the proxy may send again when its replica died
// under it (it may have run there): HTTP's idempotent methods, and handle
// calls (typed deployments are expected to be idempotent; say so in their
// docs). A POST is not resent: the client gets 500 and decides.
func retryable(req *wireRequest) bool {
	if req.Typed {
		return true
	}
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// drop removes a replica from the table until the next read says
// otherwise.
func (r *router) drop(key, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dr := r.deps[key]; dr != nil {
		for i, x := range dr.replicas {
			if x.id == id {
				dr.replicas = append(dr.replicas[:i:i], dr.replicas[i+1:]...)
				break
			}
		}
	}
}

// The process's router, made on first use (a proxy, or a replica using a
// handle); it lives as long as the process.
var procRouter struct {
	sync.Mutex
	r *router
}

func processRouter(ctx context.Context) (*router, error) {
	procRouter.Lock()
	defer procRouter.Unlock()
	if procRouter.r != nil {
		return procRouter.r, nil
	}
	cp, log, _, err := runtimeParts(ctx)
	if err != nil {
		return nil, err
	}
	procRouter.r = newRouter(cp, log)
	return procRouter.r, nil
}

// deployment is app's deployment dep as last read.
func (r *router) deployment(app, dep string) *pb.ServeDeployment {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dr := r.deps[app+"/"+dep]; dr != nil {
		return dr.spec
	}
	return nil
}
