package raylet

import (
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/tlsconfig"
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
	// MetricsAddr is where it serves Prometheus /metrics (behind the
	// token); default ListenAddr's host with an ephemeral port. The
	// address is registered with the node.
	MetricsAddr string
	// DataDir holds worker logs and cached job binaries; default a
	// temporary directory removed on Close.
	DataDir string
	// Resources the node offers; CPU defaults to the machine's CPUs.
	Resources resources.Set
	// LocalBinary is the worker binary for jobs that name none (embedded
	// mode: the driver's own executable).
	LocalBinary string
	// Each worker's stdout and stderr go to its own rotated file in
	// DataDir/logs (served by StreamLogs); WorkerOutput, when set, receives
	// them too (embedded mode).
	WorkerOutput io.Writer
	// WorkerLogMaxBytes bounds a worker's log file before it rotates, and
	// WorkerLogBackups is how many rotated files are kept; defaults
	// workerpool.DefaultLogMaxBytes and DefaultLogBackups.
	WorkerLogMaxBytes int64
	WorkerLogBackups  int
	// Store injects an object store (the caller closes it); default a
	// shared-memory one (objectstore.Shared) of ObjectStoreMemory bytes
	// that Close removes. Only a Shared store serves CreateObject and
	// MapObjects; others serve PutObject and GetObject.
	Store objectstore.Store
	// ObjectStoreMemory is the shared arena's capacity; default
	// objectstore.DefaultCapacity() (30 % of RAM, capped to /dev/shm's
	// free space). The arena commits memory as objects use it.
	ObjectStoreMemory int64
	// SpillDir is where primary copies spill when the arena runs short;
	// default DataDir/spill.
	SpillDir string
	// SpillEngine is how spilled objects are kept: one file each (the
	// default) or in a badger database.
	SpillEngine objectstore.SpillEngine
	// PullStallTimeout is how long a pull waits for the next chunk from a
	// source before trying the next location; default 5s.
	PullStallTimeout time.Duration
	// MaxPullBytes bounds the bytes of pulls in flight; default
	// min(capacity/2, 1 GiB). A larger object still goes, alone.
	MaxPullBytes int64

	HeartbeatInterval time.Duration // default 500ms
	ViewInterval      time.Duration // cluster view refresh; default 100ms
	IdleWorkerTimeout time.Duration // default 10s
	// PrestartWorkers bounds the warm workers kept per job (started ahead
	// of need, so an actor's dedicated worker is usually ready at once);
	// default the node's CPUs, negative for none.
	PrestartWorkers int
	OwnerCheck      time.Duration // owner liveness check; default 1s
	// ActorCheck is how often actor workers are checked against the actor
	// table (strays of an interrupted placement are killed); default 5s.
	ActorCheck   time.Duration
	MaxSpillHops int // default 4
	// Labels are the node's labels (manta start --labels), registered
	// with it, that ray.NodeLabels selects on.
	Labels map[string]string

	// TLS, when set, makes the raylet's server and metrics port mutual TLS
	// with the cluster CA, and every connection it dials (heads, other
	// raylets, owners); its workers and job drivers get the same files
	// through the environment (tlsconfig.EnvCA...).
	TLS *tlsconfig.Source

	Logger *zap.Logger
	Knobs  TestingKnobs
}

// TestingKnobs inject faults through production seams (tests, chaos).
type TestingKnobs struct {
	// SkipHeartbeat, when it returns true, skips a heartbeat (a node the
	// control plane stops hearing from).
	SkipHeartbeat func() bool
	// ServeChunk, when set, runs before GetObject sends the chunk of id at
	// offset; its answer injects a fault into the stream.
	ServeChunk func(id ids.ObjectID, offset int64) ChunkFault
}
