package ray

import (
	"context"

	"github.com/manta-ray/manta/sdk/internal/core"
)

// RuntimeInfo is where the caller runs, as Ray's runtime context: the
// job, the running task (TaskID is "" in a driver outside any task), the
// hosting actor, the node and worker, and what the running task's or
// actor's lease holds: its resources and the GPU indices assigned to it
// (its CUDA_VISIBLE_DEVICES while it runs).
type RuntimeInfo = core.RuntimeInfo

// NodeInfo is a node of the cluster: its ID and raylet address, whether
// it is alive, its total and available resources (the latter by its last
// heartbeat) and its labels.
type NodeInfo = core.NodeInfo

// RuntimeContext says where ctx's caller runs: in a task or actor method,
// pass the ctx the function received (it carries the task); in a driver,
// any context gives the driver's.
func RuntimeContext(ctx context.Context) (RuntimeInfo, error) {
	c, err := core.Current()
	if err != nil {
		return RuntimeInfo{}, err
	}
	return c.RuntimeContext(ctx), nil
}

// Nodes lists the cluster's nodes, dead ones included, by ID (ray.nodes()).
func Nodes(ctx context.Context) ([]NodeInfo, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	return c.Nodes(ctx)
}

// ClusterResources sums the resources of the alive nodes
// (ray.cluster_resources()).
func ClusterResources(ctx context.Context) (map[string]float64, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	return c.ClusterResources(ctx, false)
}

// AvailableResources sums what the alive nodes reported free in their
// last heartbeats (ray.available_resources()): a view a heartbeat old.
func AvailableResources(ctx context.Context) (map[string]float64, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	return c.ClusterResources(ctx, true)
}
