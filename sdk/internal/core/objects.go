package core

// Objects as the facade sees them (Read, Wait, Put) and as other
// processes do (GetObject, AddObjectLocation): the owner's side of every
// object lives in the object table (sdk/internal/memstore), the bytes of
// stored ones in the node's arena (sdk/internal/objclient); this file
// joins the two, fetches borrowed objects from their owners, and frees
// the node copies of released ones.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/memstore"
	"github.com/manta-ray/manta/sdk/internal/objclient"
)

// clientID names this process to its raylet for pins and creations.
func (c *Worker) clientID() string {
	if c.workerID != "" {
		return c.workerID
	}
	return c.address
}

// newObjectClient makes the client of the local raylet's object store.
// This process's worker ID and job are read on every call: both are set
// after the Worker is made.
func (c *Worker) newObjectClient() *objclient.Client {
	return objclient.New(objclient.Config{Raylet: c.raylet, RayletAddr: c.rayletAddr, Raylets: workerConns{c},
		Identity:    func() (string, string) { return c.clientID(), c.jobID },
		InlineLimit: InlineLimit, TaskError: TaskErrorFrom, Log: c.log})
}

// objectFor returns the local entry of an object; a borrowed object not
// seen before is fetched from its owner in the background.
func (c *Worker) objectFor(k ObjectKey) *object {
	if o := c.mem.Get(k.ID); o != nil {
		return o
	}
	if k.Owner == c.address || k.Owner == "" {
		// Owned and forgotten: every reference was released. The entry is
		// not kept, so a released object stays released.
		return memstore.Done(notFoundValue(k.ID))
	}
	o, added := c.mem.Fetching(k.ID)
	if !added {
		return o
	}
	c.spawn(func() {
		v, err := c.fetchFromOwner(k)
		if err != nil {
			v = lostValue(k.ID, err.Error())
		}
		c.mem.Complete([]ids.ObjectID{k.ID}, []*pb.ObjectValue{v})
	})
	return o
}

// ownerDiedValue stands for a borrowed object whose owner is gone.
func ownerDiedValue(k ObjectKey, err error) *pb.ObjectValue {
	return &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OWNER_DIED,
		Message: fmt.Sprintf("object %s: its owner %s cannot be reached: %v", k.ID, k.Owner, err)}}
}

// Read waits for an object and hands its bytes to decode (mapped says
// they are a read-only view of the node's arena, valid during the call).
// A stored object of this process's that no node has any more is rebuilt
// from its lineage (recovery.go); every Read that saw it lost waits for
// the same rebuild.
func (c *Worker) Read(ctx context.Context, id ids.ObjectID, owner string, decode func(data []byte, format pb.Format, mapped bool) error) error {
	err := c.read(ctx, id, owner, decode)
	if err != nil && owner == c.address && ctx.Err() == nil && c.reps.used.Load() {
		// A durable object no node has any more (or this node's store is
		// gone): its value is in the control store.
		if data, f, ok, derr := c.durableValue(ctx, id); ok && derr == nil {
			return decode(data, f, false)
		}
	}
	return err
}

func (c *Worker) read(ctx context.Context, id ids.ObjectID, owner string, decode func(data []byte, format pb.Format, mapped bool) error) error {
	o := c.objectFor(ObjectKey{ID: id, Owner: owner})
	if err := c.await(ctx, o); err != nil {
		return err
	}
	val := c.mem.Value(o)
	for rebuilds := 0; ; rebuilds++ {
		err := c.objs.Read(ctx, val, id, owner, decode)
		if err == nil || val.Location == "" || rebuilds >= maxGetRebuilds || !errors.Is(err, ErrObjectLost) || ctx.Err() != nil {
			return err
		}
		if owner != c.address {
			// Borrowed and lost: when its owner died, the control plane
			// knows where another copy is, or has it rebuilt (adoption.go).
			if !c.ownerGone(owner) {
				return err
			}
			v := c.adoptedValue(ObjectKey{ID: id, Owner: owner}, append([]string{val.Location}, val.Copies...))
			if v == nil {
				return err
			}
			val = v
			continue
		}
		if o, err = c.lin.recoverObject(id, o); err != nil {
			return err
		}
		if err := c.await(ctx, o); err != nil {
			return err
		}
		val = c.mem.Value(o)
	}
}

// await waits until o is ready or ctx ends; a task that has to wait lends
// its CPU to its raylet meanwhile.
func (c *Worker) await(ctx context.Context, o *object) error {
	select {
	case <-o.Ready():
		return nil
	default:
	}
	done := c.blocked(ctx)
	defer done()
	select {
	case <-o.Ready():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait returns once numReady of keys are ready (finished, with a value or
// an error) or timeout passes (0: no timeout). A key whose skip entry is
// true counts as ready (a failed ref). ready[i] says which are.
func (c *Worker) Wait(ctx context.Context, keys []ObjectKey, skip []bool, numReady int, timeout time.Duration) (ready []bool, err error) {
	numReady = min(numReady, len(keys))
	objs := make([]*object, len(keys))
	for i, k := range keys {
		if !skip[i] {
			objs[i] = c.objectFor(ObjectKey{ID: k.ID, Owner: k.Owner})
		}
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	var done func()
	defer func() {
		if done != nil {
			done()
		}
	}()
	ready = make([]bool, len(keys))
	for {
		changed := c.mem.Changed()
		n := 0
		for i := range keys {
			ready[i] = objs[i] == nil || objs[i].IsReady()
			if ready[i] {
				n++
			}
		}
		if n >= numReady {
			return ready, nil
		}
		if done == nil {
			done = c.blocked(ctx)
		}
		select {
		case <-changed:
		case <-deadline:
			return ready, nil
		case <-ctx.Done():
			return ready, ctx.Err()
		}
	}
}

// Put stores a value as an object owned by this process, on as many nodes
// as o asks (replicas.go).
func (c *Worker) Put(ctx context.Context, v any, o PutOptions) (ObjectKey, error) {
	tc := c.taskOf(ctx)
	id := ids.PutID(tc.id, tc.puts.Add(1))
	ov, err := Encode(v)
	if err != nil {
		return ObjectKey{}, err
	}
	if err := c.checkPutOptions(o, ov); err != nil {
		return ObjectKey{}, err
	}
	if o.Durable {
		if err := c.storeDurable(ctx, id, ov); err != nil {
			return ObjectKey{}, err
		}
	}
	if ov, err = c.objs.Store(ctx, id, c.address, ov); err != nil {
		c.replicasReleased(id)
		return ObjectKey{}, err
	}
	c.mem.NewOwned([]ids.ObjectID{id}, "")
	h := c.newHandle(id)
	var replicas []string
	if o.Replicas > 1 && ov.Location != "" {
		if replicas, err = c.replicate(ctx, id, ov, o.Replicas); err != nil {
			// Nothing was handed out: every copy made goes with the object.
			c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{ov})
			for _, r := range replicas {
				c.mem.AddCopy(id, r)
			}
			h.Release()
			return ObjectKey{}, err
		}
	}
	// The object holds the refs in its value while it lives.
	c.registerValue(c.address, id, ov)
	runtime.KeepAlive(v)
	c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{ov})
	for _, r := range replicas {
		c.mem.AddCopy(id, r)
	}
	if len(replicas) > 0 {
		c.keepReplicated(id, o.Replicas)
	}
	return ObjectKey{ID: id, Owner: c.address, H: h}, nil
}

// GetObject serves an owned object to a borrower once it is ready.
func (c *Worker) GetObject(ctx context.Context, req *pb.OwnerGetRequest) (*pb.ObjectValue, error) {
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
	if p, ok := c.lin.producerToWait(id, c.address, v); ok {
		c.lin.waitCommitted(ctx, []ids.TaskID{p})
	}
	return v, nil
}

// freeLoop sends the queued frees, batched per node, until the Worker
// closes. Frees are best effort: a node that is gone has nothing to free.
func (c *Worker) freeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.mem.FreeSignal():
		}
		batch := c.mem.TakeFrees()
		for loc, objs := range batch {
			req := &pb.FreeObjectsRequest{ObjectIds: make([][]byte, len(objs))}
			for i := range objs {
				req.ObjectIds[i] = objs[i][:]
			}
			cc, err := c.conn(loc)
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
			_, err = pb.NewRayletClient(cc).FreeObjects(ctx, req)
			cancel()
			if err != nil && status.Code(err) != codes.Unimplemented {
				c.log.Debug("free objects failed", zap.String("raylet", loc), zap.Int("objects", len(objs)), zap.Error(err))
			}
		}
	}
}

// AddObjectLocation records a node that pulled a copy of an owned object:
// later readers may fetch it there, and Release frees it there too.
func (c *Worker) AddObjectLocation(_ context.Context, req *pb.AddObjectLocationRequest) (*pb.AddObjectLocationReply, error) {
	id, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.Location == "" {
		return nil, status.Error(codes.InvalidArgument, "empty location")
	}
	// A copy of an object released already is freed at once.
	c.mem.AddCopy(id, req.Location)
	return &pb.AddObjectLocationReply{}, nil
}

// MappedReads is how many stored objects this process read in place
// from its node's shared arena (rather than through a stream).
func (c *Worker) MappedReads() int64 { return c.objs.MappedReads() }

// InArena says whether b is a view of a node arena this process mapped.
func (c *Worker) InArena(b []byte) bool { return c.objs.Holds(b) }
