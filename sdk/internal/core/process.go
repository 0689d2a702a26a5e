package core

// The process's runtime: Init makes a driver's Worker (joining a cluster,
// or starting an embedded one: a head and a raylet in this process),
// RunWorker a worker's, Shutdown ends both; Current returns it. The
// environment a raylet or a job supervisor passes down is read here.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/artifact"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/localaddr"
	"github.com/manta-ray/manta/lineage"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/raylet/workerpool"
	"github.com/manta-ray/manta/sdk/internal/logstream"
	"github.com/manta-ray/manta/sdk/internal/taskevents"
)

// InitOptions configure Init (sdk/ray's InitOption functions set them).
type InitOptions struct {
	// Address is the heads of a running cluster ("host:port,host:port");
	// empty looks in MANTA_ADDRESS, then the current-cluster file, then
	// starts an embedded cluster; "auto" requires an existing cluster
	// (lookup.go).
	Address string
	// Token is the cluster token (default MANTA_TOKEN or MANTA_TOKEN_FILE).
	Token string
	// Raylet is the raylet the driver submits through (default: the first
	// alive node by ID).
	Raylet string
	// Resources are the embedded node's (default: the machine's CPUs).
	Resources resources.Set
	// Logger logs the runtime (default: warnings to stderr).
	Logger *zap.Logger
	// NoLineage: the driver records no lineage.
	NoLineage bool
	// NoLogToDriver: the job's worker output is not printed here.
	NoLogToDriver bool
	// LogOutput receives the worker output shown here (default os.Stderr).
	LogOutput io.Writer
	// NoTaskEvents: this process reports no task events (also
	// MANTA_NO_TASK_EVENTS=1).
	NoTaskEvents bool
	// Detached: the job's objects outlive its driver while any detached
	// actor lives (controlplane/fsm/adoption.go: retained jobs).
	Detached bool
}

// The environment a job supervisor gives a submitted job's entrypoint
// (raylet/jobsupervisor): the cluster to join, the raylet of its node, and
// the submission the driver's job belongs to.
const (
	envAddress       = "MANTA_ADDRESS"
	envDriverRaylet  = "MANTA_DRIVER_RAYLET_ADDRESS"
	envSubmissionID  = "MANTA_SUBMISSION_ID"
	submissionIDMeta = "submission_id" // fsm.SubmissionDriverKey
)

// fromEnv fills what the options left unset from the environment: with
// MANTA_ADDRESS set, Init joins that cluster instead of starting an
// embedded one (as ray.init() reads RAY_ADDRESS).
func (o *InitOptions) fromEnv() {
	if o.Address == "" {
		o.Address = os.Getenv(envAddress)
	}
	if o.Raylet == "" && o.Address != "" {
		o.Raylet = os.Getenv(envDriverRaylet)
	}
}

// driverMetadata adds to a driver job's metadata the submission that
// started it, if any, which links the two in the job table.
func driverMetadata(md map[string]string) map[string]string {
	if id := os.Getenv(envSubmissionID); id != "" {
		md[submissionIDMeta] = id
	}
	return md
}

// state is the process's runtime: set by Init (or the worker's start),
// cleared by Shutdown.
var state struct {
	sync.Mutex
	c      *Worker
	cp     *cpclient.Client
	head   *head.Head
	raylet *raylet.Raylet
	nodes  []*raylet.Raylet // AddEmbeddedNode's
	tmp    string
	logs   *logstream.Streamer
	out    io.Writer // the embedded raylets' copy of worker output
}

// Current returns the process's Worker, or ErrNotInitialized.
func Current() (*Worker, error) {
	state.Lock()
	defer state.Unlock()
	if state.c == nil {
		return nil, ErrNotInitialized
	}
	return state.c, nil
}

// Init starts the driver: with an address it joins that cluster, otherwise
// it starts an embedded one (a head and a raylet in this process; workers
// are still separate processes of this binary).
func Init(ctx context.Context, o InitOptions) (err error) {
	o.fromEnv()
	if o.NoTaskEvents {
		// The embedded cluster's workers inherit this process's
		// environment, and with it the choice.
		os.Setenv(EnvNoTaskEvents, "1")
	} else if os.Getenv(EnvNoTaskEvents) == "1" {
		o.NoTaskEvents = true
	}
	if o.Logger == nil {
		cfg := zap.NewProductionConfig()
		cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
		cfg.Encoding = "console"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		if o.Logger, err = cfg.Build(); err != nil {
			return err
		}
	}
	log := o.Logger.Named("ray")
	if err := o.findCluster(ctx, log); err != nil {
		return err
	}
	state.Lock()
	defer state.Unlock()
	if state.c != nil {
		return errors.New("ray: already initialized")
	}
	defer func() {
		if err != nil {
			shutdownLocked(context.Background())
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	heads := o.Address
	token := o.Token
	if heads == "" {
		if err := startEmbedded(ctx, o, log, exe); err != nil {
			return err
		}
		heads = state.head.Address()
		token = state.head.Token()
	} else if token == "" {
		if token, err = cpclient.TokenFromEnv(); err != nil {
			return err
		}
	}
	tls, err := processTLS()
	if err != nil {
		return err
	}
	cp, err := cpclient.New(cpclient.Config{Addresses: []string{heads}, Token: token, TLS: tls, Logger: o.Logger})
	if err != nil {
		return err
	}
	state.cp = cp
	rayletAddr := o.Raylet
	if state.raylet != nil {
		rayletAddr = state.raylet.Address()
	}
	if rayletAddr == "" {
		if rayletAddr, err = pickRaylet(ctx, cp); err != nil {
			return err
		}
	}
	sha := ""
	if state.raylet == nil {
		if sha, err = artifact.Upload(ctx, cp, exe); err != nil {
			return err
		}
	}
	host := localaddr.For(rayletAddr)
	// The driver's server must be reachable from the raylets' workers.
	c, err := newWorker(log, "", token, rayletAddr, host)
	if err != nil {
		return err
	}
	jobID, err := cp.AddJob(ctx, &cpb.JobInfo{DriverAddress: c.address, Entrypoint: strings.Join(os.Args, " "),
		Metadata: driverMetadata(map[string]string{"binary_sha256": sha}), Detached: o.Detached})
	if err != nil {
		c.close()
		return fmt.Errorf("ray: register the job: %w", err)
	}
	c.setJob(jobID, sha)
	c.cp = cp
	c.lin.off = o.NoLineage
	c.root = &taskCtx{id: ids.DriverTaskID(jobID)}
	if !o.NoTaskEvents {
		c.ev.r.Store(taskevents.New(taskevents.Config{Sender: cp, Logger: log.Named("taskevents")}))
	}
	if !o.NoLogToDriver {
		state.logs = logstream.Start(logstream.Config{CP: cp, Token: token, JobID: jobID, Out: o.LogOutput, Logger: log.Named("logs")})
	}
	state.c = c
	log.Debug("driver started", zap.String("job", jobID), zap.String("raylet", rayletAddr))
	return nil
}

// embeddedOutput is where the embedded raylets copy their workers' output
// besides the log files: nowhere when the driver's log stream shows it
// (it would be printed twice).
func embeddedOutput(o InitOptions) io.Writer {
	if o.NoLogToDriver {
		return os.Stderr
	}
	return nil
}

func startEmbedded(ctx context.Context, o InitOptions, log *zap.Logger, exe string) error {
	dir, err := os.MkdirTemp("", "manta-embedded-")
	if err != nil {
		return err
	}
	state.tmp = dir
	state.out = embeddedOutput(o)
	h, err := head.New(head.Config{ID: "head-1", DataDir: filepath.Join(dir, "head"),
		GRPCAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", Logger: log.Named("head")})
	if err != nil {
		return fmt.Errorf("ray: embedded head: %w", err)
	}
	state.head = h
	deadline := time.Now().Add(30 * time.Second)
	for !h.IsLeader() || h.Token() == "" {
		if time.Now().After(deadline) {
			return errors.New("ray: the embedded head elected no leader in 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	r, err := raylet.New(raylet.Config{NodeID: "node-1", Heads: []string{h.Address()}, Token: h.Token(),
		DataDir: filepath.Join(dir, "raylet"), Resources: o.Resources, LocalBinary: exe,
		WorkerOutput: state.out, Logger: log})
	if err != nil {
		return fmt.Errorf("ray: embedded raylet: %w", err)
	}
	state.raylet = r
	return nil
}

// AddEmbeddedNode starts another raylet in this process, joined to the
// embedded cluster, with the given resources (CPU defaults to 1); Shutdown
// stops it. It returns the raylet's address.
func AddEmbeddedNode(res map[string]float64) (string, error) {
	state.Lock()
	defer state.Unlock()
	if state.c == nil {
		return "", ErrNotInitialized
	}
	if state.head == nil {
		return "", fmt.Errorf("%w: AddEmbeddedNode needs the embedded cluster (Init without Address)", ErrInvalidOption)
	}
	r := resources.Set(res).Clone()
	if _, ok := r[resources.CPU]; !ok {
		if r == nil {
			r = resources.Set{}
		}
		r[resources.CPU] = 1
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	id := fmt.Sprintf("node-%d", len(state.nodes)+2)
	n, err := raylet.New(raylet.Config{NodeID: id, Heads: []string{state.head.Address()}, Token: state.head.Token(),
		DataDir: filepath.Join(state.tmp, id), Resources: r, LocalBinary: exe,
		WorkerOutput: state.out, Logger: state.c.log.Named(id)})
	if err != nil {
		return "", fmt.Errorf("ray: embedded raylet %s: %w", id, err)
	}
	state.nodes = append(state.nodes, n)
	return n.Address(), nil
}

// EmbeddedRaylet is the embedded cluster's raylet address and token
// ("" when there is none).
func EmbeddedRaylet() (addr, token string) {
	state.Lock()
	defer state.Unlock()
	if state.raylet == nil || state.head == nil {
		return "", ""
	}
	return state.raylet.Address(), state.head.Token()
}

// pickRaylet picks the alive node with the lowest ID.
func pickRaylet(ctx context.Context, cp *cpclient.Client) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := cp.ListNodes(ctx, &cpb.ListNodesRequest{AliveOnly: true, Stale: true})
		if err == nil && len(r.Nodes) > 0 {
			sort.Slice(r.Nodes, func(i, j int) bool { return r.Nodes[i].NodeId < r.Nodes[j].NodeId })
			return r.Nodes[0].Address, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("ray: the cluster has no alive node (%v)", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Shutdown ends the job and stops the embedded cluster, if any.
func Shutdown(ctx context.Context) error {
	state.Lock()
	defer state.Unlock()
	return shutdownLocked(ctx)
}

func shutdownLocked(ctx context.Context) error {
	var err error
	if state.c != nil {
		state.c.cancel() // stop submitting before the job ends
	}
	if state.c != nil && state.cp != nil && state.c.jobID != "" {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = state.cp.FinishJob(fctx, state.c.jobID, cpb.JobState_JOB_SUCCEEDED, "")
		cancel()
	}
	if state.logs != nil {
		state.logs.Close()
		state.logs = nil
	}
	if state.c != nil {
		state.c.close()
		state.c = nil
	}
	if state.cp != nil {
		state.cp.Close()
		state.cp = nil
	}
	for _, r := range state.nodes {
		r.Close()
	}
	state.nodes = nil
	if state.raylet != nil {
		state.raylet.Close()
		state.raylet = nil
	}
	if state.head != nil {
		state.head.Close()
		state.head = nil
	}
	if state.tmp != "" {
		os.RemoveAll(state.tmp)
		state.tmp = ""
	}
	return err
}

// IsWorker says whether this process was started by a raylet as a worker.
func IsWorker() bool { return os.Getenv(workerpool.EnvWorkerID) != "" }

// RunWorker serves tasks until the raylet kills this process (or dies: the
// worker then exits too); it returns the process's exit code.
func RunWorker() int {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	log, _ := cfg.Build()
	workerID := os.Getenv(workerpool.EnvWorkerID)
	rayletAddr := os.Getenv(workerpool.EnvRayletAddress)
	host, _, _ := net.SplitHostPort(rayletAddr)
	c, err := newWorker(log.Named("worker").With(zap.String("worker", workerID)), os.Getenv(workerpool.EnvJobID),
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
	if os.Getenv(EnvNoTaskEvents) != "1" {
		if cp, err := c.controlPlane(); err == nil {
			c.ev.node, c.ev.worker, c.ev.pid = os.Getenv(workerpool.EnvNodeID), workerID, int32(os.Getpid())
			c.ev.r.Store(taskevents.New(taskevents.Config{Sender: cp, Logger: log.Named("taskevents")}))
			c.spawn(func() { c.ev.runningLoop(c.ctx, time.Second) })
		}
	}
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
func (c *Worker) blocked(ctx context.Context) func() {
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

// LineageRebuilds is how many tasks this process resubmitted to rebuild
// lost objects (tests count them).
func (c *Worker) LineageRebuilds() int64 { return c.lin.rebuilds.Load() }

// RetainedTasks is how many tasks are in this process's lineage index:
// those whose lineage something needs (tests).
func (c *Worker) RetainedTasks() int { return c.lin.retained() }

// RecorderStats returns the lineage recorder's counters (tests).
func (c *Worker) RecorderStats() lineage.Stats { return c.lin.stats() }
