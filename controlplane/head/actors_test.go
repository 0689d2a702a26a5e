package head_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

// fakeNode is a raylet and the actor workers it leases in one gRPC
// server: leases are granted at once (unless gated), constructors succeed.
type fakeNode struct {
	rpb.UnimplementedRayletServer
	id, addr string
	gate     chan struct{} // when set, leases wait for it to close

	mu      sync.Mutex
	leases  int
	waiting int
	killed  []string
}

// fakeWorker is the CoreWorker side of a fakeNode.
type fakeWorker struct {
	rpb.UnimplementedCoreWorkerServer
}

func startFakeNode(t *testing.T, id string, gate chan struct{}) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{id: id, addr: lis.Addr().String(), gate: gate}
	srv := grpc.NewServer()
	rpb.RegisterRayletServer(srv, n)
	rpb.RegisterCoreWorkerServer(srv, fakeWorker{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() { srv.Stop(); <-done })
	return n
}

func (n *fakeNode) RequestWorkerLease(ctx context.Context, req *rpb.LeaseRequest) (*rpb.LeaseReply, error) {
	if n.gate != nil {
		n.mu.Lock()
		n.waiting++
		n.mu.Unlock()
		select {
		case <-n.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	n.mu.Lock()
	n.leases++
	w := fmt.Sprintf("%s-w%d", n.id, n.leases)
	n.mu.Unlock()
	return &rpb.LeaseReply{LeaseId: w, WorkerId: w, WorkerAddress: n.addr, NodeId: n.id}, nil
}

func (fakeWorker) PushTasks(stream rpb.CoreWorker_PushTasksServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		res := make([]*rpb.TaskResult, len(req.Tasks))
		for i := range res {
			res[i] = &rpb.TaskResult{}
		}
		if err := stream.Send(&rpb.PushTasksReply{Results: res}); err != nil {
			return err
		}
	}
}

func (n *fakeNode) KillActorWorker(_ context.Context, req *rpb.KillActorWorkerRequest) (*rpb.KillActorWorkerReply, error) {
	n.mu.Lock()
	n.killed = append(n.killed, req.ActorId)
	n.mu.Unlock()
	return &rpb.KillActorWorkerReply{}, nil
}

func waitActor(t *testing.T, ctx context.Context, c *tc.Cluster, id string, ok func(*pb.ActorInfo) bool) *pb.ActorInfo {
	t.Helper()
	var last *pb.ActorInfo
	tc.Eventually(t, 20*time.Second, func() error {
		a, err := c.Client().GetActor(ctx, &pb.GetActorRequest{ActorId: id})
		if err != nil {
			return err
		}
		last = a
		if !ok(a) {
			return fmt.Errorf("actor %s is %s on %q (restarts %d, pending %q)", id, a.State, a.NodeId, a.NumRestarts, a.PendingReason)
		}
		return nil
	})
	return last
}

// TestActorPlacementAndRestart drives the actor-placement routine against
// fake raylets: placement, an infeasible actor that waits visibly, a
// restart on another node when its node dies, and a placement that a
// killed leader left under way, finished by the next leader.
func TestActorPlacementAndRestart(t *testing.T) {
	// The fake nodes send no heartbeats: only UnregisterNode kills them.
	c := tc.Start(t, 3, func(_ int, cfg *head.Config) { cfg.NodeTimeout = time.Hour })
	ctx := tc.Ctx(t, time.Minute)
	cl := c.Client()
	job, err := cl.AddJob(ctx, &pb.JobInfo{})
	if err != nil {
		t.Fatal(err)
	}
	n1 := startFakeNode(t, "n1", nil)
	if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "n1", Address: n1.addr, Resources: map[string]float64{"CPU": 2}}); err != nil {
		t.Fatal(err)
	}
	a1, err := cl.CreateActor(ctx, &pb.ActorInfo{JobId: job, ClassName: "C", MaxRestarts: 1, Resources: map[string]float64{"CPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	waitActor(t, ctx, c, a1, func(a *pb.ActorInfo) bool { return a.State == pb.ActorState_ALIVE && a.NodeId == "n1" })

	gpu, err := cl.CreateActor(ctx, &pb.ActorInfo{JobId: job, ClassName: "G", Resources: map[string]float64{"GPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	waitActor(t, ctx, c, gpu, func(a *pb.ActorInfo) bool {
		return a.State == pb.ActorState_PENDING_CREATION && strings.Contains(a.PendingReason, "infeasible")
	})

	if err := cl.UnregisterNode(ctx, "n1", "test"); err != nil {
		t.Fatal(err)
	}
	waitActor(t, ctx, c, a1, func(a *pb.ActorInfo) bool { return a.State == pb.ActorState_RESTARTING && a.NumRestarts == 1 })
	n2 := startFakeNode(t, "n2", nil)
	if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "n2", Address: n2.addr, Resources: map[string]float64{"CPU": 2, "GPU": 1}}); err != nil {
		t.Fatal(err)
	}
	waitActor(t, ctx, c, a1, func(a *pb.ActorInfo) bool {
		return a.State == pb.ActorState_ALIVE && a.NodeId == "n2" && a.NumRestarts == 1
	})
	waitActor(t, ctx, c, gpu, func(a *pb.ActorInfo) bool { return a.State == pb.ActorState_ALIVE && a.NodeId == "n2" })

	// A placement under way when the leader goes: the next one finishes it.
	if err := cl.UnregisterNode(ctx, "n2", "test"); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	n3 := startFakeNode(t, "n3", gate)
	if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "n3", Address: n3.addr, Resources: map[string]float64{"CPU": 2}}); err != nil {
		t.Fatal(err)
	}
	a3, err := cl.CreateActor(ctx, &pb.ActorInfo{JobId: job, ClassName: "C"})
	if err != nil {
		t.Fatal(err)
	}
	tc.Eventually(t, 20*time.Second, func() error {
		n3.mu.Lock()
		defer n3.mu.Unlock()
		if n3.waiting == 0 {
			return fmt.Errorf("no lease request at n3 yet")
		}
		return nil
	})
	c.Stop(c.WaitLeader())
	close(gate)
	got := waitActor(t, ctx, c, a3, func(a *pb.ActorInfo) bool { return a.State == pb.ActorState_ALIVE })
	if got.NumRestarts != 0 || got.NodeId != "n3" {
		t.Fatalf("after the leader change: %v", got)
	}
	// The new leader first ended whatever worker the old one had leased.
	n3.mu.Lock()
	killed := fmt.Sprint(n3.killed)
	n3.mu.Unlock()
	if !strings.Contains(killed, a3) {
		t.Fatalf("workers of %s killed on n3: %s; want the inherited placement's", a3, killed)
	}
}

// TestActorWaitsForItsDependencies: an actor registered DEPENDENCIES_UNREADY
// is not placed (its name is taken at once) until its owner resolves its
// constructor's arguments; a failed argument makes it DEAD with the cause,
// and a late resolve of a dead actor changes nothing.
func TestActorWaitsForItsDependencies(t *testing.T) {
	c := tc.Start(t, 3, func(_ int, cfg *head.Config) { cfg.NodeTimeout = time.Hour })
	ctx := tc.Ctx(t, time.Minute)
	cl := c.Client()
	job, err := cl.AddJob(ctx, &pb.JobInfo{})
	if err != nil {
		t.Fatal(err)
	}
	n1 := startFakeNode(t, "n1", nil)
	if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "n1", Address: n1.addr, Resources: map[string]float64{"CPU": 2}}); err != nil {
		t.Fatal(err)
	}
	a, err := cl.CreateActor(ctx, &pb.ActorInfo{JobId: job, ClassName: "C", Name: "waiting", State: pb.ActorState_DEPENDENCIES_UNREADY})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateActor(ctx, &pb.ActorInfo{JobId: job, ClassName: "C", Name: "waiting"}); err == nil {
		t.Fatal("a second actor took the name of one waiting for its dependencies")
	}
	info := waitActor(t, ctx, c, a, func(a *pb.ActorInfo) bool { return a.State == pb.ActorState_DEPENDENCIES_UNREADY })
	if info.NodeId != "" {
		t.Fatalf("an actor with unready dependencies was placed on %q", info.NodeId)
	}
	// What the SDK sends: the constructor's spec with its arguments resolved.
	args, err := proto.Marshal(&rpb.PushTasksRequest{Tasks: []*rpb.TaskSpec{{Method: "resolved"}}})
	if err != nil {
		t.Fatal(err)
	}
	applied, err := cl.ResolveActorDependencies(ctx, a, args, "")
	if err != nil || !applied {
		t.Fatalf("resolve: applied %v, %v", applied, err)
	}
	info = waitActor(t, ctx, c, a, func(a *pb.ActorInfo) bool { return a.State == pb.ActorState_ALIVE })
	if string(info.InitArgs) != string(args) {
		t.Fatalf("init args %q after resolve", info.InitArgs)
	}
	if applied, err := cl.ResolveActorDependencies(ctx, a, []byte("again"), ""); err != nil || applied {
		t.Fatalf("a second resolve: applied %v, %v; want a no-op", applied, err)
	}

	b, err := cl.CreateActor(ctx, &pb.ActorInfo{JobId: job, ClassName: "C", MaxRestarts: -1, State: pb.ActorState_DEPENDENCIES_UNREADY})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ResolveActorDependencies(ctx, b, nil, "object x lost"); err != nil {
		t.Fatal(err)
	}
	info = waitActor(t, ctx, c, b, func(a *pb.ActorInfo) bool { return a.State == pb.ActorState_DEAD })
	if !strings.Contains(info.DeathCause, "object x lost") {
		t.Fatalf("death cause %q", info.DeathCause)
	}
	if applied, err := cl.ResolveActorDependencies(ctx, b, []byte("late"), ""); err != nil || applied {
		t.Fatalf("resolve of a dead actor: applied %v, %v; want a no-op", applied, err)
	}
}
