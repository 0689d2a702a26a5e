package raylet_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/manta-ray/manta/controlplane/statefilter"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/state"
)

// TestStateListsWorkersAndObjects: the State API's workers and objects
// come from the raylet's ListWorkers and ListObjects, found through the
// node table: a leased worker with its PID and job, a stored object with
// its size, owner and node; filters and NotFound work on them.
func TestStateListsWorkersAndObjects(t *testing.T) {
	_, rc, tc := startRaylet(t, resources.Set{"CPU": 1})
	ctx := testCtx(t)
	lease, err := rc.RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"CPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	id := newObjectID(t)
	if err := putObject(ctx, rc, id, randomBytes(1000), "job-1", "10.0.0.9:4000"); err != nil {
		t.Fatal(err)
	}
	cl := tc.Client()

	workers, err := state.ListWorkers(ctx, cl, state.WithDetail(true))
	if err != nil {
		t.Fatal(err)
	}
	if len(workers.Rows) != 1 || len(workers.Warnings) != 0 {
		t.Fatalf("workers: %+v", workers)
	}
	w := workers.Rows[0]
	if w["worker_id"] != lease.WorkerId || w["pid"] != lease.WorkerPid || w["job_id"] != "job-1" || w["state"] != "LEASED" || w["node_id"] != "n1" {
		t.Fatalf("worker row: %v (lease %v)", w, lease)
	}

	objects, err := state.ListObjects(ctx, cl, state.WithFilter("object_size=1000"), state.WithDetail(true))
	if err != nil {
		t.Fatal(err)
	}
	if len(objects.Rows) != 1 {
		t.Fatalf("objects: %+v", objects)
	}
	o := objects.Rows[0]
	if o["object_id"] != hex.EncodeToString(id[:]) || o["owner_address"] != "10.0.0.9:4000" || o["node_id"] != "n1" ||
		o["tier"] != "memory" || o["primary"] != true || o["job_id"] != "job-1" {
		t.Fatalf("object row: %v", o)
	}
	if l, err := state.ListObjects(ctx, cl, state.WithFilter("object_size!=1000")); err != nil || len(l.Rows) != 0 {
		t.Fatalf("object_size!=1000: %v %v", l, err)
	}
	if _, err := state.ListObjects(ctx, cl, state.WithFilter("object_size=big")); !errors.Is(err, statefilter.ErrBadFilter) ||
		!strings.Contains(err.Error(), "object_size") {
		t.Fatalf("bad filter: %v", err)
	}
	if rows, err := state.Get(ctx, cl, "object", hex.EncodeToString(id[:])); err != nil || len(rows) != 1 {
		t.Fatalf("get object: %v %v", rows, err)
	}
	if _, err := state.Get(ctx, cl, "object", strings.Repeat("ab", 20)); !errors.Is(err, rpcerr.ErrNotFound) {
		t.Fatalf("unknown object: %v", err)
	}
	s, err := state.SummarizeObjects(ctx, cl)
	if err != nil || s.Stats["total_objects"] != 1 {
		t.Fatalf("summary: %+v %v", s, err)
	}
}
