package core

// Where the caller runs (Ray's runtime context) and what the cluster has
// (ray.nodes, cluster_resources, available_resources). A task's context
// comes from its spec and from the grant of the lease it runs on, which
// the owner sends with the lease's push stream
// (resources.GrantFromIncoming); an actor's calls keep the grant of its
// creation. The GPU indices of that grant become CUDA_VISIBLE_DEVICES
// while the task runs, as Ray's worker sets it per task.

import (
	"context"
	"os"
	"sort"
	"sync"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// EnvCUDAVisibleDevices is the variable a GPU task's worker gets.
const EnvCUDAVisibleDevices = "CUDA_VISIBLE_DEVICES"

// RuntimeInfo is where the caller runs.
type RuntimeInfo struct {
	JobID    string
	TaskID   string // the running task's; "" in a driver outside tasks
	ActorID  string // the hosting actor's, if any
	NodeID   string
	WorkerID string // the raylet's worker ID; "" in a driver
	// Resources the running task's (or actor's) lease holds; empty in a
	// driver.
	Resources map[string]float64
	// GPUIDs are the GPU indices assigned to the lease (ascending); they
	// are CUDA_VISIBLE_DEVICES while the task runs.
	GPUIDs   []int
	Attempt  int // 0 on the first attempt
	IsDriver bool
}

// runInfo is what a running task knows of itself beyond its ID.
type runInfo struct {
	attempt int
	actorID string
	// The lease's grant, read from the push stream's metadata (stream)
	// only when asked: parsing it for every task cost a fifth of a
	// trivial task's throughput.
	stream context.Context
	once   sync.Once
	g      resources.Grant
}

// grant is the lease's grant the task runs under.
func (ri *runInfo) grant() resources.Grant {
	ri.once.Do(func() {
		if ri.stream != nil {
			ri.g, _ = resources.GrantFromIncoming(ri.stream)
		}
	})
	return ri.g
}

// newTaskCtx makes the context of a task about to run in this worker.
func (c *Worker) newTaskCtx(ctx context.Context, spec *pb.TaskSpec, tid ids.TaskID) *taskCtx {
	info := &runInfo{attempt: int(spec.Attempt), actorID: spec.ActorId}
	if spec.ActorId != "" && !spec.ActorCreation {
		if h := c.hostedFor(spec.ActorId); h != nil {
			info.g = h.grant
		}
	} else {
		info.stream = ctx
	}
	return &taskCtx{id: tid, worker: true, info: info}
}

// cudaEnv sets CUDA_VISIBLE_DEVICES for a normal task or an actor's
// creation (its calls keep it: the worker is the actor's). A worker
// reused after a GPU lease sets it to "" for a task without GPUs, so no
// task sees devices it was not given; a worker that never had a GPU
// lease leaves the variable as the user set it.
func (c *Worker) cudaEnv(tc *taskCtx) {
	if tc.info == nil {
		return
	}
	if !c.cudaSet.Load() && (tc.info.stream == nil || !resources.GPUsInIncoming(tc.info.stream)) {
		return
	}
	c.cudaSet.Store(true)
	os.Setenv(EnvCUDAVisibleDevices, tc.info.grant().GPUList())
}

// RuntimeContext says where ctx's caller runs.
func (c *Worker) RuntimeContext(ctx context.Context) RuntimeInfo {
	ri := RuntimeInfo{JobID: c.jobID, WorkerID: c.workerID, IsDriver: c.workerID == "", Resources: map[string]float64{}}
	if c.workerID != "" {
		ri.NodeID = os.Getenv(workerpool.EnvNodeID)
	} else {
		ri.NodeID = c.driverNode(ctx)
	}
	tc, ok := ctx.Value(taskKey{}).(*taskCtx)
	if !ok || tc.info == nil {
		return ri
	}
	ri.TaskID, ri.Attempt, ri.ActorID = tc.id.String(), tc.info.attempt, tc.info.actorID
	grant := tc.info.grant()
	for k, v := range grant.Resources {
		ri.Resources[k] = v
	}
	for _, g := range grant.GPUs {
		ri.GPUIDs = append(ri.GPUIDs, int(g))
	}
	return ri
}

// driverNode finds the node of the driver's raylet (once; "" while the
// control plane cannot say).
func (c *Worker) driverNode(ctx context.Context) string {
	c.nodeOnce.Lock()
	defer c.nodeOnce.Unlock()
	if c.nodeID != "" {
		return c.nodeID
	}
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return ""
	}
	for _, n := range nodes {
		if n.Address == c.rayletAddr {
			c.nodeID = n.ID
		}
	}
	return c.nodeID
}

// NodeInfo is a node as the control plane knows it.
type NodeInfo struct {
	ID        string
	Address   string
	Alive     bool
	Resources map[string]float64 // total
	Available map[string]float64 // by its last heartbeat
	Labels    map[string]string
}

// Nodes lists the cluster's nodes, dead ones too, by ID.
func (c *Worker) Nodes(ctx context.Context) ([]NodeInfo, error) {
	cp, err := c.controlPlane()
	if err != nil {
		return nil, err
	}
	r, err := cp.ListNodes(ctx, &cpb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]NodeInfo, 0, len(r.Nodes))
	for _, n := range r.Nodes {
		alive := n.State == cpb.NodeState_NODE_ALIVE
		avail := n.Available
		if avail == nil && alive {
			avail = n.Resources // no heartbeat yet: all of it
		}
		out = append(out, NodeInfo{ID: n.NodeId, Address: n.Address, Alive: alive,
			Resources: clone(n.Resources), Available: clone(avail), Labels: n.Labels})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ClusterResources sums the alive nodes' resources (available: what
// their last heartbeats reported free), as Ray's.
func (c *Worker) ClusterResources(ctx context.Context, available bool) (map[string]float64, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	sum := map[string]float64{}
	for _, n := range nodes {
		if !n.Alive {
			continue
		}
		src := n.Resources
		if available {
			src = n.Available
		}
		for k, v := range src {
			sum[k] += v
		}
	}
	return sum, nil
}

func clone(m map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
