package raylet

import (
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/objectstore"
	"github.com/manta-ray/manta/raylet/resources"
)

// Config configures a raylet. Zero values take defaults.
type Config struct {
	// NodeID is the node's ID; default a random one. A raylet whose node
	// was marked dead exits (like Ray's): a restart registers afresh.
	NodeID string
	// Heads are the control plane's gRPC addresses; Token its token.
	Heads []string
	Token string
	// ListenAddr is where the raylet serves; default 127.0.0.1:0.
	ListenAddr string
	// DataDir holds worker logs and cached job binaries; default a
	// temporary directory removed on Close.
	DataDir string
	// Resources the node offers; CPU defaults to the machine's CPUs.
	Resources resources.Set
	// LocalBinary is the worker binary for jobs that name none (embedded
	// mode: the driver's own executable).
	LocalBinary string
	// WorkerOutput, when set, receives every worker's stdout and stderr
	// (embedded mode); otherwise each worker logs to DataDir/logs.
	WorkerOutput io.Writer
	// Store is the object store; default an in-memory one.
	Store objectstore.Store

	HeartbeatInterval time.Duration // default 500ms
	ViewInterval      time.Duration // cluster view refresh; default 250ms
	IdleWorkerTimeout time.Duration // default 10s
	// PrestartWorkers bounds the warm workers kept per job (started ahead
	// of need, so an actor's dedicated worker is usually ready at once);
	// default the node's CPUs, negative for none.
	PrestartWorkers int
	OwnerCheck      time.Duration // owner liveness check; default 1s
	MaxSpillHops    int           // default 4

	Logger *zap.Logger
	Knobs  TestingKnobs
}

// TestingKnobs inject faults through production seams (tests, chaos).
type TestingKnobs struct {
	// SkipHeartbeat, when it returns true, skips a heartbeat (a node the
	// control plane stops hearing from).
	SkipHeartbeat func() bool
}
