package raylet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/metrics"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

func scrapeRaylet(t *testing.T, ctx context.Context, r *raylet.Raylet, token string) metrics.Families {
	t.Helper()
	f, err := metrics.Scrape(ctx, "http://"+r.MetricsAddress()+metrics.Path, token)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mustValue(t *testing.T, f metrics.Families, name string, match ...string) float64 {
	t.Helper()
	v, ok := f.Value(name, match...)
	if !ok {
		t.Fatalf("no series %s%v", name, match)
	}
	return v
}

// TestRayletMetricsMove scrapes a real raylet's /metrics with Prometheus'
// parser around a lease, an infeasible request and a spillback, and checks
// the raylet registered its metrics address for service discovery.
func TestRayletMetricsMove(t *testing.T) {
	r, rc, tc := startRaylet(t, resources.Set{"CPU": 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok := tc.Token()

	f := scrapeRaylet(t, ctx, r, tok)
	if v := mustValue(t, f, "manta_raylet_lease_grants_total"); v != 0 {
		t.Fatalf("grants before any lease: %v", v)
	}
	if v := mustValue(t, f, "manta_object_store_capacity_bytes"); v <= 0 {
		t.Fatalf("store capacity %v", v)
	}
	if v := mustValue(t, f, "manta_raylet_resource_capacity", "resource", "CPU"); v != 1 {
		t.Fatalf("CPU capacity %v", v)
	}
	for _, name := range []string{"manta_object_store_used_bytes", "manta_object_store_objects", "manta_object_store_spilled_bytes",
		"manta_object_store_restores_total", "manta_object_pulls_total", "manta_raylet_runtime_env_setups_total"} {
		mustValue(t, f, name)
	}
	mustValue(t, f, "manta_object_transfer_bytes_total", "direction", "in")

	l, err := rc.RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"CPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	f = scrapeRaylet(t, ctx, r, tok)
	for name, want := range map[string]float64{"manta_raylet_lease_requests_total": 1, "manta_raylet_lease_grants_total": 1,
		"manta_raylet_leases_active": 1} {
		if v := mustValue(t, f, name); v != want {
			t.Fatalf("%s = %v, want %v", name, v, want)
		}
	}
	if v := mustValue(t, f, "grpc_server_handled_total", "grpc_method", "RequestWorkerLease", "grpc_code", "OK"); v != 1 {
		t.Fatalf("RequestWorkerLease OK calls %v", v)
	}
	if v := mustValue(t, f, "manta_raylet_workers", "job", "job-1"); v < 1 {
		t.Fatalf("job-1's workers %v", v)
	}
	if v := mustValue(t, f, "manta_raylet_workers_started_total"); v < 1 {
		t.Fatalf("workers started %v", v)
	}
	if v := mustValue(t, f, "manta_raylet_resource_available", "resource", "CPU"); v != 0 {
		t.Fatalf("CPU available under a lease: %v", v)
	}
	if _, err := rc.ReturnWorkerLease(ctx, &pb.ReturnLeaseRequest{LeaseId: l.LeaseId}); err != nil {
		t.Fatal(err)
	}

	// An infeasible request waits, counted and queued.
	gpuCtx, gpuCancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := rc.RequestWorkerLease(gpuCtx, &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"GPU": 1}})
		done <- err
	}()
	testcluster.Eventually(t, 20*time.Second, func() error {
		f := scrapeRaylet(t, ctx, r, tok)
		q, _ := f.Value("manta_raylet_lease_requests_queued", "reason", "infeasible")
		n, _ := f.Value("manta_raylet_lease_infeasible_total")
		if q != 1 || n != 1 {
			return fmt.Errorf("infeasible queued %v, counted %v", q, n)
		}
		return nil
	})

	// A node with a GPU joins: the request spills back to it.
	exe, _ := os.Executable()
	r2, err := raylet.New(raylet.Config{NodeID: "n2", Heads: tc.Addresses(), Token: tok, LocalBinary: exe,
		DataDir: t.TempDir(), Resources: resources.Set{"CPU": 1, "GPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	if err := <-done; err != nil {
		t.Fatalf("the GPU request: %v", err)
	}
	gpuCancel()
	f = scrapeRaylet(t, ctx, r, tok)
	if v := mustValue(t, f, "manta_raylet_lease_spillbacks_total"); v != 1 {
		t.Fatalf("spillbacks %v", v)
	}
	if v := mustValue(t, f, "manta_raylet_lease_requests_queued", "reason", "infeasible"); v != 0 {
		t.Fatalf("infeasible still queued: %v", v)
	}

	// Both raylets registered their metrics addresses, and the head lists
	// them in its service-discovery file.
	nodes, err := tc.Client().ListNodes(ctx, &cpb.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range nodes.Nodes {
		got[n.NodeId] = n.MetricsAddress
	}
	if got["n1"] != r.MetricsAddress() || got["n2"] != r2.MetricsAddress() {
		t.Fatalf("registered metrics addresses %v, want n1=%s n2=%s", got, r.MetricsAddress(), r2.MetricsAddress())
	}
	path := filepath.Join(tc.DataDir(0), metrics.SDFileName)
	testcluster.Eventually(t, 15*time.Second, func() error {
		ts, err := metrics.ReadSD(path)
		if err != nil {
			return err
		}
		for _, want := range []metrics.Target{{Address: r.MetricsAddress(), Node: "n1", Role: "raylet"},
			{Address: r2.MetricsAddress(), Node: "n2", Role: "raylet"}} {
			if !slices.Contains(ts, want) {
				return fmt.Errorf("%s lists %v; %v missing", path, ts, want)
			}
		}
		return nil
	})
}

// TestObjectTransferMetrics pulls an object from one raylet to another
// and checks both sides count it.
func TestObjectTransferMetrics(t *testing.T) {
	nodes, tc := startNodes(t, 2, nil)
	src, dst, ctx := nodes[0], nodes[1], testCtx(t)
	owner := startFakeOwner(t)
	data := randomBytes(3<<20 + 5)
	id := newObjectID(t)
	if err := putObject(ctx, src.rc, id, data, "job-x", owner.addr); err != nil {
		t.Fatal(err)
	}
	if _, m := readMapped(t, ctx, dst.rc, "reader", id, dst.r.Address(), src.r.Address()); m.Error != nil {
		t.Fatalf("pull: %v", m.Error)
	}
	size := float64(len(data))
	in := scrapeRaylet(t, ctx, dst.r, tc.Token())
	if v := mustValue(t, in, "manta_object_pulls_total"); v != 1 {
		t.Fatalf("pulls on the destination: %v", v)
	}
	if v := mustValue(t, in, "manta_object_transfer_bytes_total", "direction", "in"); v != size {
		t.Fatalf("bytes in: %v, want %v", v, size)
	}
	if v := mustValue(t, in, "manta_object_store_objects"); v != 1 {
		t.Fatalf("objects on the destination: %v", v)
	}
	out := scrapeRaylet(t, ctx, src.r, tc.Token())
	if v := mustValue(t, out, "manta_object_transfer_bytes_total", "direction", "out"); v != size {
		t.Fatalf("bytes out: %v, want %v", v, size)
	}
	if v := mustValue(t, out, "manta_object_store_used_bytes"); v < size {
		t.Fatalf("source's store use %v < the object's %v", v, size)
	}
}
