package raylet

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/objectstore"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// ChunkBytes is the size of the chunks objects move in. BenchmarkPullGiB
// measured 1 MiB at 1.48-1.57 GB/s against 1.13-1.34 for 2 MiB and
// 1.18-1.39 for 4 and 8 MiB: a chunk that stays in cache while it is
// checksummed and copied beats fewer, larger messages. A refetch of a bad
// chunk is cheap too.
const ChunkBytes = 1 << 20

// MaxObjectBytes bounds one object.
const MaxObjectBytes = 64 << 30

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is a chunk's CRC-32C, as ObjectChunk.crc32c carries it.
func Checksum(data []byte) uint32 { return crc32.Checksum(data, castagnoli) }

// objectMeta is what the raylet knows of a stored object beyond its bytes:
// whose it is, so it can be freed when its job ends or its owner dies.
type objectMeta struct {
	job, owner string
	// adopted: the owner died and the control plane adopted the object;
	// nobody pings the owner any more, the job's end frees it.
	adopted bool
	// replicated: a copy of a Put with Replicas, which outlives its owner
	// like an adopted object (it has no lineage: the copies are all).
	replicated bool
}

// creation is an object a local client reserved with CreateObject and has
// not sealed yet.
type creation struct {
	client, job, owner string
}

// objectTable is the raylet's bookkeeping around its store. Guarded by mu,
// which is never held while calling into the store for long operations
// that wait (Acquire of a spilled object, a pull).
type objectTable struct {
	mu       sync.Mutex
	meta     map[ids.ObjectID]objectMeta
	creating map[ids.ObjectID]creation
	// pins are the views held for each client, per object: one per
	// MapObjects that named it, dropped by ReleaseObjects or the client's
	// death.
	pins  map[string]map[ids.ObjectID][]*objectstore.View
	pulls map[ids.ObjectID]*pull
	// retained are the ended jobs whose objects stay while detached actors
	// may hold them (fsm/adoption.go): a dead owner's objects of these
	// jobs, Puts included, are kept until the job's retention ends.
	retained map[string]bool
	closed   bool // no new pulls or owner notifications start
}

func newObjectTable() objectTable {
	return objectTable{meta: map[ids.ObjectID]objectMeta{}, creating: map[ids.ObjectID]creation{},
		pins: map[string]map[ids.ObjectID][]*objectstore.View{}, pulls: map[ids.ObjectID]*pull{}}
}

func parseObjectID(b []byte) (ids.ObjectID, error) {
	id, err := ids.ObjectFromBytes(b)
	if err != nil {
		return id, fmt.Errorf("%w: %v", ErrBadObject, err)
	}
	return id, nil
}

func (r *Raylet) recordMeta(id ids.ObjectID, job, owner string) {
	r.objs.mu.Lock()
	defer r.objs.mu.Unlock()
	if _, ok := r.objs.meta[id]; !ok {
		r.objs.meta[id] = objectMeta{job: job, owner: owner}
	}
}

// ---- Put and Get: objects streamed over gRPC ---------------------------------

// PutObject stores an object streamed in chunks, straight into the arena.
// A second put of a sealed object is a no-op success: a retried task
// reproduces its outputs.
func (r *Raylet) PutObject(stream pb.Raylet_PutObjectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id, err := parseObjectID(first.ObjectId)
	if err != nil {
		return err
	}
	if first.Size < 0 || first.Size > MaxObjectBytes {
		return fmt.Errorf("%w: size %d", ErrBadObject, first.Size)
	}
	if r.shm == nil {
		return r.putBuffered(stream, id, first)
	}
	buf, err := r.shm.Create(id, first.Size, objectstore.CreateOptions{Format: int32(first.Format)})
	if errors.Is(err, objectstore.ErrObjectExists) {
		// Drain rather than return early, so a client that sends every
		// chunk before CloseAndRecv sees success, not a broken stream.
		for err == nil || !errors.Is(err, io.EOF) {
			if _, err = stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
		}
		if r.shm.Locate(id).Tier == objectstore.Absent {
			return fmt.Errorf("%w: %s is being written by another client", ErrObjectBusy, id)
		}
		r.recordMeta(id, first.JobId, first.OwnerAddress)
		return stream.SendAndClose(&pb.PutObjectReply{})
	}
	if err != nil {
		return err
	}
	sealed := false
	defer func() {
		if !sealed {
			r.shm.Abort(id)
		}
	}()
	var pos int64
	for c := first; ; {
		if err := checkChunk(c, pos, first.Size); err != nil {
			return fmt.Errorf("put %s: %w", id, err)
		}
		pos += int64(copy(buf[pos:], c.Data))
		if c, err = stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	if pos != first.Size {
		return fmt.Errorf("%w: put %s: stream ended after %d bytes of %d", ErrBadObject, id, pos, first.Size)
	}
	if err := r.shm.Seal(id); err != nil {
		return err
	}
	sealed = true
	r.recordMeta(id, first.JobId, first.OwnerAddress)
	return stream.SendAndClose(&pb.PutObjectReply{})
}

// checkChunk validates a chunk that should start at pos of an object of
// size bytes. A zero offset is accepted anywhere from clients that do not
// set offsets, and a zero checksum means none was computed.
func checkChunk(c *pb.ObjectChunk, pos, size int64) error {
	if c.Offset != 0 && c.Offset != pos {
		return fmt.Errorf("%w: chunk at offset %d, expected %d", ErrBadObject, c.Offset, pos)
	}
	if int64(len(c.Data)) > size-pos {
		return fmt.Errorf("%w: %d bytes at offset %d overflow an object of %d", ErrBadObject, len(c.Data), pos, size)
	}
	if c.Crc32C != 0 && Checksum(c.Data) != c.Crc32C {
		return fmt.Errorf("%w: chunk at offset %d: crc32c %08x, sent %08x", ErrBadChecksum, pos, Checksum(c.Data), c.Crc32C)
	}
	return nil
}

// putBuffered is PutObject into an injected store that is not a shared
// arena: the object is gathered in memory first.
func (r *Raylet) putBuffered(stream pb.Raylet_PutObjectServer, id ids.ObjectID, first *pb.ObjectChunk) error {
	data := make([]byte, 0, first.Size)
	for c := first; ; {
		if err := checkChunk(c, int64(len(data)), first.Size); err != nil {
			return err
		}
		data = append(data, c.Data...)
		var err error
		if c, err = stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	if int64(len(data)) != first.Size {
		return fmt.Errorf("%w: %d bytes of %d", ErrBadObject, len(data), first.Size)
	}
	if err := r.store.Put(id, objectstore.Object{Data: data, Format: int32(first.Format)}); err != nil {
		return err
	}
	r.recordMeta(id, first.JobId, first.OwnerAddress)
	return stream.SendAndClose(&pb.PutObjectReply{})
}

// ChunkFault is a fault a testing knob injects into a GetObject stream.
type ChunkFault uint8

const (
	ChunkOK      ChunkFault = iota
	ChunkCorrupt            // send the chunk with one byte flipped (its CRC of the true bytes)
	ChunkStall              // send nothing more until the stream is cancelled
	ChunkFail               // end the stream with Unavailable
)

// GetObject streams an object from req.Offset on, in ChunkBytes chunks
// with their CRC-32C and offset. The first chunk also names the object's
// job and owner, so a node that pulls a copy frees it with the original.
func (r *Raylet) GetObject(req *pb.GetObjectRequest, stream pb.Raylet_GetObjectServer) error {
	id, err := parseObjectID(req.ObjectId)
	if err != nil {
		return err
	}
	var data []byte
	var format int32
	if r.shm != nil {
		// The pin keeps the bytes in place while they are sent straight from
		// the arena (restored first if the object was spilled).
		v, err := r.shm.Acquire(id)
		if err != nil {
			return err
		}
		defer v.Release()
		data, format = v.Data, v.Format
	} else {
		o, err := r.store.Get(id)
		if err != nil {
			return err
		}
		data, format = o.Data, o.Format
	}
	size := int64(len(data))
	if req.Offset < 0 || req.Offset > size {
		return fmt.Errorf("%w: offset %d of an object of %d bytes", ErrBadObject, req.Offset, size)
	}
	r.objs.mu.Lock()
	meta := r.objs.meta[id]
	r.objs.mu.Unlock()
	for off, first := req.Offset, true; first || off < size; first = false {
		end := min(off+ChunkBytes, size)
		c := &pb.ObjectChunk{Format: pb.Format(format), Size: size, Data: data[off:end], Offset: off}
		c.Crc32C = Checksum(c.Data)
		if first {
			c.JobId, c.OwnerAddress = meta.job, meta.owner
		}
		if knob := r.cfg.Knobs.ServeChunk; knob != nil {
			switch knob(id, off) {
			case ChunkCorrupt:
				c.Data = append([]byte(nil), c.Data...)
				if len(c.Data) > 0 {
					c.Data[len(c.Data)/2] ^= 0xff
				}
			case ChunkStall:
				<-stream.Context().Done()
				return stream.Context().Err()
			case ChunkFail:
				return fmt.Errorf("%w: injected fault at offset %d", rpcerr.ErrUnavailable, off)
			}
		}
		if err := stream.Send(c); err != nil {
			return err
		}
		r.servedBytes.Add(int64(len(c.Data)))
		off = end
	}
	return nil
}

// SendChunks calls send for each ChunkBytes piece of data (at least once),
// with its offset and CRC-32C set.
func SendChunks(data []byte, send func(c *pb.ObjectChunk, first bool) error) error {
	for off := 0; off < len(data) || off == 0; off += ChunkBytes {
		end := min(off+ChunkBytes, len(data))
		c := &pb.ObjectChunk{Data: data[off:end], Offset: int64(off), Crc32C: Checksum(data[off:end])}
		if err := send(c, off == 0); err != nil {
			return err
		}
		if end == len(data) {
			break
		}
	}
	return nil
}

// RecvChunks reads an object stream; the first chunk gives its size. A
// chunk whose CRC-32C does not match fails with ErrBadChecksum.
func RecvChunks(recv func() (*pb.ObjectChunk, error)) ([]byte, pb.Format, error) {
	first, err := recv()
	if err != nil {
		return nil, 0, err
	}
	if first.Size < 0 || first.Size > MaxObjectBytes {
		return nil, 0, fmt.Errorf("%w: size %d", ErrBadObject, first.Size)
	}
	data := make([]byte, 0, first.Size)
	for c := first; ; {
		if err := checkChunk(c, int64(len(data)), first.Size); err != nil {
			return nil, 0, err
		}
		data = append(data, c.Data...)
		if int64(len(data)) == first.Size {
			return data, first.Format, nil
		}
		if c, err = recv(); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: stream ended after %d bytes of %d", ErrBadObject, len(data), first.Size)
			}
			return nil, 0, err
		}
	}
}

// ---- Create and Seal: objects written in place by local clients ----------------

func (r *Raylet) needArena() error {
	if r.shm == nil {
		return fmt.Errorf("%w: this raylet's object store has no shared arena", rpcerr.ErrFailedPrecondition)
	}
	return nil
}

// CreateObject reserves an object's bytes in the arena for a local client
// to write through its own mapping.
func (r *Raylet) CreateObject(_ context.Context, req *pb.CreateObjectRequest) (*pb.CreateObjectReply, error) {
	if err := r.needArena(); err != nil {
		return nil, err
	}
	id, err := parseObjectID(req.ObjectId)
	if err != nil {
		return nil, err
	}
	if req.ClientId == "" {
		return nil, fmt.Errorf("%w: CreateObject needs a client_id", ErrBadObject)
	}
	if req.Size < 0 || req.Size > MaxObjectBytes {
		return nil, fmt.Errorf("%w: size %d", ErrBadObject, req.Size)
	}
	off, err := r.shm.Reserve(id, req.Size, objectstore.CreateOptions{Format: int32(req.Format)})
	if errors.Is(err, objectstore.ErrObjectExists) {
		if r.shm.Locate(id).Tier == objectstore.Absent {
			return nil, fmt.Errorf("%w: %s is being written by another client", ErrObjectBusy, id)
		}
		r.recordMeta(id, req.JobId, req.OwnerAddress)
		return &pb.CreateObjectReply{ArenaPath: r.shm.ArenaPath(), Exists: true}, nil
	}
	if err != nil {
		return nil, err
	}
	r.objs.mu.Lock()
	r.objs.creating[id] = creation{client: req.ClientId, job: req.JobId, owner: req.OwnerAddress}
	r.objs.mu.Unlock()
	return &pb.CreateObjectReply{ArenaPath: r.shm.ArenaPath(), Offset: off}, nil
}

// SealObject publishes (or aborts) an object its client created.
func (r *Raylet) SealObject(_ context.Context, req *pb.SealObjectRequest) (*pb.SealObjectReply, error) {
	if err := r.needArena(); err != nil {
		return nil, err
	}
	id, err := parseObjectID(req.ObjectId)
	if err != nil {
		return nil, err
	}
	r.objs.mu.Lock()
	c, ok := r.objs.creating[id]
	if ok && c.client == req.ClientId {
		delete(r.objs.creating, id)
	}
	r.objs.mu.Unlock()
	if !ok || c.client != req.ClientId {
		return nil, fmt.Errorf("%w: no unsealed object %s created by %q", ErrCreationNotFound, id, req.ClientId)
	}
	if req.Abort {
		r.shm.Abort(id)
		return &pb.SealObjectReply{}, nil
	}
	if err := r.shm.Seal(id); err != nil {
		return nil, err
	}
	r.recordMeta(id, c.job, c.owner)
	return &pb.SealObjectReply{}, nil
}

// ---- Map and Release: pins for local readers ------------------------------------

// MapObjects makes objects local (pulling them if need be) and pins them
// for the client. Objects that cannot be made local get a per-object
// error; anything else (a full store, a closed raylet) fails the call and
// pins nothing.
func (r *Raylet) MapObjects(ctx context.Context, req *pb.MapObjectsRequest) (*pb.MapObjectsReply, error) {
	if err := r.needArena(); err != nil {
		return nil, err
	}
	if req.ClientId == "" {
		return nil, fmt.Errorf("%w: MapObjects needs a client_id", ErrBadObject)
	}
	objIDs := make([]ids.ObjectID, len(req.Objects))
	for i, o := range req.Objects {
		var err error
		if objIDs[i], err = parseObjectID(o.ObjectId); err != nil {
			return nil, err
		}
	}
	out := make([]*pb.MappedObject, len(req.Objects))
	views := make([]*objectstore.View, len(req.Objects))
	errs := make([]error, len(req.Objects))
	var wg sync.WaitGroup
	for i, o := range req.Objects {
		wg.Add(1)
		go func() { // owned by this call, which waits for it below
			defer wg.Done()
			views[i], out[i], errs[i] = r.mapOne(ctx, objIDs[i], o, req.JobId)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, v := range views {
			if v != nil {
				v.Release()
			}
		}
		return nil, err
	}
	r.objs.mu.Lock()
	defer r.objs.mu.Unlock()
	if r.objs.closed {
		for _, v := range views {
			if v != nil {
				v.Release()
			}
		}
		return nil, ErrClosed
	}
	pins := r.objs.pins[req.ClientId]
	for i, v := range views {
		if v == nil {
			continue
		}
		if pins == nil {
			pins = map[ids.ObjectID][]*objectstore.View{}
			r.objs.pins[req.ClientId] = pins
		}
		pins[objIDs[i]] = append(pins[objIDs[i]], v)
	}
	return &pb.MapObjectsReply{Objects: out}, nil
}

// mapOne pins one object, pulling it first when this node has no copy. A
// pulled secondary copy may be evicted before it is pinned (a full arena),
// so the pull is retried a few times.
func (r *Raylet) mapOne(ctx context.Context, id ids.ObjectID, o *pb.ObjectRequest, job string) (*objectstore.View, *pb.MappedObject, error) {
	const attempts = 3
	for i := 0; ; i++ {
		v, err := r.shm.Acquire(id)
		if err == nil {
			return v, &pb.MappedObject{ObjectId: id[:], ArenaPath: r.shm.ArenaPath(), Offset: v.Offset,
				Size: int64(len(v.Data)), Format: pb.Format(v.Format)}, nil
		}
		if !errors.Is(err, objectstore.ErrObjectNotFound) {
			return nil, nil, err
		}
		if i == attempts {
			return nil, &pb.MappedObject{ObjectId: id[:], Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST,
				Message: fmt.Sprintf("object %s was pulled but evicted before it could be pinned, %d times", id, attempts)}}, nil
		}
		err = r.pullObject(ctx, id, o, job)
		var oe *objectError
		if errors.As(err, &oe) {
			return nil, &pb.MappedObject{ObjectId: id[:], Error: &pb.TaskError{Kind: oe.kind, Message: oe.msg}}, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// ReleaseObjects drops one pin of each object for the client.
func (r *Raylet) ReleaseObjects(_ context.Context, req *pb.ReleaseObjectsRequest) (*pb.ReleaseObjectsReply, error) {
	var drop []*objectstore.View
	r.objs.mu.Lock()
	pins := r.objs.pins[req.ClientId]
	for _, b := range req.ObjectIds {
		id, err := ids.ObjectFromBytes(b)
		if err != nil {
			continue // nothing was pinned under a malformed ID
		}
		if vs := pins[id]; len(vs) > 0 {
			drop = append(drop, vs[len(vs)-1])
			if len(vs) == 1 {
				delete(pins, id)
			} else {
				pins[id] = vs[:len(vs)-1]
			}
		}
	}
	if pins != nil && len(pins) == 0 {
		delete(r.objs.pins, req.ClientId)
	}
	r.objs.mu.Unlock()
	for _, v := range drop {
		v.Release()
	}
	return &pb.ReleaseObjectsReply{}, nil
}

// clientGone drops everything a dead client held: its pins, and the
// objects it created but never sealed.
func (r *Raylet) clientGone(client string) {
	r.objs.mu.Lock()
	var aborts []ids.ObjectID
	for id, c := range r.objs.creating {
		if c.client == client {
			aborts = append(aborts, id)
			delete(r.objs.creating, id)
		}
	}
	pins := r.objs.pins[client]
	delete(r.objs.pins, client)
	r.objs.mu.Unlock()
	n := 0
	for _, vs := range pins {
		for _, v := range vs {
			v.Release()
			n++
		}
	}
	for _, id := range aborts {
		if r.shm != nil {
			r.shm.Abort(id)
		}
	}
	if n > 0 || len(aborts) > 0 {
		r.log.Info("client gone: dropped its pins and unsealed objects", zap.String("client", client),
			zap.Int("pins", n), zap.Int("aborted", len(aborts)))
	}
}

// ---- Free, Locate ------------------------------------------------------------------

// FreeObjects deletes this node's copies; pinned ones go when unpinned.
func (r *Raylet) FreeObjects(_ context.Context, req *pb.FreeObjectsRequest) (*pb.FreeObjectsReply, error) {
	var free []ids.ObjectID
	for _, b := range req.ObjectIds {
		id, err := parseObjectID(b)
		if err != nil {
			return nil, err
		}
		free = append(free, id)
	}
	r.freeObjects(free)
	return &pb.FreeObjectsReply{}, nil
}

func (r *Raylet) freeObjects(objs []ids.ObjectID) {
	r.objs.mu.Lock()
	for _, id := range objs {
		delete(r.objs.meta, id)
	}
	r.objs.mu.Unlock()
	for _, id := range objs {
		r.store.Delete(id)
	}
}

// freeWhere frees every object whose meta matches, and says how many.
func (r *Raylet) freeWhere(match func(objectMeta) bool) int {
	var objs []ids.ObjectID
	r.objs.mu.Lock()
	for id, m := range r.objs.meta {
		if match(m) {
			objs = append(objs, id)
		}
	}
	r.objs.mu.Unlock()
	r.freeObjects(objs)
	return len(objs)
}

// jobEndedObjects frees the objects of a job that ended, or keeps them
// while the job is retained (and frees them when that ends).
func (r *Raylet) jobEndedObjects(job string, retained bool) {
	r.objs.mu.Lock()
	if r.objs.retained == nil {
		r.objs.retained = map[string]bool{}
	}
	was := r.objs.retained[job]
	if retained {
		r.objs.retained[job] = true
	} else {
		delete(r.objs.retained, job)
	}
	r.objs.mu.Unlock()
	switch {
	case retained && !was:
		r.log.Info("job ended retained: its objects stay while detached actors live", zap.String("job", job))
	case !retained:
		r.freeJobObjects(job)
	}
}

// freeJobObjects frees the objects of a job that ended.
func (r *Raylet) freeJobObjects(job string) {
	if n := r.freeWhere(func(m objectMeta) bool { return m.job == job }); n > 0 {
		r.log.Info("freed the objects of an ended job", zap.String("job", job), zap.Int("objects", n))
	}
}

// objectOwnerGone handles an owner that stopped answering. Its objects
// die with it (Ray's rule) except those the control plane adopts (their
// lineage is recorded and still referenced: fsm/adoption.go), which stay
// until their job ends. While the control plane cannot be asked, nothing
// is freed: the next round of the owner loop asks again.
func (r *Raylet) objectOwnerGone(owner string) {
	var objs []ids.ObjectID
	r.objs.mu.Lock()
	for id, m := range r.objs.meta {
		if m.owner == owner && !m.adopted {
			objs = append(objs, id)
		}
	}
	r.objs.mu.Unlock()
	keep := map[ids.ObjectID]bool{}
	if len(objs) > 0 && r.cp != nil {
		req := &cpb.OwnerDiedRequest{OwnerAddress: owner, ObjectIds: make([][]byte, len(objs)), Reason: "unreachable from raylet " + r.cfg.NodeID}
		for i, id := range objs {
			req.ObjectIds[i] = append([]byte(nil), id[:]...)
		}
		ctx, cancel := context.WithTimeout(r.ctx, ownerDiedTimeout)
		rep, err := r.cp.OwnerDied(ctx, req)
		cancel()
		if err != nil {
			r.log.Info("owner unreachable; its objects are kept until the control plane rules on them",
				zap.String("owner", owner), zap.Int("objects", len(objs)), zap.Error(err))
			return
		}
		for _, b := range rep.Adopted {
			if id, err := ids.ObjectFromBytes(b); err == nil {
				keep[id] = true
			}
		}
	}
	var free []ids.ObjectID
	r.objs.mu.Lock()
	for _, id := range objs {
		m, ok := r.objs.meta[id]
		switch {
		case !ok || m.owner != owner || m.adopted:
		case keep[id] || r.objs.retained[m.job] || m.replicated:
			// No owner to watch any more; freed with its job.
			m.adopted = true
			r.objs.meta[id] = m
		default:
			free = append(free, id)
		}
	}
	r.objs.mu.Unlock()
	r.freeObjects(free)
	if len(free) > 0 || len(keep) > 0 {
		r.log.Info("owner unreachable: freed its objects, kept the adopted ones", zap.String("owner", owner),
			zap.Int("freed", len(free)), zap.Int("adopted", len(keep)))
	}
	r.clientGone(owner)
}

// objectParties are the addresses the owner liveness loop must watch for
// the object store: owners of stored objects, and clients that are not
// workers of this node (drivers, by CoreWorker address) holding pins or
// unsealed creations.
func (r *Raylet) objectParties() []string {
	seen := map[string]bool{}
	r.objs.mu.Lock()
	for _, m := range r.objs.meta {
		if m.owner != "" && !m.adopted {
			seen[m.owner] = true
		}
	}
	var clients []string
	for c := range r.objs.pins {
		clients = append(clients, c)
	}
	for _, c := range r.objs.creating {
		clients = append(clients, c.client)
	}
	r.objs.mu.Unlock()
	for _, c := range clients {
		if _, worker := r.pool.Get(c); !worker && strings.Contains(c, ":") {
			seen[c] = true
		}
	}
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	return out
}

// LocateObjects says where this node's copies are.
func (r *Raylet) LocateObjects(_ context.Context, req *pb.LocateObjectsRequest) (*pb.LocateObjectsReply, error) {
	reply := &pb.LocateObjectsReply{NodeId: r.cfg.NodeID}
	if r.shm == nil {
		return reply, nil
	}
	var locs []objectstore.Location
	if len(req.ObjectIds) == 0 {
		locs = r.shm.Locations()
	} else {
		for _, b := range req.ObjectIds {
			id, err := parseObjectID(b)
			if err != nil {
				return nil, err
			}
			if l := r.shm.Locate(id); l.Tier != objectstore.Absent {
				locs = append(locs, l)
			}
		}
	}
	r.objs.mu.Lock()
	defer r.objs.mu.Unlock()
	for _, l := range locs {
		m := r.objs.meta[l.ID]
		reply.Objects = append(reply.Objects, &pb.ObjectLocation{ObjectId: append([]byte(nil), l.ID[:]...),
			Tier: l.Tier.String(), Size: l.Size, Primary: l.Primary, JobId: m.job, OwnerAddress: m.owner, Adopted: m.adopted})
	}
	return reply, nil
}

// closeObjects stops new pulls and drops every pin; the raylet's loops
// and handlers have ended.
func (r *Raylet) closeObjects() {
	r.objs.mu.Lock()
	r.objs.closed = true
	pins := r.objs.pins
	r.objs.pins = map[string]map[ids.ObjectID][]*objectstore.View{}
	r.objs.mu.Unlock()
	for _, byID := range pins {
		for _, vs := range byID {
			for _, v := range vs {
				v.Release()
			}
		}
	}
}

// ReplicateObject makes this node hold a primary copy of an object its
// owner wants replicated (Put with Replicas): pulled from the given
// locations unless it is here already, then promoted, so that it is kept
// (or spilled) rather than dropped as a cached copy would be. Every copy,
// the first one included, is marked replicated: it outlives its owner
// (until its job ends), readable by borrowers through the control plane.
func (r *Raylet) ReplicateObject(ctx context.Context, req *pb.ReplicateObjectRequest) (*pb.ReplicateObjectReply, error) {
	if err := r.needArena(); err != nil {
		return nil, err
	}
	if req.Object == nil {
		return nil, status.Error(codes.InvalidArgument, "object: missing")
	}
	id, err := parseObjectID(req.Object.ObjectId)
	if err != nil {
		return nil, err
	}
	// A pulled copy is secondary until promoted and may be evicted in
	// between on a full arena: pull again a few times.
	for range 3 {
		if r.shm.Promote(id) {
			r.objs.mu.Lock()
			if m, ok := r.objs.meta[id]; ok {
				m.replicated = true
				r.objs.meta[id] = m
			}
			r.objs.mu.Unlock()
			return &pb.ReplicateObjectReply{}, nil
		}
		err := r.pullObject(ctx, id, req.Object, req.JobId)
		var oe *objectError
		if errors.As(err, &oe) {
			return nil, status.Errorf(codes.NotFound, "object %s: %s", id, oe.msg)
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, status.Errorf(codes.ResourceExhausted, "object %s was pulled but evicted before it could be kept, 3 times", id)
}
