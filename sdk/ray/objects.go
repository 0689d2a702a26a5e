package ray

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/objectstore/arena"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// The client side of the node's object store: large objects are written
// into the raylet's shared arena through this process's own mapping
// (CreateObject, SealObject) and read in place (MapObjects,
// ReleaseObjects). A raylet that does not serve those RPCs, or an arena
// this process cannot open (a driver on another host), falls back to
// streaming the bytes over gRPC.

// arenas caches this process's mappings of node arenas: one per arena
// path, kept until the core closes (mapping a multi-GiB file per object
// would cost more than the copy it saves).
type arenas struct {
	// mu is held shared by every access to mapped bytes and exclusively by
	// close, which unmaps them: an access never outlives its mapping.
	mu sync.RWMutex
	// openMu guards the maps and closed.
	openMu  sync.Mutex
	closed  bool
	writers map[string]*arena.Writer
	readers map[string]*arena.Reader
}

// writer returns the cached writable mapping of path; mu is held shared.
func (a *arenas) writer(path string) (*arena.Writer, error) {
	a.openMu.Lock()
	defer a.openMu.Unlock()
	if a.closed {
		return nil, ErrNotInitialized
	}
	if w := a.writers[path]; w != nil {
		return w, nil
	}
	w, err := arena.OpenWriter(path)
	if err != nil {
		return nil, err
	}
	if a.writers == nil {
		a.writers = map[string]*arena.Writer{}
	}
	a.writers[path] = w
	return w, nil
}

// reader returns the cached read-only mapping of path; mu is held shared.
func (a *arenas) reader(path string) (*arena.Reader, error) {
	a.openMu.Lock()
	defer a.openMu.Unlock()
	if a.closed {
		return nil, ErrNotInitialized
	}
	if r := a.readers[path]; r != nil {
		return r, nil
	}
	r, err := arena.OpenReader(path)
	if err != nil {
		return nil, err
	}
	if a.readers == nil {
		a.readers = map[string]*arena.Reader{}
	}
	a.readers[path] = r
	return r, nil
}

// holds says whether b is a view of one of the arenas this process mapped.
func (a *arenas) holds(b []byte) bool {
	a.openMu.Lock()
	defer a.openMu.Unlock()
	for _, r := range a.readers {
		if r.Holds(b) {
			return true
		}
	}
	return false
}

// close unmaps every arena once no access is in progress.
func (a *arenas) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.openMu.Lock()
	defer a.openMu.Unlock()
	a.closed = true
	for _, w := range a.writers {
		w.Close()
	}
	for _, r := range a.readers {
		r.Close()
	}
	a.writers, a.readers = nil, nil
}

// clientID names this process to its raylet for pins and creations.
func (c *core) clientID() string {
	if c.workerID != "" {
		return c.workerID
	}
	return c.address
}

// store puts a large value in the local raylet's object store and returns
// the value that stands for it; owner is the object's owner.
func (c *core) store(ctx context.Context, id ids.ObjectID, owner string, v *pb.ObjectValue) (*pb.ObjectValue, error) {
	if len(v.Data) <= InlineLimit {
		return v, nil
	}
	stored := &pb.ObjectValue{Location: c.rayletAddr, Format: v.Format}
	done, err := c.createInArena(ctx, id, owner, v)
	if done {
		return stored, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ray: store object %s: %w", id, err)
	}
	if err := c.putStream(ctx, id, owner, v); err != nil {
		return nil, fmt.Errorf("ray: store object %s: %w", id, err)
	}
	return stored, nil
}

// createInArena writes a value into the raylet's arena: done is false with
// a nil error when the stream must be used instead.
func (c *core) createInArena(ctx context.Context, id ids.ObjectID, owner string, v *pb.ObjectValue) (done bool, err error) {
	if c.noArena.Load() {
		return false, nil
	}
	a := &c.arenas
	a.mu.RLock()
	defer a.mu.RUnlock()
	rep, err := c.raylet.CreateObject(ctx, &pb.CreateObjectRequest{ObjectId: id[:], Size: int64(len(v.Data)),
		Format: v.Format, ClientId: c.clientID(), JobId: c.jobID, OwnerAddress: owner})
	if status.Code(err) == codes.Unimplemented {
		c.noStoreRPCs()
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if rep.Exists {
		return true, nil
	}
	w, err := a.writer(rep.ArenaPath)
	var dst []byte
	if err == nil {
		dst, err = w.Range(rep.Offset, int64(len(v.Data)))
	}
	if err != nil {
		// Not openable here (another host, or permissions): give the
		// space back and stream instead.
		c.log.Debug("arena not writable here; streaming objects", zap.String("arena", rep.ArenaPath), zap.Error(err))
		c.noStoreRPCs()
		_, _ = c.raylet.SealObject(context.WithoutCancel(ctx), &pb.SealObjectRequest{ObjectId: id[:], ClientId: c.clientID(), Abort: true})
		return false, nil
	}
	copy(dst, v.Data)
	if _, err := c.raylet.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], ClientId: c.clientID()}); err != nil {
		return false, err
	}
	return true, nil
}

// noStoreRPCs records that the local raylet serves only the streams, so
// that later objects do not ask again.
func (c *core) noStoreRPCs() {
	if c.noArena.CompareAndSwap(false, true) {
		c.log.Debug("the raylet does not serve CreateObject/MapObjects; streaming objects")
	}
}

// putStream sends a value to the raylet in checksummed chunks.
func (c *core) putStream(ctx context.Context, id ids.ObjectID, owner string, v *pb.ObjectValue) error {
	stream, err := c.raylet.PutObject(ctx)
	if err != nil {
		return err
	}
	_ = raylet.SendChunks(v.Data, func(ch *pb.ObjectChunk, first bool) error {
		if first {
			ch.ObjectId, ch.Format, ch.Size, ch.JobId, ch.OwnerAddress = id[:], v.Format, int64(len(v.Data)), c.jobID, owner
		}
		return stream.Send(ch)
	}) // a failed Send: CloseAndRecv says why
	_, err = stream.CloseAndRecv()
	return err
}

// readValue calls fn with an object's bytes: inline ones as they are,
// stored ones mapped in place from the local raylet's arena (valid only
// during fn: fn must copy what it keeps) or, failing that, streamed from
// a node that holds a copy. owner is the object's owner.
func (c *core) readValue(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID, owner string,
	fn func(data []byte, format pb.Format, mapped bool) error) error {
	if v.Error != nil {
		return taskErrorFrom(v.Error)
	}
	if v.Location == "" {
		return fn(v.Data, v.Format, false)
	}
	view, format, release, err := c.mapObject(ctx, v, id, owner)
	if err != nil {
		return err
	}
	if view != nil {
		defer release()
		return fn(view, format, true)
	}
	data, format, err := c.pull(ctx, v, id)
	if err != nil {
		return err
	}
	return fn(data, format, false)
}

// mapObject maps a stored object through the local raylet, which pulls it
// first when no copy is local. A nil view with a nil error means the
// stream must be used. The view stays valid until release; while it is
// held, arenas.mu is held shared.
func (c *core) mapObject(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID, owner string) (view []byte, format pb.Format, release func(), err error) {
	if c.noArena.Load() {
		return nil, 0, nil, nil
	}
	locs := append([]string{v.Location}, v.Copies...)
	rep, err := c.raylet.MapObjects(ctx, &pb.MapObjectsRequest{ClientId: c.clientID(), JobId: c.jobID,
		Objects: []*pb.ObjectRequest{{ObjectId: id[:], OwnerAddress: owner, Locations: locs}}})
	if status.Code(err) == codes.Unimplemented {
		c.noStoreRPCs()
		return nil, 0, nil, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, nil, ctx.Err()
		}
		// The local raylet cannot take it now (a full store, a restart):
		// the object may still be read from where it is, into the heap.
		c.log.Debug("map failed; streaming the object", zap.Stringer("object", id), zap.Error(err))
		return nil, 0, nil, nil
	}
	if len(rep.Objects) != 1 {
		return nil, 0, nil, fmt.Errorf("%w: %s: the raylet answered %d objects for 1", ErrObjectLost, id, len(rep.Objects))
	}
	m := rep.Objects[0]
	if m.Error != nil {
		return nil, 0, nil, taskErrorFrom(m.Error)
	}
	unpin := func() {
		// The pin must outlive the read, not the caller's context.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = c.raylet.ReleaseObjects(rctx, &pb.ReleaseObjectsRequest{ObjectIds: [][]byte{id[:]}, ClientId: c.clientID()})
	}
	a := &c.arenas
	a.mu.RLock()
	r, err := a.reader(m.ArenaPath)
	if err == nil {
		view, err = r.View(m.Offset, m.Size)
	}
	if err != nil {
		a.mu.RUnlock()
		unpin()
		c.log.Debug("arena not readable here; streaming objects", zap.String("arena", m.ArenaPath), zap.Error(err))
		c.noStoreRPCs()
		return nil, 0, nil, nil
	}
	c.mappedReads.Add(1)
	return view, m.Format, func() { a.mu.RUnlock(); unpin() }, nil
}

// pull streams an object into this process's heap from the first node
// that has it, resuming at the offset reached when a source fails and
// refetching a chunk whose checksum does not match.
func (c *core) pull(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID) ([]byte, pb.Format, error) {
	var (
		data   []byte
		format pb.Format
		size   int64 = -1
		errs   []error
	)
	for _, loc := range append([]string{v.Location}, v.Copies...) {
		// A bad chunk is refetched from its offset a few times before the
		// source is given up.
		for attempt := 0; attempt < 3 && int64(len(data)) != size; attempt++ {
			err := c.pullFrom(ctx, loc, id, &data, &format, &size)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", loc, err))
			if !errors.Is(err, errBadChunk) {
				break
			}
		}
		if size >= 0 && int64(len(data)) == size {
			return data, format, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: %s: %v", ErrObjectLost, id, errors.Join(errs...))
}

var errBadChunk = errors.New("chunk checksum mismatch")

func (c *core) pullFrom(ctx context.Context, loc string, id ids.ObjectID, data *[]byte, format *pb.Format, size *int64) error {
	cc, err := c.conn(loc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewRayletClient(cc).GetObject(ctx, &pb.GetObjectRequest{ObjectId: id[:], Offset: int64(len(*data))})
	if err != nil {
		return err
	}
	for *size < 0 || int64(len(*data)) < *size {
		ch, err := stream.Recv()
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		if *size < 0 {
			if ch.Size < 0 || ch.Size > raylet.MaxObjectBytes {
				return fmt.Errorf("bad object size %d", ch.Size)
			}
			*size, *format = ch.Size, ch.Format
			*data = make([]byte, 0, ch.Size)
		}
		// A chunk without a checksum (an older raylet) is taken as is.
		if ch.Crc32C != 0 && raylet.Checksum(ch.Data) != ch.Crc32C {
			return errBadChunk
		}
		if ch.Offset != 0 && ch.Offset != int64(len(*data)) {
			return fmt.Errorf("chunk at offset %d; want %d", ch.Offset, len(*data))
		}
		if int64(len(*data)+len(ch.Data)) > *size {
			return fmt.Errorf("object larger than its announced %d bytes", *size)
		}
		*data = append(*data, ch.Data...)
	}
	return nil
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
