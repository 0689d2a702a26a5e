// Package objclient is a process's client of its node's object store
// (Ray's plasma client): it stores large values in the local raylet and
// reads stored objects back. Large objects are written into the raylet's
// shared arena through this process's own mapping (CreateObject,
// SealObject) and read in place through a read-only mapping (MapObjects,
// ReleaseObjects), so that a node's processes share one copy; a raylet
// that does not serve those RPCs, or an arena this process cannot open (a
// driver on another host), falls back to streaming the bytes over gRPC.
// The client owns the arena mappings and the fallback flag, apart from the
// owner's bookkeeping of which objects exist, which is the caller's.
package objclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// Raylets gives the clients of raylets by address: the nodes a stored
// object is pulled from.
type Raylets interface {
	Raylet(addr string) (pb.RayletClient, error)
}

// Config configures a Client.
type Config struct {
	// Raylet is the local raylet: where values are stored and whose arena
	// is mapped.
	Raylet pb.RayletClient
	// RayletAddr is the local raylet's address: the location of the
	// values stored here.
	RayletAddr string
	// Raylets dials the raylets that objects are pulled from.
	Raylets Raylets
	// Identity names this process to its raylet: the client its pins and
	// creations are held for, and its job. It is asked on every call,
	// since a process learns its job (a driver) or worker ID (a worker)
	// only after it made its client.
	Identity func() (clientID, jobID string)
	// InlineLimit is the largest value Store leaves inline.
	InlineLimit int
	// TaskError turns an error that travels as a value (an object's, or
	// the raylet's answer for one) into the caller's error; nil: an error
	// with its message.
	TaskError func(*pb.TaskError) error
	// Log gets the fallbacks to streams, at debug level; nil: none.
	Log *zap.Logger
}

// Client is the object store client of one process.
type Client struct {
	cfg Config
	log *zap.Logger

	// The mappings of the local raylet's arena, whether the raylet serves
	// only the object streams (or its arena cannot be mapped here), and
	// how many objects were read in place (tests observe it).
	arenas      arenas
	noArena     atomic.Bool
	mappedReads atomic.Int64
}

// New makes a client; it connects to nothing until used.
func New(cfg Config) *Client {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Identity == nil {
		cfg.Identity = func() (string, string) { return "", "" }
	}
	if cfg.TaskError == nil {
		cfg.TaskError = func(e *pb.TaskError) error { return errors.New(e.Message) }
	}
	return &Client{cfg: cfg, log: cfg.Log}
}

// Close unmaps the arenas once no read in place is in progress; later
// stores and reads stream. Close is idempotent.
func (c *Client) Close() { c.arenas.close() }

// Holds says whether b is a view of a node arena this process mapped (a
// value read in place) rather than a copy.
func (c *Client) Holds(b []byte) bool { return c.arenas.holds(b) }

// MappedReads is how many stored objects this process read in place.
func (c *Client) MappedReads() int64 { return c.mappedReads.Load() }

// Store puts a large value in the local raylet's object store and returns
// the value that stands for it; owner is the object's owner. A value
// within InlineLimit is returned as it is.
func (c *Client) Store(ctx context.Context, id ids.ObjectID, owner string, v *pb.ObjectValue) (*pb.ObjectValue, error) {
	if len(v.Data) <= c.cfg.InlineLimit {
		return v, nil
	}
	stored := &pb.ObjectValue{Location: c.cfg.RayletAddr, Format: v.Format, Contained: v.Contained}
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
func (c *Client) createInArena(ctx context.Context, id ids.ObjectID, owner string, v *pb.ObjectValue) (done bool, err error) {
	if c.noArena.Load() {
		return false, nil
	}
	a := &c.arenas
	a.mu.RLock()
	defer a.mu.RUnlock()
	client, job := c.cfg.Identity()
	rep, err := c.cfg.Raylet.CreateObject(ctx, &pb.CreateObjectRequest{ObjectId: id[:], Size: int64(len(v.Data)),
		Format: v.Format, ClientId: client, JobId: job, OwnerAddress: owner})
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
		_, _ = c.cfg.Raylet.SealObject(context.WithoutCancel(ctx), &pb.SealObjectRequest{ObjectId: id[:], ClientId: client, Abort: true})
		return false, nil
	}
	copy(dst, v.Data)
	if _, err := c.cfg.Raylet.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], ClientId: client}); err != nil {
		return false, err
	}
	return true, nil
}

// noStoreRPCs records that the local raylet serves only the streams, so
// that later objects do not ask again.
func (c *Client) noStoreRPCs() {
	if c.noArena.CompareAndSwap(false, true) {
		c.log.Debug("the raylet does not serve CreateObject/MapObjects; streaming objects")
	}
}

// putStream sends a value to the raylet in checksummed chunks.
func (c *Client) putStream(ctx context.Context, id ids.ObjectID, owner string, v *pb.ObjectValue) error {
	stream, err := c.cfg.Raylet.PutObject(ctx)
	if err != nil {
		return err
	}
	_, job := c.cfg.Identity()
	_ = raylet.SendChunks(v.Data, func(ch *pb.ObjectChunk, first bool) error {
		if first {
			ch.ObjectId, ch.Format, ch.Size, ch.JobId, ch.OwnerAddress = id[:], v.Format, int64(len(v.Data)), job, owner
		}
		return stream.Send(ch)
	}) // a failed Send: CloseAndRecv says why
	_, err = stream.CloseAndRecv()
	return err
}

// Read calls fn with an object's bytes: inline ones as they are, stored
// ones mapped in place from the local raylet's arena (mapped is true: the
// bytes are read-only and valid only during fn, which must copy what it
// keeps) or, failing that, streamed from a node that holds a copy. owner
// is the object's owner.
func (c *Client) Read(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID, owner string,
	fn func(data []byte, format pb.Format, mapped bool) error) error {
	if v.Error != nil {
		return c.cfg.TaskError(v.Error)
	}
	if v.Location == "" {
		return fn(v.Data, v.Format, false)
	}
	view, format, release, err := c.Map(ctx, v, id, owner)
	if err != nil {
		return err
	}
	if view != nil {
		defer release()
		return fn(view, format, true)
	}
	data, format, err := c.Pull(ctx, v, id)
	if err != nil {
		return err
	}
	return fn(data, format, false)
}

// Map maps a stored object through the local raylet, which pulls it first
// when no copy is local. A nil view with a nil error means the object must
// be pulled instead. The view is read-only and stays valid until release;
// while it is held, Close waits.
func (c *Client) Map(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID, owner string) (view []byte, format pb.Format, release func(), err error) {
	if c.noArena.Load() {
		return nil, 0, nil, nil
	}
	client, job := c.cfg.Identity()
	locs := append([]string{v.Location}, v.Copies...)
	rep, err := c.cfg.Raylet.MapObjects(ctx, &pb.MapObjectsRequest{ClientId: client, JobId: job,
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
		return nil, 0, nil, c.cfg.TaskError(m.Error)
	}
	unpin := func() {
		// The pin must outlive the read, not the caller's context.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = c.cfg.Raylet.ReleaseObjects(rctx, &pb.ReleaseObjectsRequest{ObjectIds: [][]byte{id[:]}, ClientId: client})
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

// Pull streams an object into this process's heap from the first node
// that has it, resuming at the offset reached when a source fails and
// refetching a chunk whose checksum does not match.
func (c *Client) Pull(ctx context.Context, v *pb.ObjectValue, id ids.ObjectID) ([]byte, pb.Format, error) {
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

func (c *Client) pullFrom(ctx context.Context, loc string, id ids.ObjectID, data *[]byte, format *pb.Format, size *int64) error {
	rc, err := c.cfg.Raylets.Raylet(loc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := rc.GetObject(ctx, &pb.GetObjectRequest{ObjectId: id[:], Offset: int64(len(*data))})
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
