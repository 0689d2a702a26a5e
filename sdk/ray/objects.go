package ray

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/objclient"
)

// The local object store client (storing large values in the node's
// arena, reading them in place or streaming them) is
// sdk/internal/objclient's; the owner's side of stored objects (where
// their copies are, freeing them once released) is here.

// clientID names this process to its raylet for pins and creations.
func (c *core) clientID() string {
	if c.workerID != "" {
		return c.workerID
	}
	return c.address
}

// newObjectClient makes the client of the local raylet's object store.
// This process's worker ID and job are read on every call: both are set
// after the core is made.
func (c *core) newObjectClient() *objclient.Client {
	return objclient.New(objclient.Config{Raylet: c.raylet, RayletAddr: c.rayletAddr, Raylets: coreConns{c},
		Identity:    func() (string, string) { return c.clientID(), c.jobID },
		InlineLimit: InlineLimit, TaskError: taskErrorFrom, Log: c.log})
}

// ---- freeing released objects ----------------------------------------------------

// freeLaterLocked queues the node copies of a released object for FreeObjects.
// c.mu is held.
func (c *core) freeLaterLocked(id ids.ObjectID, v *pb.ObjectValue, copies []string) {
	if v == nil || v.Location == "" {
		return
	}
	for _, loc := range append([]string{v.Location}, append(v.Copies, copies...)...) {
		c.toFree[loc] = append(c.toFree[loc], id)
	}
	select {
	case c.freeSignal <- struct{}{}:
	default:
	}
}

// freeLoop sends the queued frees, batched per node, until the core
// closes. Frees are best effort: a node that is gone has nothing to free.
func (c *core) freeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.freeSignal:
		}
		c.mu.Lock()
		batch := c.toFree
		c.toFree = map[string][]ids.ObjectID{}
		c.mu.Unlock()
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
func (c *core) AddObjectLocation(_ context.Context, req *pb.AddObjectLocationRequest) (*pb.AddObjectLocationReply, error) {
	id, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.Location == "" {
		return nil, status.Error(codes.InvalidArgument, "empty location")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.objects[id]
	if o == nil || !o.owned {
		// Released already: the new copy is as unwanted as the others.
		c.toFree[req.Location] = append(c.toFree[req.Location], id)
		select {
		case c.freeSignal <- struct{}{}:
		default:
		}
		return &pb.AddObjectLocationReply{}, nil
	}
	if o.val != nil && o.val.Location == req.Location {
		return &pb.AddObjectLocationReply{}, nil
	}
	for _, l := range o.copies {
		if l == req.Location {
			return &pb.AddObjectLocationReply{}, nil
		}
	}
	o.copies = append(o.copies, req.Location)
	return &pb.AddObjectLocationReply{}, nil
}

// valueOf is a ready object's value with the copies learnt since it
// completed. Inline values are returned without locking.
func (c *core) valueOf(o *object) *pb.ObjectValue {
	v := o.val
	if v.Location == "" {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(o.copies) == 0 {
		return v
	}
	// o.val is shared with specs already sent: never modify it.
	return &pb.ObjectValue{Format: v.Format, Location: v.Location, Copies: append(append([]string(nil), v.Copies...), o.copies...)}
}
