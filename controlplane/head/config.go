package head

import (
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/internal/tlsconfig"
)

// Config configures one head. The zero value of every duration means its
// default; ID, DataDir and (for a multi-head cluster) Peers are required.
type Config struct {
	// ID is this head's Raft server ID; stable across restarts.
	ID string
	// DataDir holds the Raft log (raft.db), snapshots, the token and meta.
	DataDir string
	// GRPCAddr is where the API listens; "127.0.0.1:0" picks a port.
	GRPCAddr string
	// Listener, when set, is used instead of listening on GRPCAddr.
	Listener net.Listener
	// RaftAddr is where the Raft TCP transport listens. With port 0 a head
	// that restarts on its data dir reuses the address it had, because its
	// peers know it by that address.
	RaftAddr string
	// Peers are the gRPC addresses of the heads that form the cluster
	// (this head's own may be among them). Empty with Join empty means a
	// single-head cluster.
	Peers []string
	// BootstrapExpect is how many heads must be known before bootstrapping;
	// 0 means len(Peers) counting this head once.
	BootstrapExpect int
	// Join lists gRPC addresses of an existing cluster this head asks to be
	// added to instead of bootstrapping.
	Join []string
	// Token presets the cluster token; when empty the bootstrap leader
	// generates one. A head learns the token through the replicated store.
	Token string

	HeartbeatTimeout   time.Duration // Raft follower timeout; default 500ms
	ElectionTimeout    time.Duration // default 500ms
	LeaderLeaseTimeout time.Duration // default 250ms
	SnapshotThreshold  uint64        // log entries between snapshots; default 8192
	SnapshotInterval   time.Duration // how often to check; default 30s
	TrailingLogs       uint64        // entries kept after a snapshot; default 10240
	// RaftLogStore is the Raft log store: LogStoreBoltDB (default) or
	// LogStoreWAL. A data dir keeps the kind it was created with.
	RaftLogStore string

	// NodeTimeout is how long a node may miss heartbeats before it is
	// marked dead; default 5s. A new leader waits NodeGrace (default
	// NodeTimeout) before judging any node.
	NodeTimeout time.Duration
	NodeGrace   time.Duration

	MaxKVValueBytes int // default 1 MiB
	// MaxLineageBytes and MaxLineageRecords bound the lineage table; the
	// leader stamps them into every lineage write, so the leader's values
	// rule. Defaults: fsm.DefaultMaxLineageBytes (256 MiB) and
	// fsm.DefaultMaxLineageRecords.
	MaxLineageBytes   uint64
	MaxLineageRecords uint64
	MaxBatch          int // commands per Raft entry; default 512
	MaxInflight       int // Raft entries in flight; default 1 (more is slower on 2 shared cores: cpbench BenchmarkKVWritesInflight)
	// PipelineMinBatch is how many writes a Raft entry must carry to be
	// proposed while another is in flight (with MaxInflight > 1); default
	// 64.
	PipelineMinBatch int
	ApplyTimeout     time.Duration // bound on one write; default 10s
	// ForwardTimeout bounds a call a follower forwards to the leader, so a
	// leader that is paused or cut off does not hold it past an election;
	// default 4 × ElectionTimeout.
	ForwardTimeout time.Duration

	// MetricsAddr, when set, is where the head serves Prometheus
	// /metrics (behind the token); "host:0" picks a port. The address is
	// published in the heads table and the service-discovery file.
	MetricsAddr string

	// ServerOptions and DialOptions are the seam for TLS: they are added to
	// the gRPC server and to head-to-head connections.
	ServerOptions []grpc.ServerOption
	DialOptions   []grpc.DialOption

	// TLS, when set, makes every port of the head mutual TLS with the
	// cluster CA: Raft (head certificates only), gRPC, HTTP and metrics,
	// and the head's own connections to other heads, raylets and workers.
	TLS *tlsconfig.Source

	// MaxTaskEvents bounds the leader's task event buffer (soft state, not
	// in Raft), in task attempts; default taskevents.DefaultMaxTasks.
	MaxTaskEvents int

	// Autoscaler, when set, runs the autoscaler on the leader, launching
	// and removing nodes through ScaleProvider (both required together).
	Autoscaler    *autoscaler.Config
	ScaleProvider autoscaler.Provider

	Logger *zap.Logger
	Knobs  TestingKnobs
}

// TestingKnobs let tests and the chaos harness inject faults through the
// same seams production uses.
type TestingKnobs struct {
	// BeforeApply runs on the leader before each Raft entry is proposed.
	BeforeApply func(commands int)
	// AfterPrepare runs on the leader after it prepared a placement
	// group's bundles and before it records the placement (a test kills
	// the leader there).
	AfterPrepare func(placementGroupID string)
}

func (c *Config) setDefaults() error {
	if c.ID == "" {
		return errors.New("head: ID is required")
	}
	if c.DataDir == "" {
		return errors.New("head: DataDir is required")
	}
	if (c.Autoscaler == nil) != (c.ScaleProvider == nil) {
		return errors.New("head: Autoscaler and ScaleProvider are set together")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:0"
	}
	if c.RaftAddr == "" {
		c.RaftAddr = "127.0.0.1:0"
	}
	def(&c.HeartbeatTimeout, 500*time.Millisecond)
	def(&c.ElectionTimeout, 500*time.Millisecond)
	def(&c.LeaderLeaseTimeout, 250*time.Millisecond)
	def(&c.SnapshotInterval, 30*time.Second)
	def(&c.NodeTimeout, 5*time.Second)
	def(&c.NodeGrace, c.NodeTimeout)
	def(&c.ApplyTimeout, 10*time.Second)
	def(&c.ForwardTimeout, 4*c.ElectionTimeout)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.RaftLogStore == "" {
		c.RaftLogStore = LogStoreBoltDB
	}
	if c.RaftLogStore != LogStoreBoltDB && c.RaftLogStore != LogStoreWAL {
		return fmt.Errorf("%w: raft log store %q; want %q or %q", ErrBadConfig, c.RaftLogStore, LogStoreBoltDB, LogStoreWAL)
	}
	if c.MaxKVValueBytes == 0 {
		c.MaxKVValueBytes = 1 << 20
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 512
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 1
	}
	if c.PipelineMinBatch == 0 {
		c.PipelineMinBatch = 64
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}
