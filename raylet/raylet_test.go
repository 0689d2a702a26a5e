package raylet_test

import (
	"google.golang.org/protobuf/proto"

	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/ray"
)

// TestMain lets the test binary serve as the raylet's worker processes.
func TestMain(m *testing.M) {
	if ray.IsWorker() {
		ray.Main(func(context.Context) error { return nil })
	}
	os.Exit(m.Run())
}

func startRaylet(t *testing.T, res resources.Set, knobs ...raylet.TestingKnobs) (*raylet.Raylet, pb.RayletClient, *testcluster.Cluster) {
	t.Helper()
	return startRayletWith(t, res, func(cfg *raylet.Config) {
		if len(knobs) > 0 {
			cfg.Knobs = knobs[0]
		}
	})
}

// startRayletWith is startRaylet with the config adjusted by edit.
func startRayletWith(t *testing.T, res resources.Set, edit func(*raylet.Config)) (*raylet.Raylet, pb.RayletClient, *testcluster.Cluster) {
	t.Helper()
	tc := testcluster.Start(t, 1, nil)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := raylet.Config{NodeID: "n1", Heads: tc.Addresses(), Token: tc.Token(), Resources: res,
		LocalBinary: exe, DataDir: t.TempDir()}
	edit(&cfg)
	r, err := raylet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cc, err := grpc.NewClient(r.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return tc.Token() })))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return r, pb.NewRayletClient(cc), tc
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLeaseLifecycle(t *testing.T) {
	_, rc, _ := startRaylet(t, resources.Set{"CPU": 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"CPU": 1}}

	l1, err := rc.RequestWorkerLease(ctx, req)
	if err != nil || l1.WorkerAddress == "" || l1.WorkerPid == 0 {
		t.Fatalf("lease: %v %v", l1, err)
	}
	st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
	if st.Available["CPU"] != 0 || st.LeasedWorkers != 1 {
		t.Fatalf("after a lease: %v", st)
	}
	// A second request waits for the CPU; it gets the same worker back
	// once the first lease returns.
	second := make(chan *pb.LeaseReply, 1)
	go func() {
		l, _ := rc.RequestWorkerLease(ctx, req)
		second <- l
	}()
	eventually(t, "the second request to queue", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.GetQueuedLeases() == 1
	})
	// A blocked worker lends its CPU: the queued request is granted.
	if _, err := rc.NotifyBlocked(ctx, &pb.NotifyBlockedRequest{WorkerId: l1.WorkerId, Blocked: true}); err != nil {
		t.Fatal(err)
	}
	l2 := <-second
	if l2 == nil || l2.WorkerId == l1.WorkerId {
		t.Fatalf("the lent CPU gave %v", l2)
	}
	if _, err := rc.ReturnWorkerLease(ctx, &pb.ReturnLeaseRequest{LeaseId: l2.LeaseId}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.NotifyBlocked(ctx, &pb.NotifyBlockedRequest{WorkerId: l1.WorkerId, Blocked: false}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.ReturnWorkerLease(ctx, &pb.ReturnLeaseRequest{LeaseId: l1.LeaseId}); err != nil {
		t.Fatal(err)
	}
	st, _ = rc.GetStatus(ctx, &pb.GetStatusRequest{})
	if st.Available["CPU"] != 1 || st.LeasedWorkers != 0 || st.Workers != 2 {
		t.Fatalf("after returning both: %v", st)
	}
	// Idle workers are reused.
	l3, err := rc.RequestWorkerLease(ctx, req)
	if err != nil || (l3.WorkerId != l1.WorkerId && l3.WorkerId != l2.WorkerId) {
		t.Fatalf("reuse: %v %v", l3, err)
	}
	// A worker that dies gives its lease's resources back.
	if err := syscall.Kill(int(l3.WorkerPid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dead worker's CPU to come back", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.Available["CPU"] == 1 && st.LeasedWorkers == 0
	})
}

func TestBadAndInfeasibleRequests(t *testing.T) {
	_, rc, _ := startRaylet(t, resources.Set{"CPU": 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := rc.RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: "j", Resources: map[string]float64{"CPU": -1}})
	if !errors.Is(rpcerr.FromStatus(err), resources.ErrInvalid) {
		t.Fatalf("negative CPUs: %v", err)
	}
	short, cancelShort := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := rc.RequestWorkerLease(short, &pb.LeaseRequest{JobId: "j", Resources: map[string]float64{"GPU": 1}})
		done <- err
	}()
	eventually(t, "the request to show as infeasible", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return len(st.GetInfeasible()) == 1 && st.Infeasible[0] == "GPU=1"
	})
	cancelShort() // the owner goes away: the request is dropped
	<-done
	eventually(t, "the dropped request to leave the queue", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.GetQueuedLeases() == 0
	})
}

func TestJobEndKillsItsWorkers(t *testing.T) {
	_, rc, tc := startRaylet(t, resources.Set{"CPU": 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp := tc.Client()
	job, err := cp.AddJob(ctx, &cpb.JobInfo{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := rc.RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: job, Resources: map[string]float64{"CPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.FinishJob(ctx, job, cpb.JobState_JOB_SUCCEEDED, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the job's worker to be killed", func() bool {
		return syscall.Kill(int(l.WorkerPid), 0) != nil
	})
	eventually(t, "its CPU to come back", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.Available["CPU"] == 1 && st.Workers == 0
	})
}

// TestNodeMarkedDeadEndsTheRaylet: a raylet the control plane stopped
// hearing from, and marked dead, exits once it hears so (Ray's choice: its
// tasks were given up on; a restart registers afresh).
func TestNodeMarkedDeadEndsTheRaylet(t *testing.T) {
	var silent atomic.Bool
	r, _, tc := startRaylet(t, resources.Set{"CPU": 1}, raylet.TestingKnobs{SkipHeartbeat: silent.Load})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	silent.Store(true)
	eventually(t, "the node to be marked dead", func() bool {
		resp, err := tc.Client().ListNodes(ctx, &cpb.ListNodesRequest{})
		if err != nil {
			return false
		}
		for _, n := range resp.Nodes {
			if n.NodeId == r.NodeID() && n.State == cpb.NodeState_NODE_DEAD {
				return true
			}
		}
		return false
	})
	silent.Store(false)
	select {
	case err := <-r.Fatal():
		if !errors.Is(err, raylet.ErrNodeDead) {
			t.Fatalf("fatal error %v; want ErrNodeDead", err)
		}
	case <-ctx.Done():
		t.Fatal("the raylet of a dead node did not stop")
	}
}

// TestWithdrawnLeaseRequestIsAnsweredNotLost: an owner withdraws a
// waiting request with CancelLeaseRequests and the request is answered
// "withdrawn", so its caller never cancels the call. (Cancelling the call
// instead lost grants that raced with it: the raylet granted, the owner
// never saw the reply, and the CPU stayed leased.)
func TestWithdrawnLeaseRequestIsAnsweredNotLost(t *testing.T) {
	_, rc, _ := startRaylet(t, resources.Set{"CPU": 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"CPU": 1}, OwnerAddress: "owner-1", RequestId: "r1"}
	l1, err := rc.RequestWorkerLease(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan *pb.LeaseReply, 1)
	go func() {
		r := proto.Clone(req).(*pb.LeaseRequest)
		r.RequestId = "r2"
		l, _ := rc.RequestWorkerLease(ctx, r)
		second <- l
	}()
	eventually(t, "the second request to queue", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.GetQueuedLeases() == 1 && len(st.Waiting) == 1 && st.Waiting[0].OwnerAddress == "owner-1"
	})
	// Another owner's IDs withdraw nothing.
	if _, err := rc.CancelLeaseRequests(ctx, &pb.CancelLeaseRequestsRequest{OwnerAddress: "owner-2", RequestIds: []string{"r2"}}); err != nil {
		t.Fatal(err)
	}
	if st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{}); st.GetQueuedLeases() != 1 {
		t.Fatalf("another owner withdrew the request: %v", st)
	}
	if _, err := rc.CancelLeaseRequests(ctx, &pb.CancelLeaseRequestsRequest{OwnerAddress: "owner-1", RequestIds: []string{"r2"}}); err != nil {
		t.Fatal(err)
	}
	if l := <-second; l == nil || !l.Withdrawn || l.LeaseId != "" {
		t.Fatalf("the withdrawn request got %v; want withdrawn", l)
	}
	if _, err := rc.ReturnWorkerLease(ctx, &pb.ReturnLeaseRequest{LeaseId: l1.LeaseId}); err != nil {
		t.Fatal(err)
	}
	st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
	if st.Available["CPU"] != 1 || st.LeasedWorkers != 0 || st.QueuedLeases != 0 {
		t.Fatalf("after the withdrawal and the return: %v", st)
	}
}
