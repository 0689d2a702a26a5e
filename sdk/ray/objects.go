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

// freeLoop sends the queued frees, batched per node, until the core
// closes. Frees are best effort: a node that is gone has nothing to free.
func (c *core) freeLoop() {
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
func (c *core) AddObjectLocation(_ context.Context, req *pb.AddObjectLocationRequest) (*pb.AddObjectLocationReply, error) {
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
