package raylet_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// TestBundleLifecycle: a prepared bundle takes its resources from the
// node; a committed one serves leases of its group from its own pool; a
// release kills its workers, fails the requests that wait for it, and
// gives every resource back.
func TestBundleLifecycle(t *testing.T) {
	_, rc, _ := startRaylet(t, resources.Set{"CPU": 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := func(i int32, cpu float64) *pb.BundleSpec {
		return &pb.BundleSpec{PlacementGroupId: "g", Index: i, Resources: map[string]float64{"CPU": cpu}}
	}
	avail := func() float64 {
		st, err := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.Available["CPU"]
	}
	if _, err := rc.PrepareBundles(ctx, &pb.BundlesRequest{Bundles: []*pb.BundleSpec{spec(0, 1), spec(1, 1)}}); err != nil {
		t.Fatal(err)
	}
	if got := avail(); got != 1 {
		t.Fatalf("after preparing 2 CPUs: %v free; want 1", got)
	}
	// All or nothing: a prepare that does not fit reserves nothing.
	_, err := rc.PrepareBundles(ctx, &pb.BundlesRequest{Bundles: []*pb.BundleSpec{{PlacementGroupId: "h", Index: 0, Resources: map[string]float64{"CPU": 1}},
		{PlacementGroupId: "h", Index: 1, Resources: map[string]float64{"CPU": 1}}}})
	if !errors.Is(rpcerr.FromStatus(err), raylet.ErrBundleResources) {
		t.Fatalf("a prepare too big: %v; want ErrBundleResources", err)
	}
	if got := avail(); got != 1 {
		t.Fatalf("after a refused prepare: %v free; want 1", got)
	}
	// A lease of the group waits until its bundle is committed, then
	// takes the bundle's CPU, not the node's.
	in := func(i int32) *pb.LeaseRequest {
		return &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"CPU": 1},
			Strategy: &cpb.SchedulingStrategy{Kind: cpb.SchedulingStrategy_PLACEMENT_GROUP, PlacementGroupId: "g", BundleIndex: i}}
	}
	granted := make(chan *pb.LeaseReply, 1)
	go func() {
		l, err := rc.RequestWorkerLease(ctx, in(0))
		if err != nil {
			t.Error(err)
		}
		granted <- l
	}()
	eventually(t, "the request to queue", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.GetQueuedLeases() == 1
	})
	if _, err := rc.CommitBundles(ctx, &pb.BundlesRequest{Bundles: []*pb.BundleSpec{spec(0, 1), spec(1, 1)}}); err != nil {
		t.Fatal(err)
	}
	l := <-granted
	if l == nil || l.WorkerPid == 0 {
		t.Fatalf("lease in bundle 0: %v", l)
	}
	if got := avail(); got != 1 {
		t.Fatalf("with a lease in a bundle: %v free; want the node's 1 untouched", got)
	}
	held, err := rc.ListBundles(ctx, &pb.ListBundlesRequest{})
	if err != nil || len(held.Bundles) != 2 || held.Bundles[0].Available["CPU"] != 0 || !held.Bundles[0].Committed {
		t.Fatalf("bundles: %v, %v", held, err)
	}
	// Bundle 0 is busy: a second request for it waits, and fails when the
	// group is released.
	failed := make(chan error, 1)
	go func() {
		_, err := rc.RequestWorkerLease(ctx, in(0))
		failed <- err
	}()
	eventually(t, "the second request to queue", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.GetQueuedLeases() == 1
	})
	if _, err := rc.ReleaseBundles(ctx, &pb.ReleaseBundlesRequest{PlacementGroupId: "g", Reason: "removed"}); err != nil {
		t.Fatal(err)
	}
	if err := <-failed; !errors.Is(rpcerr.FromStatus(err), raylet.ErrUnschedulable) {
		t.Fatalf("a request of a released group: %v; want ErrUnschedulable", err)
	}
	eventually(t, "the bundle's worker to die and every CPU to come back", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.Available["CPU"] == 3 && st.LeasedWorkers == 0
	})
	// The lease's late return changes nothing.
	if _, err := rc.ReturnWorkerLease(ctx, &pb.ReturnLeaseRequest{LeaseId: l.LeaseId}); err != nil {
		t.Fatal(err)
	}
	if got := avail(); got != 3 {
		t.Fatalf("after the late return: %v free; want 3", got)
	}
}
