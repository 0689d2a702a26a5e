package ray

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/sdk/internal/actorsubmit"
	"github.com/manta-ray/manta/sdk/internal/memstore"
	"github.com/manta-ray/manta/sdk/internal/objclient"
	"github.com/manta-ray/manta/sdk/internal/submitter"
)

// core is the runtime of a driver or worker process (Ray's CoreWorker):
// it owns the objects its tasks return and Put, submits tasks through
// worker leases, serves its owned objects to borrowers and, in a worker,
// runs the tasks pushed to it.
type core struct {
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
	// The task submitter (made on first use) and the owner's task table.
	sub     *submitter.Submitter
	subOnce sync.Once
	tasks   taskTable
	// Tasks waiting for their reference arguments (manta status).
	resolving atomic.Int64
	// Local working dirs of runtime envs uploaded so far.
	envs envUploads

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

	// Lineage recording and the retained specs of owned tasks (lineage.go).
	lin lineageState

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// taskCtx is the task a process runs now: the parent of what it submits.
type taskCtx struct {
	id      ids.TaskID
	counter atomic.Uint64
	puts    atomic.Uint32
	worker  bool // a task in a worker process (Get blocks: lend the CPU)
}

type taskKey struct{}

func (c *core) taskOf(ctx context.Context) *taskCtx {
	if t, ok := ctx.Value(taskKey{}).(*taskCtx); ok {
		return t
	}
	return c.root
}

// objectKey names an object and its owner; h is the handle of a ref
// just made for an owned object.
type objectKey struct {
	id    ids.ObjectID
	owner string
	h     *refHandle
}

func newCore(log *zap.Logger, jobID, token, rayletAddr, host string) (*core, error) {
	c := &core{log: log, jobID: jobID, token: token, rayletAddr: rayletAddr,
		conns: map[string]*grpc.ClientConn{},
	}
	c.mem = memstore.New(memstore.Config{OnReleased: c.released})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("ray: listen: %w", err)
	}
	c.lis, c.address = lis, lis.Addr().String()
	c.srv = grpc.NewServer(append(raylet.ServerOptions(), grpc.UnaryInterceptor(auth.UnaryServer(token)))...)
	pb.RegisterCoreWorkerServer(c.srv, c)
	cc, err := c.conn(rayletAddr)
	if err != nil {
		lis.Close()
		return nil, err
	}
	c.raylet = pb.NewRayletClient(cc)
	c.objs = c.newObjectClient()
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		_ = c.srv.Serve(lis)
	}()
	go c.freeLoop()
	return c, nil
}

// conn returns a cached connection to a raylet or core worker.
func (c *core) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, append(raylet.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return c.token })))...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

func (c *core) close() {
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
	c.closeRecorder()
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

// ---- owned objects -------------------------------------------------------------

// object is an entry of the object table.
type object = memstore.Object

// objectFor returns the local entry of an object; a borrowed object not
// seen before is fetched from its owner in the background.
func (c *core) objectFor(k objectKey) *object {
	if o := c.mem.Get(k.id); o != nil {
		return o
	}
	if k.owner == c.address || k.owner == "" {
		// Owned and forgotten: every reference was released. The entry is
		// not kept, so a released object stays released.
		return memstore.Done(notFoundValue(k.id))
	}
	o, added := c.mem.Fetching(k.id)
	if !added {
		return o
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		v, err := c.fetchFromOwner(k)
		if err != nil {
			v = lostValue(k.id, err.Error())
		}
		c.mem.Complete([]ids.ObjectID{k.id}, []*pb.ObjectValue{v})
	}()
	return o
}

// notFoundValue stands for an object its owner does not have (released).
func notFoundValue(id ids.ObjectID) *pb.ObjectValue {
	return &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_NOT_FOUND,
		Message: fmt.Sprintf("object %s is not known to its owner (released)", id)}}
}

func lostValue(id ids.ObjectID, why string) *pb.ObjectValue {
	return &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: fmt.Sprintf("object %s: %s", id, why)}}
}

func (c *core) fetchFromOwner(k objectKey) (*pb.ObjectValue, error) {
	cc, err := c.conn(k.owner)
	if err != nil {
		return nil, err
	}
	return pb.NewCoreWorkerClient(cc).GetObject(c.ctx, &pb.OwnerGetRequest{ObjectId: k.id[:]})
}

// GetObject serves an owned object to a borrower once it is ready.
func (c *core) GetObject(ctx context.Context, req *pb.OwnerGetRequest) (*pb.ObjectValue, error) {
	id, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	o := c.mem.Get(id)
	if o == nil {
		return notFoundValue(id), nil
	}
	select {
	case <-o.Ready():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	v := c.mem.Value(o)
	// Commit before consume: the borrower may need the lineage after this
	// owner is gone.
	if p, ok := c.producerToWait(id, c.address, v); ok {
		c.waitCommitted(ctx, []ids.TaskID{p})
	}
	return v, nil
}

// Ping answers raylets checking that an owner is alive.
func (c *core) Ping(context.Context, *pb.PingRequest) (*pb.PingReply, error) {
	return &pb.PingReply{}, nil
}
