package head

import (
	"io"
	"path/filepath"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/metrics"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// headMetrics are one head's Prometheus series (README, "Metrics"): Raft
// and its applier, the control-plane RPCs (grpc-ecosystem's middleware),
// and a summary of the replicated store read at scrape time.
type headMetrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	applySeconds  prometheus.Histogram
	applyCommands prometheus.Histogram
	leaderChanges prometheus.Counter
	snapshots     prometheus.Counter
	snapshotBytes prometheus.Gauge
	authFailures  *prometheus.CounterVec

	srv *metrics.Server // the dedicated /metrics port, when configured
}

func newHeadMetrics(h *Head) *headMetrics {
	reg := metrics.NewRegistry()
	ns := metrics.Namespace
	m := &headMetrics{
		reg:  reg,
		grpc: metrics.NewGRPCServerMetrics(reg),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "raft",
			Name: "apply_duration_seconds", Buckets: metrics.LatencyBuckets,
			Help: "Time from proposing a Raft entry on the leader (one group-committed batch of writes) to its result from the FSM."}),
		applyCommands: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "raft",
			Name: "apply_batch_commands", Buckets: prometheus.ExponentialBuckets(1, 2, 10),
			Help: "Writes carried by one Raft entry of the leader's group commit."}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "raft",
			Name: "leader_changes_total", Help: "Times this head saw a new Raft leader (itself included)."}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "raft",
			Name: "snapshots_total", Help: "Raft snapshots this head persisted."}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "raft",
			Name: "last_snapshot_size_bytes", Help: "Size of the newest Raft snapshot this head holds."}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "auth",
			Name: "failures_total", Help: "Calls refused for their token: bad_token (missing, wrong, revoked or expired), scope (valid but too small), rate_limited (from a source that failed too often)."},
			[]string{"reason"}),
	}
	reg.MustRegister(m.authFailures, m.applySeconds, m.applyCommands, m.leaderChanges, m.snapshots, m.snapshotBytes,
		&stateCollector{h: h})
	return m
}

// observeApply records one Raft entry's round trip.
func (m *headMetrics) observeApply(start time.Time, commands int) {
	m.applySeconds.Observe(time.Since(start).Seconds())
	m.applyCommands.Observe(float64(commands))
}

// Registry is the head's metrics registry, for serving elsewhere (the
// dashboard port mounts it) or for tests.
func (h *Head) Registry() *prometheus.Registry { return h.metrics.reg }

// MetricsAddress is where the head's dedicated /metrics server listens,
// or "" without one.
func (h *Head) MetricsAddress() string {
	if h.metrics.srv == nil {
		return ""
	}
	return h.metrics.srv.Address()
}

// selfInfo is this head's entry in the heads table.
func (h *Head) selfInfo() *pb.HeadInfo {
	return &pb.HeadInfo{Id: h.cfg.ID, GrpcAddress: h.Address(), RaftAddress: h.RaftAddress(), MetricsAddress: h.MetricsAddress()}
}

// startMetrics serves /metrics on Config.MetricsAddr when set.
func (h *Head) startMetrics() error {
	if h.cfg.MetricsAddr == "" {
		return nil
	}
	srv, err := metrics.ListenTLS(h.cfg.MetricsAddr, h.metrics.reg, h.Token, h.log, h.cfg.TLS, func(tok string) bool {
		s, err := h.ScopeOf(tok)
		return err == nil && s.Allows(auth.ScopeRead)
	})
	if err != nil {
		return err
	}
	h.metrics.srv = srv
	return nil
}

// watchLeaders counts leader changes through a Raft observer, registered
// before the head bootstraps or joins so the first election is seen.
func (h *Head) watchLeaders() func() {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	h.raft.RegisterObserver(obs)
	return func() {
		defer h.raft.DeregisterObserver(obs)
		var last raft.ServerID
		for {
			select {
			case o := <-ch:
				if lo := o.Data.(raft.LeaderObservation); lo.LeaderID != "" && lo.LeaderID != last {
					last = lo.LeaderID
					h.metrics.leaderChanges.Inc()
				}
			case <-h.ctx.Done():
				return
			}
		}
	}
}

// sdInterval spaces rewrites of the service-discovery file: the store
// changes on every write, the targets only when heads or nodes come and go.
const sdInterval = 250 * time.Millisecond

// writeSD keeps DATA_DIR/prom_metrics_service_discovery.json listing the
// metrics address of every head and alive node. Every head writes it from
// its own replica, so Prometheus may read it on any of them.
func (h *Head) writeSD() {
	path := filepath.Join(h.cfg.DataDir, metrics.SDFileName)
	var written []byte
	for {
		ch, _ := h.fsm.Changed()
		ts := metrics.Targets(h.fsm.Heads(), h.fsm.Nodes())
		if b := metrics.EncodeSD(ts); string(b) != string(written) {
			if err := metrics.WriteSD(path, ts); err != nil {
				h.log.Warn("write metrics service discovery file", zap.String("path", path), zap.Error(err))
			} else {
				written = b
			}
		}
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(sdInterval):
		}
		select {
		case <-ch:
		case <-h.ctx.Done():
			return
		}
	}
}

// snapshotStore counts the snapshots Raft persists and their size.
type snapshotStore struct {
	raft.SnapshotStore
	m *headMetrics
}

func (m *headMetrics) wrapSnapshots(s raft.SnapshotStore) raft.SnapshotStore {
	if metas, err := s.List(); err == nil && len(metas) > 0 {
		m.snapshotBytes.Set(float64(metas[0].Size)) // newest first
	}
	return &snapshotStore{SnapshotStore: s, m: m}
}

func (s *snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &countingSink{SnapshotSink: sink, m: s.m}, nil
}

type countingSink struct {
	raft.SnapshotSink
	m      *headMetrics
	n      atomic.Int64
	closed atomic.Bool // the FSM's Persist and Raft both close the sink
}

func (c *countingSink) Write(p []byte) (int, error) {
	n, err := c.SnapshotSink.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingSink) Close() error {
	if err := c.SnapshotSink.Close(); err != nil {
		return err
	}
	if !c.closed.Swap(true) {
		c.m.snapshots.Inc()
		c.m.snapshotBytes.Set(float64(c.n.Load()))
	}
	return nil
}

var _ io.Writer = (*countingSink)(nil)

// stateCollector reads Raft's and the store's state at scrape time, so
// nothing on the write path keeps gauges up to date.
type stateCollector struct{ h *Head }

var (
	descRaftState = prometheus.NewDesc("manta_raft_state", "1 for the Raft state this head is in, 0 for the others.", []string{"state"}, nil)
	descTerm      = prometheus.NewDesc("manta_raft_term", "Current Raft term.", nil, nil)
	descCommit    = prometheus.NewDesc("manta_raft_commit_index", "Highest Raft log index known committed.", nil, nil)
	descApplied   = prometheus.NewDesc("manta_raft_applied_index", "Highest Raft log index applied to the FSM.", nil, nil)
	descLastIndex = prometheus.NewDesc("manta_raft_last_log_index", "Highest Raft log index stored on this head.", nil, nil)
	descContact   = prometheus.NewDesc("manta_raft_last_contact_seconds", "Seconds since a follower last heard from the leader; 0 on the leader.", nil, nil)
	descVoters    = prometheus.NewDesc("manta_raft_voters", "Voters in the Raft configuration.", nil, nil)
	descEntries   = prometheus.NewDesc("manta_fsm_entries", "Entries in the replicated store, by table.", []string{"table"}, nil)
	descNodes     = prometheus.NewDesc("manta_nodes", "Registered nodes by state.", []string{"state"}, nil)
	descActors    = prometheus.NewDesc("manta_actors", "Actors by state.", []string{"state"}, nil)
	descJobs      = prometheus.NewDesc("manta_jobs", "Jobs by state.", []string{"state"}, nil)
	descLinRecs   = prometheus.NewDesc("manta_lineage_records", "Task records in the lineage table.", nil, nil)
	descLinBytes  = prometheus.NewDesc("manta_lineage_bytes", "Bytes of task specs in the lineage table.", nil, nil)
	descLinEvict  = prometheus.NewDesc("manta_lineage_evictions_total", "Lineage records dropped by the table's bound since the cluster began.", nil, nil)
	// Task events are the leader's soft state: only the leader reports them.
	descTasks     = prometheus.NewDesc("manta_tasks", "Task attempts in the leader's task-event buffer, by state (reported by the leader only).", []string{"state"}, nil)
	descTasksLost = prometheus.NewDesc("manta_task_events_lost", "Task attempts this leadership's buffer lacks: evicted by its bound or dropped by reporters (reported by the leader only).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descTerm, descCommit, descApplied, descLastIndex, descContact,
		descVoters, descEntries, descNodes, descActors, descJobs, descLinRecs, descLinBytes, descLinEvict, descTasks, descTasksLost} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if r := c.h.raft; r != nil {
		st := r.State()
		for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
			v := 0.0
			if s == st {
				v = 1
			}
			gauge(descRaftState, v, s.String())
		}
		gauge(descTerm, float64(r.CurrentTerm()))
		gauge(descCommit, float64(r.CommitIndex()))
		gauge(descApplied, float64(r.AppliedIndex()))
		gauge(descLastIndex, float64(r.LastIndex()))
		if st == raft.Leader {
			gauge(descContact, 0)
		} else if t := r.LastContact(); !t.IsZero() {
			gauge(descContact, time.Since(t).Seconds())
		}
		if f := r.GetConfiguration(); f.Error() == nil {
			n := 0
			for _, s := range f.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					n++
				}
			}
			gauge(descVoters, float64(n))
		}
	}
	counts := c.h.fsm.Counts()
	for t, n := range counts.Entries {
		gauge(descEntries, float64(n), t)
	}
	for s, n := range counts.NodesByState {
		gauge(descNodes, float64(n), s)
	}
	for s, n := range counts.ActorsByState {
		gauge(descActors, float64(n), s)
	}
	for s, n := range counts.JobsByState {
		gauge(descJobs, float64(n), s)
	}
	ls := c.h.fsm.LineageStats()
	gauge(descLinRecs, float64(ls.Records))
	gauge(descLinBytes, float64(ls.Bytes))
	ch <- prometheus.MustNewConstMetric(descLinEvict, prometheus.CounterValue, float64(ls.Evictions))
	if tc := c.h.tasks.Counts(); tc.Epoch != "" {
		for _, s := range []pb.TaskEventState{pb.TaskEventState_PENDING_ARGS_AVAIL, pb.TaskEventState_PENDING_NODE_ASSIGNMENT,
			pb.TaskEventState_SUBMITTED_TO_WORKER, pb.TaskEventState_RUNNING, pb.TaskEventState_FINISHED,
			pb.TaskEventState_FAILED, pb.TaskEventState_CANCELED} {
			gauge(descTasks, float64(tc.ByState[s]), s.String())
		}
		gauge(descTasksLost, float64(tc.Lost))
	}
}
