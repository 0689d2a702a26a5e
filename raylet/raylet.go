// Package raylet is the node agent: it registers its node with the control
// plane and heartbeats its free resources, grants worker leases to owners
// (or spills them back to a better node, or holds them as infeasible until
// a node that fits joins), runs the job's worker processes, and keeps the
// node's object store. The control plane is never on the per-task path:
// owners push tasks straight to leased workers.
package raylet

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/artifact"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/pkgstore"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	"github.com/manta-ray/manta/objectstore"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/jobsupervisor"
	"github.com/manta-ray/manta/raylet/logmonitor"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// MaxMessageBytes bounds one gRPC message on the task path (large objects).
const MaxMessageBytes = 1 << 30

// Raylet is one node agent.
type Raylet struct {
	pb.UnimplementedRayletServer

	cfg Config
	log *zap.Logger
	cp  *cpclient.Client
	// tokens admits the calls this raylet serves.
	tokens *auth.Checker
	lis    net.Listener
	srv    *grpc.Server
	pool   *workerpool.Pool
	store  objectstore.Store
	// shm is store when it is a shared arena (nil otherwise); ownStore says
	// Close must close it.
	shm        *objectstore.Shared
	ownStore   bool
	objs       objectTable
	pullBudget *byteBudget
	peers      peerConns
	arts       *artifact.Cache
	pkgs       *pkgstore.Cache
	jenv       jobEnvs
	jobs       *jobsupervisor.Supervisor
	logs       *logmonitor.Monitor
	tmp        string // DataDir to remove on Close, when we made it
	metrics    *rayletMetrics
	// Transfer counters (GetStatus): what pulls brought in, what
	// GetObject streams sent out.
	pulledObjects, pulledBytes, servedBytes atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	fatal  chan error // the first fatal error (node marked dead)

	mu       sync.Mutex
	total    resources.Set
	avail    resources.Set
	gpus     *gpuSlots   // GPU indices per lease, made at the first grant
	queue    []*leaseReq // waiting: for resources, or infeasible
	leases   map[string]*lease
	byWorker map[string]*lease
	view     map[string]*remoteNode // other alive nodes
	// bundles are the placement-group bundles reserved here (bundles.go);
	// groups is where the control plane says groups' bundles are, for
	// requests of a group whose bundles are elsewhere.
	bundles   map[bundleKey]*bundle
	groups    map[string]*groupView
	rr        int // the SPREAD strategy's round-robin position
	closed    bool
	kick      chan struct{} // wakes the scheduler
	closeOnce sync.Once
}

// New starts a raylet: it listens, registers the node and starts its loops.
func New(cfg Config) (*Raylet, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-" + auth.RandomHex(4)
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 500 * time.Millisecond
	}
	if cfg.ViewInterval == 0 {
		cfg.ViewInterval = 100 * time.Millisecond
	}
	if cfg.OwnerCheck == 0 {
		cfg.OwnerCheck = time.Second
	}
	if cfg.ActorCheck == 0 {
		cfg.ActorCheck = 5 * time.Second
	}
	if cfg.MaxSpillHops == 0 {
		cfg.MaxSpillHops = 4
	}
	res := resources.Set{}
	for k, v := range cfg.Resources {
		res[k] = v
	}
	if _, ok := res[resources.CPU]; !ok {
		res[resources.CPU] = float64(runtime.NumCPU())
	}
	if err := resources.Validate(res); err != nil {
		return nil, err
	}
	if cfg.PullStallTimeout == 0 {
		cfg.PullStallTimeout = 5 * time.Second
	}
	r := &Raylet{cfg: cfg, log: cfg.Logger.Named("raylet").With(zap.String("node", cfg.NodeID)),
		total: res, avail: res.Clone(), leases: map[string]*lease{},
		byWorker: map[string]*lease{}, view: map[string]*remoteNode{}, kick: make(chan struct{}, 1),
		bundles: map[bundleKey]*bundle{}, groups: map[string]*groupView{},
		fatal: make(chan error, 1), objs: newObjectTable(),
		peers: peerConns{token: cfg.Token, tls: cfg.TLS, conns: map[string]*grpc.ClientConn{}}}
	if cfg.DataDir == "" {
		d, err := os.MkdirTemp("", "manta-raylet-")
		if err != nil {
			return nil, err
		}
		r.cfg.DataDir, r.tmp = d, d
	}
	if err := r.openStore(); err != nil {
		r.removeTmp()
		return nil, err
	}
	cp, err := cpclient.New(cpclient.Config{Addresses: cfg.Heads, Token: cfg.Token, TLS: cfg.TLS, Logger: cfg.Logger})
	if err != nil {
		r.closeStore()
		r.removeTmp()
		return nil, err
	}
	r.cp = cp
	r.arts = &artifact.Cache{Dir: filepath.Join(r.cfg.DataDir, "artifacts"), CP: cp}
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		cp.Close()
		r.closeStore()
		r.removeTmp()
		return nil, fmt.Errorf("raylet: listen: %w", err)
	}
	r.lis = lis
	prestart := cfg.PrestartWorkers
	if prestart == 0 {
		prestart = max(1, int(res[resources.CPU]))
	}
	logDir := filepath.Join(r.cfg.DataDir, "logs")
	r.pool = workerpool.New(workerpool.Config{
		RayletAddress: lis.Addr().String(), Heads: cfg.Heads, NodeID: cfg.NodeID, Token: cfg.Token, TLSEnv: tlsEnv(cfg.TLS),
		LogDir: logDir, Output: cfg.WorkerOutput, LogMaxBytes: cfg.WorkerLogMaxBytes, LogBackups: cfg.WorkerLogBackups,
		IdleTimeout: cfg.IdleWorkerTimeout, Prestart: max(0, prestart), OnExit: r.onWorkerExit, KeepIdle: r.keepIdleWorker,
		Logger: r.log,
	})
	r.logs = r.newLogMonitor(logDir)
	// WaitForHandlers: Stop returns only once no handler runs, so none can
	// still be sending from the arena when Close unmaps it.
	r.metrics = newRayletMetrics(r)
	// The cluster token, and scoped tokens of drivers that the control
	// plane vouches for.
	r.tokens = &auth.Checker{Local: []string{cfg.Token}, Verify: func(ctx context.Context, token string) (auth.Scope, error) {
		rep, err := r.cp.CheckToken(ctx, token)
		if err != nil {
			return 0, err
		}
		return auth.ParseScope(rep.Scope)
	}}
	r.srv = grpc.NewServer(append(append(ServerOptions(), cfg.TLS.ServerOptions()...), grpc.WaitForHandlers(true),
		grpc.ChainUnaryInterceptor(r.metrics.grpc.UnaryServerInterceptor(), r.tokens.UnaryServer()),
		grpc.ChainStreamInterceptor(r.metrics.grpc.StreamServerInterceptor(), r.tokens.StreamServer()))...)
	pb.RegisterRayletServer(r.srv, r)
	r.startJobSupervisor()
	r.ctx, r.cancel = context.WithCancel(context.Background())

	if err := r.startMetrics(); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.register(r.ctx); err != nil {
		r.Close()
		return nil, err
	}
	r.goRun(func() { _ = r.srv.Serve(lis) })
	r.goRun(r.heartbeatLoop)
	r.goRun(r.viewLoop)
	r.goRun(r.scheduleLoop)
	r.goRun(r.jobLoop)
	r.goRun(r.ownerLoop)
	r.goRun(r.strayActorLoop)
	r.log.Info("raylet started", zap.String("address", r.Address()), zap.Any("resources", res))
	return r, nil
}

// openStore opens the default shared-memory store unless one was injected.
func (r *Raylet) openStore() error {
	if r.cfg.Store == nil {
		spillDir := r.cfg.SpillDir
		if spillDir == "" {
			spillDir = filepath.Join(r.cfg.DataDir, "spill")
		}
		s, err := objectstore.NewShared(objectstore.SharedOptions{Capacity: r.cfg.ObjectStoreMemory,
			SpillDir: spillDir, SpillEngine: r.cfg.SpillEngine, Logger: r.log})
		if err != nil {
			return fmt.Errorf("raylet: object store: %w", err)
		}
		r.cfg.Store, r.ownStore = s, true
	}
	r.store = r.cfg.Store
	r.shm, _ = r.store.(*objectstore.Shared)
	budget := r.cfg.MaxPullBytes
	if budget <= 0 {
		budget = 1 << 30
		if r.shm != nil {
			budget = min(budget, r.shm.Usage().Capacity/2)
		}
	}
	r.pullBudget = newByteBudget(budget)
	return nil
}

func (r *Raylet) closeStore() {
	if r.ownStore {
		if err := r.store.(objectstore.ZeroCopy).Close(); err != nil {
			r.log.Warn("close object store", zap.Error(err))
		}
	}
}

func (r *Raylet) removeTmp() {
	if r.tmp != "" {
		os.RemoveAll(r.tmp)
	}
}

// onWorkerExit is the pool's exit hook: the lease goes, and the worker's
// pins and unsealed objects with it.
func (r *Raylet) onWorkerExit(w *workerpool.Worker) {
	r.metrics.workerExits.Add(1)
	r.workerExited(w)
	r.clientGone(w.ID)
}

func (r *Raylet) goRun(fn func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn()
	}()
}

// Address is where the raylet serves.
func (r *Raylet) Address() string { return r.lis.Addr().String() }

// Store is the node's object store (an embedded driver reads and writes it
// in process).
func (r *Raylet) Store() objectstore.Store { return r.store }

// NodeID is the node's ID.
func (r *Raylet) NodeID() string { return r.cfg.NodeID }

// Fatal delivers the error that ended the raylet on its own (its node was
// marked dead); the process should exit.
func (r *Raylet) Fatal() <-chan error { return r.fatal }

// Close unregisters the node, kills the workers and stops. Idempotent.
func (r *Raylet) Close() error {
	r.closeOnce.Do(func() {
		r.closeMetrics()
		r.mu.Lock()
		r.closed = true
		r.objs.mu.Lock()
		r.objs.closed = true // no new pulls or notifications
		r.objs.mu.Unlock()
		for _, q := range r.queue {
			q.finish(leaseResult{err: ErrClosed})
		}
		r.queue = nil
		r.mu.Unlock()
		if r.ctx != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := r.cp.UnregisterNode(ctx, r.cfg.NodeID, "raylet stopped"); err != nil {
				r.log.Debug("unregister", zap.Error(err))
			}
			cancel()
			r.cancel()
		}
		if r.srv != nil {
			r.srv.Stop()
		}
		if r.pool != nil {
			r.pool.Close()
		}
		if r.jobs != nil {
			r.jobs.Close()
		}
		r.wg.Wait()
		r.cp.Close()
		r.peers.close()
		r.closeObjects()
		r.closeStore()
		r.removeTmp()
	})
	return nil
}

func (r *Raylet) fail(err error) {
	select {
	case r.fatal <- err:
	default:
	}
}

// ---- RPCs besides leases ----------------------------------------------------

func (r *Raylet) RegisterWorker(_ context.Context, req *pb.RegisterWorkerRequest) (*pb.RegisterWorkerReply, error) {
	if err := r.pool.Register(req.WorkerId, req.Address, int(req.Pid)); err != nil {
		return nil, err
	}
	return &pb.RegisterWorkerReply{NodeId: r.cfg.NodeID}, nil
}

func (r *Raylet) GetStatus(context.Context, *pb.GetStatusRequest) (*pb.GetStatusReply, error) {
	objs, bytes := r.store.Stats()
	var u objectstore.Usage
	if r.shm != nil {
		u = r.shm.Usage()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &pb.GetStatusReply{NodeId: r.cfg.NodeID, Total: r.total.Clone(), Available: r.avail.Clone(),
		Workers: int32(r.pool.Len()), LeasedWorkers: int32(len(r.leases)), QueuedLeases: int32(len(r.queue)),
		Objects: objs, ObjectBytes: bytes, ObjectStoreCapacity: u.Capacity, ObjectStoreAllocated: u.Allocated,
		SpilledBytes: u.SpilledBytes, PulledObjects: r.pulledObjects.Load(), PulledBytes: r.pulledBytes.Load(),
		ServedBytes: r.servedBytes.Load()}
	now := time.Now()
	for _, q := range r.queue {
		if q.infeasible {
			st.Infeasible = append(st.Infeasible, q.res.Key())
		}
		st.Waiting = append(st.Waiting, &pb.LeaseStatus{OwnerAddress: q.req.OwnerAddress, JobId: q.req.JobId,
			Shape: q.res.Key(), ActorId: q.req.ActorId, AgeMs: now.Sub(q.arrived).Milliseconds(),
			Backlog: q.req.Backlog, Infeasible: q.infeasible})
	}
	for _, l := range r.leases {
		st.Leases = append(st.Leases, &pb.LeaseStatus{OwnerAddress: l.owner, JobId: l.jobID, Shape: l.res.Key(),
			WorkerId: l.worker.ID, WorkerPid: int32(l.worker.PID), ActorId: l.actorID, Blocked: l.blocked,
			AgeMs: now.Sub(l.granted).Milliseconds(), Backlog: l.backlog})
	}
	sort.Slice(st.Leases, func(i, j int) bool { return st.Leases[i].AgeMs > st.Leases[j].AgeMs })
	// Every row of an owner's shape shows the backlog its latest request
	// reported (the youngest row's), not a stale one.
	type ownerShape struct{ owner, shape string }
	latest := map[ownerShape]*pb.LeaseStatus{}
	for _, rows := range [][]*pb.LeaseStatus{st.Leases, st.Waiting} {
		for _, x := range rows {
			k := ownerShape{x.OwnerAddress, x.Shape}
			if y := latest[k]; y == nil || x.AgeMs < y.AgeMs {
				latest[k] = x
			}
		}
	}
	for _, rows := range [][]*pb.LeaseStatus{st.Leases, st.Waiting} {
		for _, x := range rows {
			x.Backlog = latest[ownerShape{x.OwnerAddress, x.Shape}].Backlog
		}
	}
	return st, nil
}

// Flow-control windows large enough for objects of many MiB per round trip.
const (
	windowBytes     = 16 << 20
	connWindowBytes = 64 << 20
)

// ServerOptions are the gRPC options of servers on the task path.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.InitialWindowSize(windowBytes), grpc.InitialConnWindowSize(connWindowBytes)}
}

// DialOptions are the gRPC options of clients on the task path.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(windowBytes), grpc.WithInitialConnWindowSize(connWindowBytes),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))}
}

// tlsEnv is the environment that hands src's files to a child process.
func tlsEnv(src *tlsconfig.Source) []string {
	if src == nil {
		return nil
	}
	return src.Files().Env()
}

// Status asks the raylet at addr for its status (`manta status`). opts
// come last, so a TLS dial option replaces the plaintext default.
func Status(ctx context.Context, addr, token string, opts ...grpc.DialOption) (*pb.GetStatusReply, error) {
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token }))}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	st, err := pb.NewRayletClient(cc).GetStatus(ctx, &pb.GetStatusRequest{})
	return st, rpcerr.FromStatus(err)
}

// OwnerStatus asks the owner (a driver or worker) at addr what its tasks
// wait for.
func OwnerStatus(ctx context.Context, addr, token string, opts ...grpc.DialOption) (*pb.OwnerStatusReply, error) {
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token }))}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	st, err := pb.NewCoreWorkerClient(cc).GetOwnerStatus(ctx, &pb.OwnerStatusRequest{})
	return st, rpcerr.FromStatus(err)
}
