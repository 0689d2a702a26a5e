package raylet_test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// TestStrayActorWorkerIsKilled: a worker leased for an actor the actor
// table does not know (a placement whose leader went away before it heard
// the lease back) is killed and its CPU comes back; a task lease of the
// same age is left alone.
func TestStrayActorWorkerIsKilled(t *testing.T) {
	tc := testcluster.Start(t, 1, nil)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, err := raylet.New(raylet.Config{NodeID: "n1", Heads: tc.Addresses(), Token: tc.Token(), Resources: resources.Set{"CPU": 2},
		LocalBinary: exe, DataDir: t.TempDir(), ActorCheck: 100 * time.Millisecond})
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
	rc := pb.NewRayletClient(cc)
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
func processAlive(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(syscallZero)
}

var syscallZero = syscall.Signal(0)
