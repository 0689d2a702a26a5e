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
	"github.com/manta-ray/manta/objectstore"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
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
	// local is the raylet's store when the raylet runs in this process
	// (embedded mode): large objects skip gRPC.
	local objectstore.Store

	lis     net.Listener
	srv     *grpc.Server
	address string

	root *taskCtx // the driver's (or worker's) own task

	// A worker's GOMAXPROCS follows its task's CPUs unless GOMAXPROCS is
	// set in its environment (touched only by the executing goroutine).
	fixedProcs bool
	procs      int

	mu      sync.Mutex
	objects map[ids.ObjectID]*object
	changed chan struct{} // closed and replaced when any object completes
	queues  map[string]*shapeQueue
	conns   map[string]*grpc.ClientConn

	// Actors: the control plane (the driver's client, or one the worker
	// made: ownCP), the actor view, the senders to actors this process
	// calls, and the actor this worker hosts.
	cp           *cpclient.Client
	ownCP        bool
	actors       *actorView
	actorClients map[string]*actorClient
	hosted       *hostedActor

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

// objectKey names an object and its owner.
type objectKey struct {
	id    ids.ObjectID
	owner string
}

// object is an owned object (or a borrowed one being fetched from its
// owner). val is set once, when ready is closed.
type object struct {
	ready chan struct{}
	val   *pb.ObjectValue
}

func newCore(log *zap.Logger, jobID, token, rayletAddr, host string) (*core, error) {
	c := &core{log: log, jobID: jobID, token: token, rayletAddr: rayletAddr,
		objects: map[ids.ObjectID]*object{}, changed: make(chan struct{}),
		queues: map[string]*shapeQueue{}, conns: map[string]*grpc.ClientConn{}, actorClients: map[string]*actorClient{}}
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
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = c.srv.Serve(lis)
	}()
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
	c.srv.Stop()
	c.wg.Wait()
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

// newObjectLocked adds a pending owned object.
func (c *core) newObjectLocked(id ids.ObjectID) *object {
	o := c.objects[id]
	if o == nil {
		o = &object{ready: make(chan struct{})}
		c.objects[id] = o
	}
	return o
}

// complete makes an object ready with its value (or error).
func (c *core) complete(id ids.ObjectID, v *pb.ObjectValue) {
	c.mu.Lock()
	c.completeLocked(id, v)
	c.mu.Unlock()
}

func (c *core) completeLocked(id ids.ObjectID, v *pb.ObjectValue) {
	o := c.newObjectLocked(id)
	select {
	case <-o.ready:
		return
	default:
	}
	o.val = v
	close(o.ready)
	close(c.changed)
	c.changed = make(chan struct{})
}

// objectFor returns the local entry of an object; a borrowed object not
// seen before is fetched from its owner in the background.
func (c *core) objectFor(k objectKey) *object {
	c.mu.Lock()
	o := c.objects[k.id]
	if o != nil {
		c.mu.Unlock()
		return o
	}
	o = c.newObjectLocked(k.id)
	c.mu.Unlock()
	if k.owner == c.address || k.owner == "" {
		c.complete(k.id, lostValue(k.id, "its owner no longer has it"))
		return o
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		v, err := c.fetchFromOwner(k)
		if err != nil {
			v = lostValue(k.id, err.Error())
		}
		c.complete(k.id, v)
	}()
	return o
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
	c.mu.Lock()
	o := c.objects[id]
	c.mu.Unlock()
	if o == nil {
		return lostValue(id, "its owner does not know it"), nil
	}
	select {
	case <-o.ready:
		return o.val, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Ping answers raylets checking that an owner is alive.
func (c *core) Ping(context.Context, *pb.PingRequest) (*pb.PingReply, error) {
	return &pb.PingReply{}, nil
}

// valueData returns an object's bytes, fetching it from the object store
// that holds it when it is not inline.
func (c *core) valueData(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID) ([]byte, pb.Format, error) {
	if v.Error != nil {
		return nil, 0, taskErrorFrom(v.Error)
	}
	if v.Location == "" {
		return v.Data, v.Format, nil
	}
	if c.local != nil && v.Location == c.rayletAddr {
		o, err := c.local.Get(id)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s: %v", ErrObjectLost, id, err)
		}
		return o.Data, pb.Format(o.Format), nil
	}
	cc, err := c.conn(v.Location)
	if err != nil {
		return nil, 0, err
	}
	stream, err := pb.NewRayletClient(cc).GetObject(ctx, &pb.GetObjectRequest{ObjectId: id[:]})
	var data []byte
	var format pb.Format
	if err == nil {
		data, format, err = raylet.RecvChunks(stream.Recv)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, fmt.Errorf("%w: %s from %s: %v", ErrObjectLost, id, v.Location, err)
	}
	return data, format, nil
}

// store puts a large value in the local raylet's object store and returns
// the value that stands for it.
func (c *core) store(ctx context.Context, id ids.ObjectID, v *pb.ObjectValue) (*pb.ObjectValue, error) {
	if len(v.Data) <= InlineLimit {
		return v, nil
	}
	if c.local != nil {
		// The caller may reuse its buffer: the store keeps a copy.
		data := append([]byte(nil), v.Data...)
		if err := c.local.Put(id, objectstore.Object{Data: data, Format: int32(v.Format)}); err != nil {
			return nil, fmt.Errorf("ray: store object %s: %w", id, err)
		}
		return &pb.ObjectValue{Location: c.rayletAddr, Format: v.Format}, nil
	}
	stream, err := c.raylet.PutObject(ctx)
	if err == nil {
		err = raylet.SendChunks(v.Data, func(ch *pb.ObjectChunk, first bool) error {
			if first {
				ch.ObjectId, ch.Format, ch.Size = id[:], v.Format, int64(len(v.Data))
			}
			return stream.Send(ch)
		})
	}
	if err == nil {
		_, err = stream.CloseAndRecv()
	}
	if err != nil {
		return nil, fmt.Errorf("ray: store object %s: %w", id, err)
	}
	return &pb.ObjectValue{Location: c.rayletAddr, Format: v.Format}, nil
}
