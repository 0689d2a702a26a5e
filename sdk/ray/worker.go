package ray

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// IsWorker says whether this process was started by a raylet as a worker.
func IsWorker() bool { return os.Getenv(workerpool.EnvWorkerID) != "" }

// runWorker serves tasks until the raylet kills this process (or dies: the
// worker then exits too).
func runWorker() int {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	log, _ := cfg.Build()
	workerID := os.Getenv(workerpool.EnvWorkerID)
	rayletAddr := os.Getenv(workerpool.EnvRayletAddress)
	host, _, _ := net.SplitHostPort(rayletAddr)
	c, err := newCore(log.Named("worker").With(zap.String("worker", workerID)), os.Getenv(workerpool.EnvJobID),
		os.Getenv(workerpool.EnvToken), rayletAddr, host)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	c.workerID = workerID
	if os.Getenv(workerpool.EnvProcsPreset) != "" {
		c.procs = 1 // the raylet started us with GOMAXPROCS=1
	} else {
		c.fixedProcs = os.Getenv("GOMAXPROCS") != ""
	}
	c.binarySHA = os.Getenv(workerpool.EnvBinarySHA256)
	c.root = &taskCtx{id: ids.NewTaskID(c.jobID, ids.DriverTaskID(c.jobID), uint64(os.Getpid())<<32)}
	state.Lock()
	state.c = c
	state.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err = c.raylet.RegisterWorker(ctx, &pb.RegisterWorkerRequest{WorkerId: workerID, Address: c.address, Pid: int32(os.Getpid())})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker: handshake with the raylet:", err)
		return 1
	}
	// Pdeathsig covers the raylet's death; this covers a parent that
	// outlived its raylet (embedded mode ends with its driver).
	ppid := os.Getppid()
	for os.Getppid() == ppid {
		time.Sleep(time.Second)
	}
	return 0
}

// blocked tells the raylet that the current task waits in Get or Wait, so
// its CPU is lent out meanwhile; the returned func takes it back.
func (c *core) blocked(ctx context.Context) func() {
	if c.workerID == "" {
		return func() {}
	}
	if tc, ok := ctx.Value(taskKey{}).(*taskCtx); !ok || !tc.worker {
		return func() {}
	}
	_, _ = c.raylet.NotifyBlocked(context.WithoutCancel(ctx), &pb.NotifyBlockedRequest{WorkerId: c.workerID, Blocked: true})
	return func() {
		_, _ = c.raylet.NotifyBlocked(context.WithoutCancel(ctx), &pb.NotifyBlockedRequest{WorkerId: c.workerID, Blocked: false})
	}
}
