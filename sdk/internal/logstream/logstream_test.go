package logstream_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/raylet/workerlog"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/internal/logstream"
)

// TestMain lets the test binary serve as the raylets' workers: a worker
// handshakes, prints a marker (a task on node n1, an actor elsewhere) and
// a line, and waits to be killed.
func TestMain(m *testing.M) {
	if os.Getenv(workerpool.EnvWorkerID) != "" {
		runWorker()
	}
	os.Exit(m.Run())
}

func runWorker() {
	id, node, job := os.Getenv(workerpool.EnvWorkerID), os.Getenv(workerpool.EnvNodeID), os.Getenv(workerpool.EnvJobID)
	tok := os.Getenv(workerpool.EnvToken)
	cc, err := grpc.NewClient(os.Getenv(workerpool.EnvRayletAddress), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return tok })))
	if err != nil {
		os.Exit(3)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err = pb.NewRayletClient(cc).RegisterWorker(ctx, &pb.RegisterWorkerRequest{WorkerId: id, Address: "127.0.0.1:1", Pid: int32(os.Getpid())})
	cancel()
	if err != nil {
		os.Exit(4)
	}
	if job == "flood" {
		line := strings.Repeat("x", 200)
		for i := range 100_000 { // 20 MB: past gRPC's 16 MiB window cap
			fmt.Printf("%06d %s\n", i, line)
		}
		fmt.Println("flood done")
		select {}
	}
	if node == "n1" {
		_ = workerlog.WriteTaskMarker(os.Stdout, "t1", 0, "square", "")
	} else {
		_ = workerlog.WriteActorMarker(os.Stdout, "a1", "Counter")
		_ = workerlog.WriteTaskMarker(os.Stdout, "t2", 0, "Counter.incr", "a1")
	}
	fmt.Printf("hello from %s of %s\n", node, job)
	fmt.Fprintf(os.Stderr, "stderr of %s of %s\n", node, job)
	select {} // until the pool kills it
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startRaylet(t *testing.T, tc *testcluster.Cluster, node string) *raylet.Raylet {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, err := raylet.New(raylet.Config{NodeID: node, Heads: tc.Addresses(), Token: tc.Token(), LocalBinary: exe,
		DataDir: t.TempDir(), Resources: resources.Set{"CPU": 2}, PrestartWorkers: -1, ObjectStoreMemory: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// lease starts a worker of job on r and returns its PID.
func lease(t *testing.T, tc *testcluster.Cluster, r *raylet.Raylet, job string) int32 {
	t.Helper()
	cc, err := grpc.NewClient(r.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return tc.Token() })))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := pb.NewRayletClient(cc).RequestWorkerLease(ctx, &pb.LeaseRequest{JobId: job, Resources: map[string]float64{"CPU": 1}})
	if err != nil || l.WorkerPid == 0 {
		t.Fatalf("lease on %s: %v %v", r.NodeID(), l, err)
	}
	return l.WorkerPid
}

// TestWorkerLinesReachTheDriverWithPrefix: the lines a job's workers print
// reach the job's streamer with Ray's prefix (the task's function, or the
// actor's class), on a node that joins after the streamer started too;
// another job's lines do not; Close stops it.
func TestWorkerLinesReachTheDriverWithPrefix(t *testing.T) {
	tc := testcluster.Start(t, 1, nil)
	r1 := startRaylet(t, tc, "n1")
	cp := tc.Client()
	var out syncBuffer
	s := logstream.Start(logstream.Config{CP: cp, Token: tc.Token(), JobID: "job-a", Out: &out})
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()

	pid := lease(t, tc, r1, "job-a")
	for _, want := range []string{
		fmt.Sprintf("(square pid=%d, node=n1) hello from n1 of job-a\n", pid),
		fmt.Sprintf("(square pid=%d, node=n1) stderr of n1 of job-a\n", pid),
	} {
		eventually(t, "the line "+want, func() bool { return strings.Contains(out.String(), want) })
	}

	// Another job's worker prints on n1; a node joins and a job-a worker
	// (an actor's) prints there.
	otherPID := lease(t, tc, r1, "job-b")
	r2 := startRaylet(t, tc, "n2")
	pid2 := lease(t, tc, r2, "job-a")
	want := fmt.Sprintf("(Counter pid=%d, node=n2) hello from n2 of job-a\n", pid2)
	eventually(t, "the joined node's line "+want, func() bool { return strings.Contains(out.String(), want) })
	// By now n1's stream has polled job-b's file many times over.
	if strings.Contains(out.String(), "job-b") {
		t.Fatalf("another job's line (pid %d) reached the driver:\n%s", otherPID, out.String())
	}
	if strings.Contains(out.String(), workerlog.TaskPrefix) || strings.Contains(out.String(), workerlog.ActorPrefix) {
		t.Fatalf("a marker reached the driver:\n%q", out.String())
	}
	s.Close()
	closed = true
	s.Close() // idempotent
}

// TestStuckReaderDoesNotBlockWorkers: a follower that never reads its
// stream does not hold up a worker printing far more than gRPC buffers;
// the worker's last line is on disk and served to another reader.
func TestStuckReaderDoesNotBlockWorkers(t *testing.T) {
	tc := testcluster.Start(t, 1, nil)
	r := startRaylet(t, tc, "n1")
	cc, err := grpc.NewClient(r.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return tc.Token() })))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck, err := pb.NewRayletClient(cc).StreamLogs(ctx, &pb.StreamLogsRequest{JobId: "flood", Tail: -1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = stuck // never received from
	lease(t, tc, r, "flood")
	eventually(t, "the flooding worker's last line", func() bool {
		var last []byte
		err := raylet.StreamLogs(ctx, r.Address(), tc.Token(), &pb.StreamLogsRequest{JobId: "flood", Tail: 1}, func(b *pb.LogBatch) error {
			for _, l := range b.Lines {
				last = l.Line
			}
			return nil
		})
		return err == nil && string(last) == "flood done"
	})
}
