package ray

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/artifact"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/localaddr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// InitOption configures Init.
type InitOption func(*initOptions)

type initOptions struct {
	address   string
	token     string
	raylet    string
	resources resources.Set
	logger    *zap.Logger
	noLineage bool
}

// Address connects to a running cluster through any of its heads
// ("host:port,host:port"). Without it Init starts an embedded cluster.
func Address(heads string) InitOption { return func(o *initOptions) { o.address = heads } }

// Token is the cluster token (default MANTA_TOKEN or MANTA_TOKEN_FILE).
func Token(t string) InitOption { return func(o *initOptions) { o.token = t } }

// Raylet picks the raylet the driver submits through (default: the first
// alive node by ID).
func Raylet(addr string) InitOption { return func(o *initOptions) { o.raylet = addr } }

// NodeResources sets the embedded node's resources (default: the
// machine's CPUs).
func NodeResources(r map[string]float64) InitOption {
	return func(o *initOptions) { o.resources = resources.Set(r).Clone() }
}

// Logger logs the runtime through l (default: warnings to stderr).
func Logger(l *zap.Logger) InitOption { return func(o *initOptions) { o.logger = l } }

// state is the process's runtime: set by Init (or the worker's start),
// cleared by Shutdown.
var state struct {
	sync.Mutex
	c      *core
	cp     *cpclient.Client
	head   *head.Head
	raylet *raylet.Raylet
	nodes  []*raylet.Raylet // AddEmbeddedNode's
	tmp    string
}

func current() (*core, error) {
	state.Lock()
	defer state.Unlock()
	if state.c == nil {
		return nil, ErrNotInitialized
	}
	return state.c, nil
}

// Init starts the driver: with Address it joins that cluster, otherwise it
// starts an embedded one (a head and a raylet in this process; workers are
// still separate processes of this binary, so main must go through Main).
func Init(ctx context.Context, opts ...InitOption) (err error) {
	o := initOptions{}
	for _, f := range opts {
		f(&o)
	}
	o.fromEnv()
	if o.logger == nil {
		cfg := zap.NewProductionConfig()
		cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
		cfg.Encoding = "console"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		if o.logger, err = cfg.Build(); err != nil {
			return err
		}
	}
	log := o.logger.Named("ray")
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
	heads := o.address
	token := o.token
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
	cp, err := cpclient.New(cpclient.Config{Addresses: []string{heads}, Token: token, Logger: o.logger})
	if err != nil {
		return err
	}
	state.cp = cp
	rayletAddr := o.raylet
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
	c, err := newCore(log, "", token, rayletAddr, host)
	if err != nil {
		return err
	}
	jobID, err := cp.AddJob(ctx, &cpb.JobInfo{DriverAddress: c.address, Entrypoint: strings.Join(os.Args, " "),
		Metadata: driverMetadata(map[string]string{"binary_sha256": sha})})
	if err != nil {
		c.close()
		return fmt.Errorf("ray: register the job: %w", err)
	}
	c.jobID, c.binarySHA, c.cp = jobID, sha, cp
	c.lin.off = o.noLineage
	c.root = &taskCtx{id: ids.DriverTaskID(jobID)}
	state.c = c
	log.Debug("driver started", zap.String("job", jobID), zap.String("raylet", rayletAddr))
	return nil
}

func startEmbedded(ctx context.Context, o initOptions, log *zap.Logger, exe string) error {
	dir, err := os.MkdirTemp("", "manta-embedded-")
	if err != nil {
		return err
	}
	state.tmp = dir
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
		DataDir: filepath.Join(dir, "raylet"), Resources: o.resources, LocalBinary: exe,
		WorkerOutput: os.Stderr, Logger: log})
	if err != nil {
		return fmt.Errorf("ray: embedded raylet: %w", err)
	}
	state.raylet = r
	return nil
}

// AddEmbeddedNode starts another raylet in this process, joined to the
// embedded cluster, with the given resources (CPU defaults to 1); Shutdown
// stops it. It returns the raylet's address. It lets tests and benchmarks
// exercise what crosses nodes (object transfers, spillback) on one machine.
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
		WorkerOutput: os.Stderr, Logger: state.c.log.Named(id)})
	if err != nil {
		return "", fmt.Errorf("ray: embedded raylet %s: %w", id, err)
	}
	state.nodes = append(state.nodes, n)
	return n.Address(), nil
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

// Main is the one line a program adds to main: in a worker process (started
// by a raylet) it serves tasks and never returns; otherwise it runs fn as
// the driver with a context cancelled on SIGINT/SIGTERM, shuts the runtime
// down, and exits non-zero when fn fails.
func Main(fn func(ctx context.Context) error) {
	if IsWorker() {
		os.Exit(runWorker())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := fn(ctx)
	stop()
	_ = Shutdown(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
