package raylet_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// TestStrayActorWorkerIsKilled: a worker leased for an actor the actor
// table does not know (a placement whose leader went away before it heard
// the lease back) is killed and its CPU comes back; a task lease of the
// same age is left alone.
func TestStrayActorWorkerIsKilled(t *testing.T) {
	_, rc, _ := startRayletWith(t, resources.Set{"CPU": 2}, func(cfg *raylet.Config) { cfg.ActorCheck = 100 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	task, err := rc.RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"CPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	stray, err := rc.RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: "job-1", Resources: map[string]float64{"CPU": 1}, ActorId: "no-such-actor"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stray actor worker's CPU to come back", func() bool {
		st, _ := rc.GetStatus(ctx, &pb.GetStatusRequest{})
		return st.GetAvailable()["CPU"] == 1 && st.GetLeasedWorkers() == 1
	})
	if err := processAlive(int(stray.WorkerPid)); err == nil {
		// The pool reaps it: wait for the process to be gone.
		eventually(t, "the stray worker process to exit", func() bool { return processAlive(int(stray.WorkerPid)) != nil })
	}
	if err := processAlive(int(task.WorkerPid)); err != nil {
		t.Fatalf("the task lease's worker %d was killed too: %v", task.WorkerPid, err)
	}
}

// processAlive is nil while pid exists.
func processAlive(pid int) error { return syscall.Kill(pid, 0) }
