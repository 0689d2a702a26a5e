package autoscaler_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/raylet"
)

// inProcess launches raylets in this process: the heads' autoscaler
// against real heads, Raft and raylets, under the race detector.
type inProcess struct {
	t     *testing.T
	heads func() []string
	token func() string

	mu      sync.Mutex
	raylets map[string]*raylet.Raylet
}

func (p *inProcess) Launch(_ context.Context, in autoscaler.Instance) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.raylets[in.ID] != nil {
		return nil
	}
	r, err := raylet.New(raylet.Config{NodeID: in.ID, Heads: p.heads(), Token: p.token(), DataDir: p.t.TempDir(),
		PrestartWorkers: -1, Resources: in.Type.Resources, Labels: in.Labels(), ObjectStoreMemory: 16 << 20})
	if err != nil {
		return err
	}
	p.raylets[in.ID] = r
	return nil
}

func (p *inProcess) Terminate(_ context.Context, id string) error {
	p.mu.Lock()
	r := p.raylets[id]
	delete(p.raylets, id)
	p.mu.Unlock()
	if r != nil {
		return r.Close()
	}
	return nil
}

func (p *inProcess) Instances(context.Context) (map[string]autoscaler.InstanceStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]autoscaler.InstanceStatus{}
	for id := range p.raylets {
		out[id] = autoscaler.StatusRunning
	}
	return out, nil
}

func (p *inProcess) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, r := range p.raylets {
		r.Close()
		delete(p.raylets, id)
	}
}

// A placement group no node can hold launches a node of the type that
// can; the group is placed on it; once the group is removed the idle node
// is removed too. Status is asked of a follower (forwarded to the leader).
func TestPendingPlacementGroupLaunchesANodeAndItIsRemovedIdle(t *testing.T) {
	cfg, err := autoscaler.ParseConfig([]byte(`
node_types:
  - {name: big, resources: {CPU: 1, big: 1}, max_count: 2}
interval: 50ms
idle_timeout: 500ms
`))
	if err != nil {
		t.Fatal(err)
	}
	prov := &inProcess{t: t, raylets: map[string]*raylet.Raylet{}}
	tc := testcluster.Start(t, 3, func(_ int, c *head.Config) {
		c.Autoscaler, c.ScaleProvider = cfg, prov
	})
	t.Cleanup(prov.closeAll)
	prov.heads, prov.token = tc.Addresses, tc.Token
	cl := tc.Client()
	ctx := testcluster.Ctx(t, 30*time.Second)

	id, err := cl.CreatePlacementGroup(ctx, &pb.PlacementGroupInfo{Strategy: pb.PlacementStrategy_PACK, JobId: "01000000",
		Detached: true, Bundles: []*pb.Bundle{{Resources: map[string]float64{"big": 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	var node string
	testcluster.Eventually(t, 20*time.Second, func() error {
		g, err := cl.GetPlacementGroup(ctx, &pb.GetPlacementGroupRequest{PlacementGroupId: id})
		if err != nil {
			return err
		}
		if g.State != pb.PlacementGroupState_PG_CREATED {
			return fmt.Errorf("group %s: %s", g.State, g.Reason)
		}
		node = g.Bundles[0].NodeId
		return nil
	})
	st, err := cl.AutoscalerStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || len(st.Instances) != 1 || st.Instances[0].InstanceId != node || st.Instances[0].NodeType != "big" {
		t.Fatalf("group placed on %s; instances %v: want it on the one big node launched", node, st.Instances)
	}
	if err := cl.RemovePlacementGroup(ctx, id); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 20*time.Second, func() error {
		st, err := cl.AutoscalerStatus(ctx)
		if err != nil {
			return err
		}
		if in := st.Instances[0]; in.State != pb.InstanceState_INSTANCE_TERMINATED {
			return fmt.Errorf("instance %s", in.State)
		}
		return nil
	})
	if live, _ := prov.Instances(ctx); len(live) != 0 {
		t.Fatalf("raylets still running: %v", live)
	}
}
