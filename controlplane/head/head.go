// Package head is one control-plane head: a Raft voter with the control
// store (controlplane/fsm), the gRPC API every head serves, forwarding of
// writes to the leader, group commit, and the leader-only routines.
package head

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"go.uber.org/zap/zapio"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/controlplane/taskevents"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Head is a running head. Close stops everything it started.
type Head struct {
	cfg Config
	log *zap.Logger

	leaderCheck *leaderCheck

	fsm   *fsm.FSM
	raft  *raft.Raft
	store logStore
	trans *raft.NetworkTransport
	lis   net.Listener
	srv   *grpc.Server
	raftW *zapio.Writer

	hadState     bool // the data dir held Raft state at start
	leaderNotify <-chan bool

	applier  *applier
	liveness *liveness
	actors   *actorPlacer
	// placement places placement groups (placement.go).
	placement *groupPlacer
	// scaler is the autoscaler (autoscaler.go), nil without a config.
	scaler *autoscaler.Autoscaler
	jobs   *jobSupervision
	// serve is the Serve controller (serve.go).
	serve   *serveController
	peers   *peerBook
	leader  *leaderLoop
	metrics *headMetrics
	tasks   *taskevents.Buffer
	// authLimit counts failed authentications per source.
	authLimit auth.FailureLimiter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New opens the data dir, starts Raft and the gRPC server, and returns at
// once; the head bootstraps or joins in the background.
func New(cfg Config) (*Head, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger.Named("head").With(zap.String("head", cfg.ID))
	m, err := openDataDir(cfg.DataDir, cfg.ID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Head{cfg: cfg, log: log, fsm: fsm.New(log), ctx: ctx, cancel: cancel}
	started := false
	defer func() {
		if !started {
			h.Close() // stops whatever was started before the failure
		}
	}()
	h.peers = newPeerBook(h)
	h.metrics = newHeadMetrics(h)

	if cfg.Listener != nil {
		h.lis = cfg.Listener
	} else if h.lis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.GRPCAddr, err)
	}
	if _, port, _ := net.SplitHostPort(h.cfg.RaftAddr); port == "0" && m.RaftAddress != "" {
		h.cfg.RaftAddr = m.RaftAddress
	}
	if err := h.startRaft(); err != nil {
		return nil, err
	}
	if m.RaftAddress != h.RaftAddress() {
		m.RaftAddress = h.RaftAddress()
		if err := writeMeta(cfg.DataDir, m); err != nil {
			return nil, err
		}
	}
	if err := h.checkMembership(m); err != nil {
		return nil, err
	}
	if h.hadState {
		if err := h.checkPeersCluster(m); err != nil {
			return nil, err
		}
	}

	h.applier = newApplier(h)
	h.leaderCheck = &leaderCheck{h: h}
	h.liveness = newLiveness(h)
	h.actors = newActorPlacer(h)
	h.placement = newGroupPlacer(h)
	h.jobs = newJobSupervision(h)
	h.serve = newServeController(h)
	if cfg.Autoscaler != nil {
		h.scaler = autoscaler.New(autoscaler.Options{Config: cfg.Autoscaler, Provider: cfg.ScaleProvider,
			Cluster: scalerCluster{h}, Logger: h.log})
	}
	h.leader = newLeaderLoop(h)
	h.tasks = taskevents.New(taskevents.Config{MaxTasks: cfg.MaxTaskEvents})

	opts := append([]grpc.ServerOption{
		// Metrics first, so refused calls count too.
		grpc.ChainUnaryInterceptor(h.metrics.grpc.UnaryServerInterceptor(), h.unaryAuth),
		grpc.ChainStreamInterceptor(h.metrics.grpc.StreamServerInterceptor(), h.streamAuth),
		grpc.MaxRecvMsgSize(16 << 20),
	}, append(cfg.TLS.ServerOptions(), cfg.ServerOptions...)...)
	h.srv = grpc.NewServer(opts...)
	pb.RegisterControlPlaneServer(h.srv, &api{h: h})
	pb.RegisterHeadServiceServer(h.srv, &headAPI{h: h})
	pb.RegisterAutoscalerServiceServer(h.srv, &scalerAPI{h: h})
	pb.RegisterServeServiceServer(h.srv, &serveAPI{h: h})

	if err := h.startMetrics(); err != nil {
		return nil, err
	}

	h.goRun("metrics-leaders", h.watchLeaders())
	h.goRun("grpc", func() {
		if err := h.srv.Serve(h.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			h.log.Error("grpc server stopped", zap.Error(err))
		}
	})
	h.goRun("leader-loop", h.leader.run)
	h.goRun("cluster-watch", h.watchCluster)
	h.goRun("bootstrap", h.bootstrapOrJoin)
	h.goRun("register-self", h.registerSelf)
	h.goRun("metrics-sd", h.writeSD)
	started = true
	log.Info("head started", zap.String("grpc", h.Address()), zap.String("raft", string(h.trans.LocalAddr())),
		zap.String("data_dir", cfg.DataDir))
	return h, nil
}

// goRun starts a goroutine owned by the head: Close waits for it.
func (h *Head) goRun(name string, fn func()) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				h.log.Error("routine panicked", zap.String("routine", name), zap.Any("panic", r), zap.Stack("stack"))
			}
		}()
		fn()
	}()
}

func (h *Head) startRaft() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(h.cfg.ID)
	rc.HeartbeatTimeout = h.cfg.HeartbeatTimeout
	rc.ElectionTimeout = h.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = h.cfg.LeaderLeaseTimeout
	rc.SnapshotThreshold = h.cfg.SnapshotThreshold
	rc.SnapshotInterval = h.cfg.SnapshotInterval
	rc.TrailingLogs = h.cfg.TrailingLogs
	// Entries proposed while others are in flight (MaxInflight > 1, and
	// the leader routines' own writes) go to disk and followers together.
	rc.BatchApplyCh = true
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	h.leaderNotify = notify
	h.raftW = &zapio.Writer{Log: h.cfg.Logger.Named("raft").With(zap.String("head", h.cfg.ID)), Level: zap.InfoLevel}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: h.raftW, DisableTime: true})
	rc.Logger = hl

	var err error
	h.store, err = openLogStore(h.cfg.DataDir, h.cfg.RaftLogStore, hl.Named("log"))
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(h.cfg.DataDir, 2, hl.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	h.hadState, err = raft.HasExistingState(h.store, h.store, snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	h.trans, err = h.newRaftTransport(hl.Named("transport"))
	if err != nil {
		return fmt.Errorf("raft transport on %s: %w", h.cfg.RaftAddr, err)
	}
	h.raft, err = raft.NewRaft(rc, h.fsm, h.store, h.store, h.metrics.wrapSnapshots(snaps), h.trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	return nil
}

// checkMembership refuses a data dir whose Raft state says this head is not
// a member (it was removed, or the dir is another cluster's).
func (h *Head) checkMembership(m meta) error {
	f := h.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return nil
	}
	for _, s := range servers {
		if s.ID == raft.ServerID(h.cfg.ID) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s holds the Raft state of cluster %q, whose members are %v; head %q is not one of them (removed?); start with an empty --data-dir to join again",
		ErrWrongCluster, h.cfg.DataDir, m.ClusterID, serverIDs(servers), h.cfg.ID)
}

func serverIDs(s []raft.Server) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v.ID)
	}
	return out
}

// watchCluster writes the cluster identity and token into the data dir once
// the replicated store has them, so the CLI and raylets can read the token.
func (h *Head) watchCluster() {
	written := ""
	for {
		ch, _ := h.fsm.Changed()
		if ci := h.fsm.Cluster(); ci != nil && ci.ClusterId != written {
			m, _, err := readMeta(h.cfg.DataDir)
			if err == nil && m.ClusterID != "" && m.ClusterID != ci.ClusterId {
				h.log.Error("data dir belongs to another cluster", zap.String("dir_cluster", m.ClusterID), zap.String("cluster", ci.ClusterId))
			}
			err = writeFileAtomic(filepath.Join(h.cfg.DataDir, TokenFile), []byte(ci.Token+"\n"), 0o600)
			if err == nil {
				err = writeMeta(h.cfg.DataDir, meta{HeadID: h.cfg.ID, ClusterID: ci.ClusterId, RaftAddress: h.RaftAddress()})
			}
			if err != nil {
				h.log.Error("write cluster identity", zap.Error(err))
			} else {
				written = ci.ClusterId
			}
		}
		select {
		case <-ch:
		case <-h.ctx.Done():
			return
		}
	}
}

// ID is this head's ID.
func (h *Head) ID() string { return h.cfg.ID }

// Address is the gRPC address the head serves on.
func (h *Head) Address() string { return h.lis.Addr().String() }

// RaftAddress is the Raft transport's address.
func (h *Head) RaftAddress() string { return string(h.trans.LocalAddr()) }

// FSM exposes the local control store (reads are stale on a follower).
func (h *Head) FSM() *fsm.FSM { return h.fsm }

// Raft exposes the Raft node, for tests and operator tooling.
func (h *Head) Raft() *raft.Raft { return h.raft }

// IsLeader says whether this head is the Raft leader now.
func (h *Head) IsLeader() bool { return h.raft.State() == raft.Leader }

// Token returns the cluster token this head knows, or "".
func (h *Head) Token() string {
	if ci := h.fsm.Cluster(); ci != nil {
		return ci.Token
	}
	return h.cfg.Token
}

// Close stops the head: leader routines, gRPC, Raft, stores. Idempotent.
func (h *Head) Close() error {
	h.closeOnce.Do(func() {
		h.cancel()
		if h.srv != nil {
			h.srv.Stop()
		}
		if h.raft != nil {
			if err := h.raft.Shutdown().Error(); err != nil {
				h.closeErr = err
			}
		}
		h.wg.Wait()
		if h.metrics != nil && h.metrics.srv != nil {
			h.metrics.srv.Close()
		}
		if h.peers != nil {
			h.peers.close()
		}
		if h.jobs != nil {
			h.jobs.close()
		}
		if h.trans != nil {
			h.trans.Close()
		}
		if h.store != nil {
			if err := h.store.Close(); err != nil && h.closeErr == nil {
				h.closeErr = err
			}
		}
		if h.lis != nil {
			h.lis.Close()
		}
		if h.raftW != nil {
			h.raftW.Close()
		}
		h.log.Info("head stopped")
	})
	return h.closeErr
}
