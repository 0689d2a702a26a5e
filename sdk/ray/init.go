package ray

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// InitOption configures Init.
type InitOption func(*core.InitOptions)

// Address connects to a running cluster through any of its heads
// ("host:port,host:port"). Without it Init looks for one as ray.init()
// does: MANTA_ADDRESS, then the current-cluster file that `manta up` and
// `manta start --head` write; only if neither names a live cluster does
// it start an embedded one. Address("auto") looks the same way but
// returns ErrNoCluster instead of starting one.
func Address(heads string) InitOption { return func(o *core.InitOptions) { o.Address = heads } }

// Token is the cluster token (default MANTA_TOKEN or MANTA_TOKEN_FILE).
func Token(t string) InitOption { return func(o *core.InitOptions) { o.Token = t } }

// Raylet picks the raylet the driver submits through (default: the first
// alive node by ID).
func Raylet(addr string) InitOption { return func(o *core.InitOptions) { o.Raylet = addr } }

// NodeResources sets the embedded node's resources (default: the
// machine's CPUs).
func NodeResources(r map[string]float64) InitOption {
	return func(o *core.InitOptions) { o.Resources = resources.Set(r).Clone() }
}

// Logger logs the runtime through l (default: warnings to stderr).
func Logger(l *zap.Logger) InitOption { return func(o *core.InitOptions) { o.Logger = l } }

// RecordLineage turns lineage on (the default) or off. Off, tasks are not
// recorded in the control plane and the owner keeps no specs, so an output
// lost with its node stays lost (Get returns ErrObjectLost). It applies to
// the driver; tasks submitted by workers record their lineage regardless.
func RecordLineage(on bool) InitOption { return func(o *core.InitOptions) { o.NoLineage = !on } }

// LogToDriver turns on (the default) or off the printing of the job's
// worker output on the driver's stderr, each line prefixed as Ray does:
// "(fn pid=123, node=node-2) line". Off, the output is still kept in each
// node's worker log files (manta logs).
func LogToDriver(on bool) InitOption { return func(o *core.InitOptions) { o.NoLogToDriver = !on } }

// LogOutput is where LogToDriver prints the workers' lines (default
// os.Stderr).
func LogOutput(w io.Writer) InitOption { return func(o *core.InitOptions) { o.LogOutput = w } }

// TaskEvents turns on (the default) or off the reporting of task state
// changes to the control plane (manta list tasks, the dashboard). Off,
// the job's tasks are missing from the State API. Workers started for
// the driver by an embedded cluster inherit the choice.
func TaskEvents(on bool) InitOption { return func(o *core.InitOptions) { o.NoTaskEvents = !on } }

// JobLifetime sets the job's lifetime. When its driver ends, a job ends
// and its objects go (NonDetached, the default) unless detached actors
// live that may hold its refs: the job's own detached actors always keep
// its objects (and their lineage, adopted by the control plane) until the
// last of them dies; a Detached job's objects are kept while any detached
// actor in the cluster lives, since refs cross jobs through named actors.
func JobLifetime(l LifetimeKind) InitOption {
	return func(o *core.InitOptions) { o.Detached = l == Detached }
}

// Init starts the driver: with Address it joins that cluster, otherwise it
// starts an embedded one (a head and a raylet in this process; workers are
// still separate processes of this binary, so main must go through Main).
// Without Address, MANTA_ADDRESS (set for a submitted job) names the
// cluster to join.
func Init(ctx context.Context, opts ...InitOption) error {
	o := core.InitOptions{}
	for _, f := range opts {
		f(&o)
	}
	return core.Init(ctx, o)
}

// AddEmbeddedNode starts another raylet in this process, joined to the
// embedded cluster, with the given resources (CPU defaults to 1); Shutdown
// stops it. It returns the raylet's address. It lets tests and benchmarks
// exercise what crosses nodes (object transfers, spillback) on one machine.
func AddEmbeddedNode(res map[string]float64) (string, error) { return core.AddEmbeddedNode(res) }

// Shutdown ends the job and stops the embedded cluster, if any.
func Shutdown(ctx context.Context) error { return core.Shutdown(ctx) }

// IsWorker says whether this process was started by a raylet as a worker.
func IsWorker() bool { return core.IsWorker() }

// Main is the one line a program adds to main: in a worker process (started
// by a raylet) it serves tasks and never returns; otherwise it runs fn as
// the driver with a context cancelled on SIGINT/SIGTERM, shuts the runtime
// down, and exits non-zero when fn fails.
func Main(fn func(ctx context.Context) error) {
	if IsWorker() {
		os.Exit(core.RunWorker())
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
