package resources

// A lease's grant as its worker sees it: the resources the lease holds and
// the GPU indices the raylet assigned to it. The owner (or the actor
// placer) sends it as gRPC metadata when it opens the PushTasks stream of
// the lease, so every task pushed on that stream runs with it, as Ray
// passes the resource mapping with each pushed task.

import (
	"context"
	"strconv"
	"strings"

	"google.golang.org/grpc/metadata"
)

const (
	mdResources = "manta-lease-resources"
	mdGPUs      = "manta-lease-gpus"
)

// Grant is what a lease holds.
type Grant struct {
	Resources Set
	GPUs      []int32 // assigned GPU indices, ascending
}

// GPUList is the indices comma-separated ("0,1"), as CUDA_VISIBLE_DEVICES
// takes them.
func (g Grant) GPUList() string {
	parts := make([]string, len(g.GPUs))
	for i, id := range g.GPUs {
		parts[i] = strconv.Itoa(int(id))
	}
	return strings.Join(parts, ",")
}

// OutgoingContext returns ctx carrying g for the stream it opens.
func (g Grant) OutgoingContext(ctx context.Context) context.Context {
	kv := []string{mdResources, g.Resources.Key()}
	if len(g.GPUs) > 0 {
		kv = append(kv, mdGPUs, g.GPUList())
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// GPUsInIncoming says, cheaply, whether a stream's opener sent GPU
// indices (checked for every task; the whole grant is parsed on demand).
func GPUsInIncoming(ctx context.Context) bool {
	v := metadata.ValueFromIncomingContext(ctx, mdGPUs)
	return len(v) > 0 && v[0] != ""
}

// GrantFromIncoming reads the grant a stream's opener sent; ok is false
// when it sent none (an older owner). Malformed parts are dropped: the
// grant informs the task, it does not schedule it.
func GrantFromIncoming(ctx context.Context) (g Grant, ok bool) {
	md, found := metadata.FromIncomingContext(ctx)
	if !found {
		return Grant{}, false
	}
	if v := md.Get(mdResources); len(v) > 0 {
		ok = true
		if s, err := Parse(v[0]); err == nil {
			g.Resources = s
		}
	}
	if v := md.Get(mdGPUs); len(v) > 0 && v[0] != "" {
		for _, p := range strings.Split(v[0], ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(p)); err == nil && n >= 0 {
				g.GPUs = append(g.GPUs, int32(n))
			}
		}
	}
	return g, ok
}
