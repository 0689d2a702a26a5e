package core

// The Worker is the runtime of one driver or worker process (Ray's
// CoreWorker). It owns nothing itself but the wiring: its parts each own
// their state under their own lock (the object table in memstore, the
// task manager in tasks.go, recovery in recovery.go, the submitters, the
// object client) and it serves the CoreWorker gRPC service over them.
// This file makes a Worker, its connections and its shutdown.

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/sdk/internal/actorsubmit"
	"github.com/manta-ray/manta/sdk/internal/memstore"
	"github.com/manta-ray/manta/sdk/internal/objclient"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// Worker is the runtime of a driver or worker process: it owns the objects
// its tasks return and Put, submits tasks through worker leases, serves its
// owned objects to borrowers and, in a worker, runs the tasks pushed to it.
type Worker struct {
	pb.UnimplementedCoreWorkerServer

	log        *zap.Logger
	jobID      string
	binarySHA  string
	token      string
	workerID   string // "" in a driver
	rayletAddr string
	raylet     pb.RayletClient

	// The client of the local raylet's object store (objects.go).
	objs *objclient.Client

	lis     net.Listener
	srv     *grpc.Server
	address string

	root *taskCtx // the driver's (or worker's) own task

	// A worker's GOMAXPROCS follows its task's CPUs unless GOMAXPROCS is
	// set in its environment (touched only by the executing goroutine).
	fixedProcs bool
	procs      int

	// The object table: values, futures and counts of owned objects
	// (sdk/internal/memstore), with its own lock.
	mem *memstore.Store
	// The task manager (tasks.go) and recovery (recovery.go), each with
	// its own lock.
	tasks *taskManager
	lin   *recovery
	// The task submitter, made on first use.
	sub     *submitter.Submitter
	subOnce sync.Once
	// Task events for the State API (events.go).
	ev eventLog
	// Tasks waiting for their reference arguments (manta status).
	resolving atomic.Int64
	// Local working dirs of runtime envs uploaded so far.
	envs envUploads
	// The runtime context (context.go): the driver's node, found once;
	// whether this worker ever set CUDA_VISIBLE_DEVICES.
	nodeOnce sync.Mutex
	nodeID   string
	cudaSet  atomic.Bool
	// Open generator streams this process consumes (generator.go).
	gens genTable
	// The objects this process borrows (borrowers.go).
	borrows *borrowTable
	// Replicated and durable Puts (replicas.go).
	reps replicaTable

	// mu guards the connection cache and the actor state below.
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn

	// Actors: the control plane (the driver's client, or one the worker
	// made: ownCP), the actor view, the senders to actors this process
	// calls, and the actor this worker hosts.
	cp       *cpclient.Client
	ownCP    bool
	actorSub *actorsubmit.Submitter
	hosted   *hostedActor
	tls      *tlsconfig.Source // nil: TLS off

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// taskCtx is the task a process runs now: the parent of what it submits.
type taskCtx struct {
	id      ids.TaskID
	counter atomic.Uint64
	puts    atomic.Uint32
	worker  bool     // a task in a worker process (Get blocks: lend the CPU)
	info    *runInfo // a pushed task's attempt, actor and grant (context.go)
	// caller is the task's owner when its result reports the borrows of
	// its arguments (normal tasks and actor calls; borrowers.go), and via
	// the objects of the caller's it decoded from them.
	caller string
	viaMu  sync.Mutex
	via    []ids.ObjectID
}

type taskKey struct{}

func (c *Worker) taskOf(ctx context.Context) *taskCtx {
	if t, ok := ctx.Value(taskKey{}).(*taskCtx); ok {
		return t
	}
	return c.root
}

// newWorker makes the runtime of a process whose raylet is rayletAddr and
// starts its server on host; the job is set later (setJob) in a driver.
func newWorker(log *zap.Logger, jobID, token, rayletAddr, host string) (*Worker, error) {
	c := &Worker{log: log, jobID: jobID, token: token, rayletAddr: rayletAddr,
		conns: map[string]*grpc.ClientConn{},
	}
	tls, err := processTLS()
	if err != nil {
		return nil, fmt.Errorf("ray: %w", err)
	}
	c.tls = tls
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mem = memstore.New(memstore.Config{OnReleased: func(id ids.ObjectID) { c.lin.released(id); c.replicasReleased(id) },
		OnContainedFreed: c.containedFreed})
	c.borrows = newBorrowTable(c)
	c.tasks = &taskManager{objs: c.mem, queue: c.taskQueue, ev: &c.ev, unborrow: c.unborrow, resultBorrows: c.takeResultBorrows,
		replicate: c.replicateReturns}
	c.lin = &recovery{objs: c.mem, log: c.log, ctx: c.ctx, jobID: jobID, open: c.openRecorder,
		spawn: c.spawn, resolve: c.resolveAndEnqueue, fail: c.tasks.fail}
	c.tasks.lin = c.lin
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("ray: listen: %w", err)
	}
	c.lis, c.address = lis, lis.Addr().String()
	c.lin.owner = c.address
	// This process's token, and any other the control plane vouches for
	// (a driver may hold only a submit token; its workers call it back
	// with the cluster token, and it pushes to them with its own). The
	// push stream is checked too: it runs code.
	checker := &auth.Checker{Local: []string{token}, Verify: func(ctx context.Context, tok string) (auth.Scope, error) {
		cp, err := c.controlPlane()
		if err != nil {
			return 0, err
		}
		rep, err := cp.CheckToken(ctx, tok)
		if err != nil {
			return 0, err
		}
		return auth.ParseScope(rep.Scope)
	}}
	c.srv = grpc.NewServer(append(append(raylet.ServerOptions(), tls.ServerOptions()...),
		grpc.UnaryInterceptor(checker.UnaryServer()), grpc.StreamInterceptor(checker.StreamServer()))...)
	pb.RegisterCoreWorkerServer(c.srv, c)
	cc, err := c.conn(rayletAddr)
	if err != nil {
		lis.Close()
		return nil, err
	}
	c.raylet = pb.NewRayletClient(cc)
	c.objs = c.newObjectClient()
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		_ = c.srv.Serve(lis)
	}()
	go c.freeLoop()
	go c.borrowerLoop()
	return c, nil
}

// setJob sets a driver's job once the control plane registered it.
func (c *Worker) setJob(jobID, binarySHA string) {
	c.jobID, c.binarySHA = jobID, binarySHA
	c.lin.jobID = jobID
}

// Job is the process's job and the digest of the binary stored for it
// (sdk/serve names them in the applications it deploys).
func (c *Worker) Job() (jobID, binarySHA string) { return c.jobID, c.binarySHA }

// Logger is the process's logger.
func (c *Worker) Logger() *zap.Logger { return c.log }

// spawn runs fn in a goroutine the Worker waits for when it closes.
func (c *Worker) spawn(fn func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
}

// Address is this process's CoreWorker address: the owner address of the
// objects it owns.
func (c *Worker) Address() string { return c.address }

// conn returns a cached connection to a raylet or core worker.
func (c *Worker) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, append(raylet.DialOptions(), c.tls.DialOption(),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return c.token })))...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// workerConns gives the submitters this process's cached connections.
type workerConns struct{ c *Worker }

func (wc workerConns) Raylet(addr string) (pb.RayletClient, error) {
	conn, err := wc.c.conn(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewRayletClient(conn), nil
}

func (wc workerConns) Worker(addr string) (pb.CoreWorkerClient, error) {
	conn, err := wc.c.conn(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewCoreWorkerClient(conn), nil
}

func (c *Worker) close() {
	c.cancel()
	c.subOnce.Do(func() {}) // none may be made from now on
	if c.sub != nil {
		c.sub.Close()
	}
	c.mu.Lock()
	as := c.actorSub
	c.mu.Unlock()
	if as != nil {
		as.Close()
	}
	c.srv.Stop()
	c.wg.Wait()
	// The last events (the job's final states) go out before the control
	// plane's client closes.
	if r := c.ev.r.Swap(nil); r != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = r.Close(ctx)
		cancel()
	}
	c.lin.close()
	c.objs.Close()
	c.mu.Lock()
	for _, cc := range c.conns {
		cc.Close()
	}
	c.conns = map[string]*grpc.ClientConn{}
	if c.ownCP {
		c.cp.Close()
	}
	c.mu.Unlock()
}

// Ping answers raylets checking that an owner is alive (and whether it
// may be retired: not while others borrow its objects) and owners
// checking that a borrower is.
func (c *Worker) Ping(context.Context, *pb.PingRequest) (*pb.PingReply, error) {
	return &pb.PingReply{BorrowedObjects: int32(c.mem.Borrowed(c.address))}, nil
}
