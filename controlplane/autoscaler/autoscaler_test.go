package autoscaler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// fakeCluster is a real FSM applied to directly (no Raft), with the
// leader's soft state (free resources, demand, objects) set by the test.
type fakeCluster struct {
	t       *testing.T
	f       *fsm.FSM
	mu      sync.Mutex
	index   uint64
	avail   map[string]map[string]float64
	demand  []*pb.ResourceDemand
	objects map[string]int64
}

func newFakeCluster(t *testing.T) *fakeCluster {
	return &fakeCluster{t: t, f: fsm.New(nil), avail: map[string]map[string]float64{}, objects: map[string]int64{}}
}

func (c *fakeCluster) Nodes() []*pb.NodeInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*pb.NodeInfo
	for _, n := range c.f.Nodes() {
		n = proto.Clone(n).(*pb.NodeInfo)
		n.Available = c.avail[n.NodeId]
		out = append(out, n)
	}
	return out
}

func (c *fakeCluster) Load() ([]*pb.ResourceDemand, map[string]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.demand, c.objects
}

func (c *fakeCluster) PlacementGroups() []*pb.PlacementGroupInfo { return c.f.PlacementGroups() }
func (c *fakeCluster) Instances() []*pb.AutoscalerInstance       { return c.f.AutoscalerInstances() }
func (c *fakeCluster) RequestedResources() []*pb.Bundle          { return c.f.RequestedResources() }

func (c *fakeCluster) Apply(_ context.Context, t fsm.CommandType, body proto.Message) error {
	cmd, err := fsm.NewCommand(t, "", body)
	if err != nil {
		return err
	}
	cmd.TimeUnixNano = time.Now().UnixNano()
	data, err := fsm.EncodeBatch([]*pb.Command{cmd})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.index++
	idx := c.index
	c.mu.Unlock()
	res := c.f.Apply(&raft.Log{Index: idx, Data: data})
	if err, ok := res.(error); ok {
		return err
	}
	return fsm.ResultError(res.([]*pb.CommandResult)[0])
}

// register makes a launched instance's node register, all of it free.
func (c *fakeCluster) register(id string, res map[string]float64) {
	c.t.Helper()
	if err := c.Apply(context.Background(), fsm.CmdRegisterNode, &pb.NodeInfo{NodeId: id, Address: "x", Resources: res,
		State: pb.NodeState_NODE_ALIVE, Labels: map[string]string{LabelInstance: id}}); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.avail[id] = res
	c.mu.Unlock()
}

func (c *fakeCluster) setDemand(d ...*pb.ResourceDemand) {
	c.mu.Lock()
	c.demand = d
	c.mu.Unlock()
}

// fakeProvider records launches; a launch of a known ID does nothing.
type fakeProvider struct {
	mu         sync.Mutex
	live       map[string]InstanceStatus
	launches   int // distinct instances launched
	terminated []string
	err        error
}

func newFakeProvider() *fakeProvider { return &fakeProvider{live: map[string]InstanceStatus{}} }

func (p *fakeProvider) Launch(_ context.Context, in Instance) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if _, ok := p.live[in.ID]; !ok {
		p.live[in.ID] = StatusRunning
		p.launches++
	}
	return nil
}

func (p *fakeProvider) Terminate(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.live, id)
	p.terminated = append(p.terminated, id)
	return nil
}

func (p *fakeProvider) Instances(context.Context) (map[string]InstanceStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]InstanceStatus{}
	for k, v := range p.live {
		out[k] = v
	}
	return out, nil
}

func (p *fakeProvider) count() (launches int, live int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.launches, len(p.live)
}

func testConfig(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const bigConfig = `
node_types:
  - {name: big, resources: {CPU: 1, big: 1}, max_count: 3}
  - {name: cpu, resources: {CPU: 4}, max_count: 3}
interval: 1ms
idle_timeout: 1ns
launch_timeout: 1h
`

func instancesIn(c *fakeCluster, st pb.InstanceState) []*pb.AutoscalerInstance {
	var out []*pb.AutoscalerInstance
	for _, in := range c.Instances() {
		if in.State == st {
			out = append(out, in)
		}
	}
	return out
}

func round(t *testing.T, a *Autoscaler) {
	t.Helper()
	if err := a.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestInfeasibleDemandLaunchesOneNodeThenItIsRemovedWhenIdle(t *testing.T) {
	cl, prov := newFakeCluster(t), newFakeProvider()
	a := New(Options{Config: testConfig(t, bigConfig), Provider: prov, Cluster: cl})
	cl.setDemand(&pb.ResourceDemand{Shape: map[string]float64{"big": 1}, Count: 1, Infeasible: true})
	round(t, a)
	round(t, a) // the pending launch covers the demand: no second one
	pending := instancesIn(cl, pb.InstanceState_INSTANCE_PENDING)
	if n, _ := prov.count(); n != 1 || len(pending) != 1 || pending[0].NodeType != "big" {
		t.Fatalf("launches %d, pending %v; want one big node", n, pending)
	}
	id := pending[0].InstanceId
	cl.register(id, map[string]float64{"CPU": 1, "big": 1})
	cl.avail[id] = map[string]float64{"CPU": 0, "big": 0} // the task runs
	cl.setDemand()
	round(t, a)
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_RUNNING); len(r) != 1 {
		t.Fatalf("running %v", r)
	}
	round(t, a) // busy: not idle
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_RUNNING); len(r) != 1 {
		t.Fatalf("a busy node was removed: %v", cl.Instances())
	}
	cl.mu.Lock()
	cl.avail[id] = map[string]float64{"CPU": 1, "big": 1}
	cl.objects[id] = 1 // holds an object: not idle either
	cl.mu.Unlock()
	round(t, a)
	round(t, a)
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_RUNNING); len(r) != 1 {
		t.Fatalf("a node holding objects was removed: %v", cl.Instances())
	}
	cl.mu.Lock()
	cl.objects[id] = 0
	cl.mu.Unlock()
	round(t, a) // idle since now
	round(t, a) // idle longer than 1ns
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_TERMINATED); len(r) != 1 {
		t.Fatalf("instances %v; want the idle one terminated", cl.Instances())
	}
	if n := cl.f.Node(id); n.State != pb.NodeState_NODE_DEAD {
		t.Fatalf("node %v not marked dead", n)
	}
	if _, live := prov.count(); live != 0 {
		t.Fatalf("provider still holds %d instances", live)
	}
}

// A leader that committed a launch and died before (or after) asking the
// provider: the next leader repeats the launch, which the provider
// ignores if it was made, and launches nothing more for the demand.
func TestNewLeaderCompletesACommittedLaunchOnce(t *testing.T) {
	for _, askedBeforeDeath := range []bool{false, true} {
		cl, prov := newFakeCluster(t), newFakeProvider()
		cfg := testConfig(t, bigConfig)
		cl.setDemand(&pb.ResourceDemand{Shape: map[string]float64{"big": 1}, Count: 1, Infeasible: true})
		if err := cl.Apply(context.Background(), fsm.CmdAutoscalerLaunch, &pb.AutoscalerLaunchCommand{InstanceId: "manta-big-1", NodeType: "big", Reason: "r"}); err != nil {
			t.Fatal(err)
		}
		if askedBeforeDeath {
			_ = prov.Launch(context.Background(), Instance{ID: "manta-big-1", Type: cfg.NodeTypes[0]})
		}
		a := New(Options{Config: cfg, Provider: prov, Cluster: cl})
		round(t, a)
		round(t, a)
		if n, live := prov.count(); n != 1 || live != 1 || len(cl.Instances()) != 1 {
			t.Fatalf("asked before death %v: launches %d live %d instances %v; want exactly one", askedBeforeDeath, n, live, cl.Instances())
		}
	}
}

func TestLaunchErrorsAreCountedAndBackedOff(t *testing.T) {
	cl, prov := newFakeCluster(t), newFakeProvider()
	cfg := testConfig(t, bigConfig)
	cfg.Interval = time.Hour // the first backoff
	prov.err = errors.New("quota exceeded")
	a := New(Options{Config: cfg, Provider: prov, Cluster: cl})
	cl.setDemand(&pb.ResourceDemand{Shape: map[string]float64{"big": 1}, Count: 1, Infeasible: true})
	round(t, a)
	round(t, a)
	round(t, a)
	failed := instancesIn(cl, pb.InstanceState_INSTANCE_FAILED)
	if len(failed) != 1 {
		t.Fatalf("instances %v; want one failed launch and no retry inside the backoff", cl.Instances())
	}
	st := a.Status()
	var big *pb.NodeTypeStatus
	for _, s := range st.NodeTypes {
		if s.Name == "big" {
			big = s
		}
	}
	if big.LaunchErrors != 1 || big.Failed != 1 || big.BackoffUntilUnixNano == 0 || st.LaunchErrorsTotal != 1 {
		t.Fatalf("status %+v", big)
	}
	if len(st.PendingDemands) == 0 {
		t.Fatal("the waiting demand is not shown")
	}
}

func TestNodeThatNeverRegistersIsReplaced(t *testing.T) {
	cl, prov := newFakeCluster(t), newFakeProvider()
	cfg := testConfig(t, bigConfig)
	cfg.LaunchTimeout = time.Nanosecond
	cfg.Interval = time.Nanosecond // no backoff to speak of
	a := New(Options{Config: cfg, Provider: prov, Cluster: cl})
	cl.setDemand(&pb.ResourceDemand{Shape: map[string]float64{"big": 1}, Count: 1, Infeasible: true})
	round(t, a) // launch
	round(t, a) // timed out: terminated, failed
	round(t, a) // launched again
	if f := instancesIn(cl, pb.InstanceState_INSTANCE_FAILED); len(f) < 1 {
		t.Fatalf("instances %v; want the silent one failed", cl.Instances())
	}
	if n, live := prov.count(); n < 2 || live != 1 {
		t.Fatalf("launches %d live %d; want a replacement and the silent one terminated", n, live)
	}
}

func TestRequestedResourcesAreKeptUntilCleared(t *testing.T) {
	cl, prov := newFakeCluster(t), newFakeProvider()
	a := New(Options{Config: testConfig(t, bigConfig), Provider: prov, Cluster: cl})
	req := &pb.RequestResourcesCommand{Bundles: []*pb.Bundle{{Resources: map[string]float64{"CPU": 4}}, {Resources: map[string]float64{"CPU": 4}}}}
	if err := cl.Apply(context.Background(), fsm.CmdRequestResources, req); err != nil {
		t.Fatal(err)
	}
	round(t, a)
	pending := instancesIn(cl, pb.InstanceState_INSTANCE_PENDING)
	if len(pending) != 2 {
		t.Fatalf("instances %v; want 2 cpu nodes", cl.Instances())
	}
	for _, in := range pending {
		cl.register(in.InstanceId, map[string]float64{"CPU": 4})
	}
	for range 3 {
		round(t, a)
	}
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_RUNNING); len(r) != 2 {
		t.Fatalf("instances %v; want both kept while requested", cl.Instances())
	}
	if err := cl.Apply(context.Background(), fsm.CmdRequestResources, &pb.RequestResourcesCommand{}); err != nil {
		t.Fatal(err)
	}
	round(t, a)
	round(t, a)
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_TERMINATED); len(r) != 2 {
		t.Fatalf("instances %v; want both removed once cleared and idle", cl.Instances())
	}
}

func TestMinCountIsLaunchedAndKept(t *testing.T) {
	cl, prov := newFakeCluster(t), newFakeProvider()
	a := New(Options{Config: testConfig(t, `
node_types: [{name: cpu, resources: {CPU: 2}, min_count: 1, max_count: 2}]
idle_timeout: 1ns
`), Provider: prov, Cluster: cl})
	round(t, a)
	p := instancesIn(cl, pb.InstanceState_INSTANCE_PENDING)
	if len(p) != 1 {
		t.Fatalf("instances %v", cl.Instances())
	}
	cl.register(p[0].InstanceId, map[string]float64{"CPU": 2})
	for range 3 {
		round(t, a)
	}
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_RUNNING); len(r) != 1 {
		t.Fatalf("instances %v; the min_count node must stay", cl.Instances())
	}
}

// A node launched for a task is all free until the task reaches it; while
// the task's demand is still reported and fits there, the node is not idle.
func TestNodeThatWaitingDemandFitsIsNotIdle(t *testing.T) {
	cl, prov := newFakeCluster(t), newFakeProvider()
	a := New(Options{Config: testConfig(t, bigConfig), Provider: prov, Cluster: cl})
	cl.setDemand(&pb.ResourceDemand{Shape: map[string]float64{"big": 1}, Count: 1, Infeasible: true})
	round(t, a)
	id := instancesIn(cl, pb.InstanceState_INSTANCE_PENDING)[0].InstanceId
	cl.register(id, map[string]float64{"CPU": 1, "big": 1})
	for range 4 {
		round(t, a)
	}
	if r := instancesIn(cl, pb.InstanceState_INSTANCE_RUNNING); len(r) != 1 {
		t.Fatalf("instances %v: the node the waiting task fits on was removed", cl.Instances())
	}
	if n, _ := prov.count(); n != 1 {
		t.Fatalf("%d launches, want 1", n)
	}
}
