package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/controlplane/cpclient"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

// Simulated actor hosting. With Options.Actors a simulated node serves the
// two gRPC services the leader's actor placer calls, on a loopback port of
// its own that it registers as its address: Raylet (RequestWorkerLease,
// KillActorWorker) and CoreWorker (PushTasks, for the constructor). A lease
// for an actor is granted at once if the node's resources fit it, else
// refused (Unavailable: the placer retries elsewhere after the next
// heartbeats); the "worker" is an entry in a map, and its constructor
// returns at once. So placement, the actor table and its Raft writes are
// real, and only the worker process is fake.

// hostedActor is one actor worker a simulated node runs.
type hostedActor struct {
	workerID    string
	resources   map[string]float64
	constructed bool
	granted     time.Time
}

// actorHost is a simulated node's raylet and worker side.
type actorHost struct {
	n    *node
	srv  *grpc.Server
	addr string

	mu     sync.Mutex
	actors map[string]*hostedActor // by actor ID
	used   map[string]float64
	nextW  int

	leases, refused, constructs, kills, strays atomic.Int64
}

func (n *node) startHost() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h := &actorHost{n: n, srv: grpc.NewServer(), addr: ln.Addr().String(),
		actors: map[string]*hostedActor{}, used: map[string]float64{}}
	rpb.RegisterRayletServer(h.srv, rayletSide{h: h})
	rpb.RegisterCoreWorkerServer(h.srv, workerSide{h: h})
	n.host = h
	n.f.wg.Add(1)
	go func() { defer n.f.wg.Done(); _ = h.srv.Serve(ln) }()
	if every := n.f.o.StrayCheck; every > 0 {
		n.f.wg.Add(1)
		go func() { defer n.f.wg.Done(); h.strayLoop(every) }()
	}
	return nil
}

// strayLoop is the raylet's stray-actor check (raylet/actors.go): every
// interval, each actor worker leased longer ago than that is looked up in
// the actor table and ended if the actor is unknown, DEAD, or ALIVE on
// another worker (a placement a dead leader left behind).
func (h *actorHost) strayLoop(every time.Duration) {
	ctx := h.n.f.ctx
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var held []cpclient.HeldActor
		h.mu.Lock()
		for key, w := range h.actors {
			if time.Since(w.granted) >= every {
				held = append(held, cpclient.HeldActor{Actor: key[:len(key)-len(w.workerID)-1], Worker: w.workerID})
			}
		}
		h.mu.Unlock()
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		strays := h.n.cl.Strays(gctx, held)
		cancel()
		for _, st := range strays {
			h.strays.Add(1)
			h.kill(&rpb.KillActorWorkerRequest{ActorId: st.Actor, WorkerId: st.Worker})
		}
	}
}

// rayletSide and workerSide are the two services of a node's port (both
// have a GetObject, so one type cannot serve both).
type rayletSide struct {
	rpb.UnimplementedRayletServer
	h *actorHost
}

type workerSide struct {
	rpb.UnimplementedCoreWorkerServer
	h *actorHost
}

func (s rayletSide) RequestWorkerLease(ctx context.Context, req *rpb.LeaseRequest) (*rpb.LeaseReply, error) {
	return s.h.lease(req)
}

func (s rayletSide) KillActorWorker(ctx context.Context, req *rpb.KillActorWorkerRequest) (*rpb.KillActorWorkerReply, error) {
	s.h.kill(req)
	return &rpb.KillActorWorkerReply{}, nil
}

func (s workerSide) PushTasks(stream rpb.CoreWorker_PushTasksServer) error {
	return s.h.pushTasks(stream)
}

// available is what the node reports free in its heartbeats.
func (h *actorHost) available(total map[string]float64) map[string]float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]float64, len(total))
	for k, v := range total {
		out[k] = v - h.used[k]
	}
	return out
}

func (h *actorHost) lease(req *rpb.LeaseRequest) (*rpb.LeaseReply, error) {
	if req.ActorId == "" {
		return nil, status.Error(codes.Unimplemented, "sim: a simulated node runs actors only")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	total := h.n.f.o.Resources
	for k, q := range req.Resources {
		if q > 0 && h.used[k]+q > total[k]+1e-9 {
			h.refused.Add(1)
			return nil, status.Errorf(codes.Unavailable, "sim: node %s has %v of %s free, the actor wants %v", h.n.id, total[k]-h.used[k], k, q)
		}
	}
	h.nextW++
	w := &hostedActor{workerID: fmt.Sprintf("%s-w%d", h.n.id, h.nextW), resources: req.Resources, granted: time.Now()}
	for k, q := range req.Resources {
		h.used[k] += q
	}
	// Keyed by actor and worker: a late kill of an older worker must not
	// end this one.
	h.actors[req.ActorId+"/"+w.workerID] = w
	h.leases.Add(1)
	return &rpb.LeaseReply{LeaseId: w.workerID, WorkerId: w.workerID, WorkerAddress: h.addr, NodeId: h.n.id}, nil
}

func (h *actorHost) kill(req *rpb.KillActorWorkerRequest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prefix := req.ActorId + "/"
	for key, w := range h.actors {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix && (req.WorkerId == "" || req.WorkerId == w.workerID) {
			delete(h.actors, key)
			for k, q := range w.resources {
				h.used[k] -= q
			}
			if w.constructed {
				h.kills.Add(1)
			}
		}
	}
}

// PushTasks runs actor constructors: each answers at once.
func (h *actorHost) pushTasks(stream rpb.CoreWorker_PushTasksServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		reply := &rpb.PushTasksReply{}
		for _, t := range req.Tasks {
			res := &rpb.TaskResult{TaskId: t.TaskId}
			if !t.ActorCreation {
				res.Error = &rpb.TaskError{Message: "sim: a simulated actor runs no methods"}
			} else if !h.construct(t.ActorId) {
				res.Error = &rpb.TaskError{Message: "sim: no worker leased for actor " + t.ActorId}
			}
			reply.Results = append(reply.Results, res)
		}
		if err := stream.Send(reply); err != nil {
			return err
		}
	}
}

// construct marks the newest unconstructed worker of an actor as its
// constructed incarnation.
func (h *actorHost) construct(actorID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	prefix := actorID + "/"
	for key, w := range h.actors {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix && !w.constructed {
			w.constructed = true
			h.constructs.Add(1)
			return true
		}
	}
	return false
}

// hosted lists the node's constructed actor workers as actor ID -> worker ID
// (several workers of one actor show as the last; Hosting counts them all).
func (h *actorHost) hosted(out map[string][]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, w := range h.actors {
		if w.constructed {
			id := key[:len(key)-len(w.workerID)-1]
			out[id] = append(out[id], h.n.id+"/"+w.workerID)
		}
	}
}

// ActorCounters sums the fleet's actor-side counters.
type ActorCounters struct {
	// Leases granted, Refused (the node was full), Constructs run, Kills
	// of constructed workers (a restart or a kill ends one), Strays the
	// nodes' own stray checks ended.
	Leases, Refused, Constructs, Kills, Strays int64
}

// ActorCounters sums what every node's raylet and workers were asked.
func (f *Fleet) ActorCounters() ActorCounters {
	var c ActorCounters
	for _, n := range f.nodes {
		if h := n.host; h != nil {
			c.Leases += h.leases.Load()
			c.Refused += h.refused.Load()
			c.Constructs += h.constructs.Load()
			c.Kills += h.kills.Load()
			c.Strays += h.strays.Load()
		}
	}
	return c
}

// Hosting maps every actor some node runs to its workers, "node/worker".
func (f *Fleet) Hosting() map[string][]string {
	out := map[string][]string{}
	for _, n := range f.nodes {
		if n.host != nil {
			n.host.hosted(out)
		}
	}
	return out
}

// ActorSpec is the shape of the actors CreateActors registers.
type ActorSpec struct {
	JobID     string
	Class     string             // default "SimActor"
	Resources map[string]float64 // default 1 CPU
	// MaxRestarts of each actor (default 0): a false failure after a
	// failover would show as a restart, or a DEAD actor.
	MaxRestarts int32
	// Concurrency bounds the CreateActor calls in flight (default 64).
	Concurrency int
	// Took, if set, is told each CreateActor call's latency.
	Took func(time.Duration)
}

// CreateActors registers n detached actors through cl and returns their
// IDs in creation order.
func CreateActors(ctx context.Context, cl *cpclient.Client, n int, s ActorSpec) ([]string, error) {
	if s.Class == "" {
		s.Class = "SimActor"
	}
	if s.Resources == nil {
		s.Resources = map[string]float64{"CPU": 1}
	}
	if s.Concurrency <= 0 {
		s.Concurrency = 64
	}
	if s.JobID == "" {
		return nil, errors.New("sim: actors need a job ID")
	}
	ids := make([]string, n)
	errs := make([]error, n)
	sem := make(chan struct{}, s.Concurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t0 := time.Now()
			ids[i], errs[i] = cl.CreateActor(ctx, &pb.ActorInfo{JobId: s.JobID, ClassName: s.Class, Detached: true,
				MaxRestarts: s.MaxRestarts, Resources: s.Resources})
			if s.Took != nil && errs[i] == nil {
				s.Took(time.Since(t0))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return ids, fmt.Errorf("sim: create actors: %w", err)
	}
	return ids, nil
}

// ActorCensus is what the actor table says of a set of actors.
type ActorCensus struct {
	States   map[pb.ActorState]int
	Restarts int // summed NumRestarts
	ByNode   map[string]int
	// Misplaced are ALIVE actors whose node and worker in the table are not
	// a worker some simulated node runs for them.
	Misplaced []string
	Alive     int
}

// Census reads the actor table of job jobID and checks it against what
// the simulated nodes run.
func (f *Fleet) Census(ctx context.Context, cl *cpclient.Client, jobID string) (ActorCensus, error) {
	actors, err := cl.ListActors(ctx, jobID, false)
	if err != nil {
		return ActorCensus{}, err
	}
	host := f.Hosting()
	c := ActorCensus{States: map[pb.ActorState]int{}, ByNode: map[string]int{}}
	for _, a := range actors {
		c.States[a.State]++
		c.Restarts += int(a.NumRestarts)
		if a.State != pb.ActorState_ALIVE {
			continue
		}
		c.Alive++
		c.ByNode[a.NodeId]++
		ok := false
		for _, w := range host[a.ActorId] {
			if w == a.NodeId+"/"+a.WorkerId {
				ok = true
			}
		}
		if !ok {
			c.Misplaced = append(c.Misplaced, a.ActorId)
		}
	}
	sort.Strings(c.Misplaced)
	return c, nil
}

// WaitActorsAlive polls the actor table of job jobID every interval until
// want actors are ALIVE, and returns when that was seen. It reads any
// head's copy (stale): a whole-table read every interval is not to weigh
// on the leader being measured.
func WaitActorsAlive(ctx context.Context, cl *cpclient.Client, jobID string, want int, every time.Duration) (time.Time, error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		actors, err := cl.ListActors(ctx, jobID, true)
		if err == nil {
			alive := 0
			for _, a := range actors {
				if a.State == pb.ActorState_ALIVE {
					alive++
				}
			}
			if alive >= want {
				return time.Now(), nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("sim: waiting for %d alive actors: %w", want, ctx.Err())
		case <-t.C:
		}
	}
}
