package raylet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	"github.com/manta-ray/manta/objectstore"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// maxRefetches bounds how often one source is asked again for a chunk that
// failed its checksum before the pull moves on to the next source.
const maxRefetches = 3

// objectError is a pull's outcome for an object that cannot be made
// local; MapObjects returns it in the object's reply, not as the call's.
type objectError struct {
	kind pb.ErrorKind
	msg  string
}

func (e *objectError) Error() string { return e.msg }

// pull is one transfer of an object to this node, shared by every
// MapObjects that waits for it.
type pull struct {
	done    chan struct{}
	err     error // set before done closes
	waiters int   // guarded by objectTable.mu; the last to leave cancels
	cancel  context.CancelFunc
}

// pullObject makes id local by pulling it from o.Locations (one pull per
// object however many ask). It returns nil once a copy is sealed here, an
// *objectError when no source has it, or another error (a full store, the
// caller's context).
func (r *Raylet) pullObject(ctx context.Context, id ids.ObjectID, o *pb.ObjectRequest, job string) error {
	r.objs.mu.Lock()
	if r.objs.closed {
		r.objs.mu.Unlock()
		return ErrClosed
	}
	p := r.objs.pulls[id]
	if p == nil {
		pctx, cancel := context.WithCancel(r.ctx)
		p = &pull{done: make(chan struct{}), cancel: cancel}
		r.objs.pulls[id] = p
		locs := r.pullSources(o.Locations)
		r.wg.Add(1)
		go func() { // owned by the raylet: r.ctx ends it, Close waits for it
			defer r.wg.Done()
			err := r.runPull(pctx, id, locs, o.OwnerAddress, job)
			r.objs.mu.Lock()
			delete(r.objs.pulls, id)
			p.err = err
			r.objs.mu.Unlock()
			cancel()
			close(p.done)
		}()
	}
	p.waiters++
	r.objs.mu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		r.objs.mu.Lock()
		if p.waiters--; p.waiters == 0 {
			p.cancel() // nobody wants it any more
		}
		r.objs.mu.Unlock()
		return ctx.Err()
	}
}

// pullSources is the locations to try, in order, without this node and
// without repeats.
func (r *Raylet) pullSources(locs []string) []string {
	seen := map[string]bool{r.Address(): true, "": true}
	var out []string
	for _, l := range locs {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

// pullState is a transfer in progress: bytes [0, pos) of buf are written
// and checked; a new source resumes at pos.
type pullState struct {
	id         ids.ObjectID
	size       int64 // -1 until the first chunk says
	format     pb.Format
	job, owner string
	buf        []byte
	pos        int64
	created    bool
	held       int64 // bytes of the pull budget held
}

var (
	errStalled = errors.New("stalled")
	// errAppeared: the object was stored here by someone else meanwhile.
	errAppeared = errors.New("object appeared locally")
)

// localError wraps a failure of this node (its store), which no other
// source can fix: the pull stops.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func (r *Raylet) runPull(ctx context.Context, id ids.ObjectID, locs []string, owner, job string) error {
	if len(locs) == 0 {
		return &objectError{kind: pb.ErrorKind_ERROR_OBJECT_NOT_FOUND,
			msg: fmt.Sprintf("object %s is not on node %s and no other location is known", id, r.cfg.NodeID)}
	}
	st := &pullState{id: id, size: -1, job: job, owner: owner}
	sealed := false
	defer func() {
		if st.created && !sealed {
			r.shm.Abort(id)
		}
		if st.held > 0 {
			r.pullBudget.release(st.held)
		}
	}()
	var tried []string
	for _, loc := range locs {
		for attempt := 0; ; attempt++ {
			err := r.pullFrom(ctx, loc, st)
			if err == nil || errors.Is(err, errAppeared) {
				if err == nil {
					if err := r.shm.Seal(id); err != nil {
						return &localError{err}
					}
					sealed = true
					r.pulledObjects.Add(1)
					r.pulledBytes.Add(st.size)
					r.recordMeta(id, st.job, st.owner)
					r.notifyOwner(st.owner, id)
				}
				r.log.Debug("pulled object", zap.Stringer("id", id), zap.String("from", loc), zap.Int64("bytes", st.size))
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var le *localError
			if errors.As(err, &le) {
				return le.err
			}
			if errors.Is(err, ErrBadChecksum) && attempt < maxRefetches {
				r.log.Warn("pulled chunk failed its checksum; fetching it again", zap.Stringer("id", id),
					zap.String("from", loc), zap.Int64("offset", st.pos))
				continue
			}
			tried = append(tried, fmt.Sprintf("%s: %v", loc, err))
			if st.pos > 0 {
				r.log.Info("pull source failed mid-transfer; resuming from the next", zap.Stringer("id", id),
					zap.String("from", loc), zap.Int64("offset", st.pos), zap.Error(err))
			}
			break
		}
	}
	return &objectError{kind: pb.ErrorKind_ERROR_OBJECT_LOST,
		msg: fmt.Sprintf("object %s: no copy reachable from %d location(s): %s", id, len(locs), strings.Join(tried, "; "))}
}

// pullFrom streams the rest of the object from one source into st. A
// source that sends nothing for PullStallTimeout (paused, partitioned)
// fails like a dead one.
func (r *Raylet) pullFrom(ctx context.Context, loc string, st *pullState) error {
	cc, err := r.peers.get(loc)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := r.cfg.PullStallTimeout
	watchdog := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer watchdog.Stop()
	stream, err := pb.NewRayletClient(cc).GetObject(sctx, &pb.GetObjectRequest{ObjectId: st.id[:], Offset: st.pos},
		grpc.ForceCodecV2(pullCodec{st}))
	for err == nil {
		var c *pb.ObjectChunk
		if c, err = stream.Recv(); err != nil {
			break
		}
		if st.size < 0 {
			watchdog.Stop() // waiting for the pull budget is not the source's stall
			if err := r.startPull(ctx, st, c); err != nil {
				return err
			}
		}
		watchdog.Reset(stall)
		if c.Size != st.size {
			return fmt.Errorf("the source has %d bytes, another had %d", c.Size, st.size)
		}
		if c.Offset != st.pos {
			return fmt.Errorf("chunk at offset %d, expected %d", c.Offset, st.pos)
		}
		if err := checkChunk(c, st.pos, st.size); err != nil {
			return err
		}
		if len(c.Data) > 0 && &c.Data[0] != &st.buf[st.pos] { // else decoded in place
			copy(st.buf[st.pos:], c.Data)
		}
		st.pos += int64(len(c.Data))
		if st.pos == st.size {
			return nil
		}
	}
	switch {
	case errors.Is(context.Cause(sctx), errStalled):
		return fmt.Errorf("no data for %v at byte %d", stall, st.pos)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("stream ended at byte %d of %d", st.pos, st.size)
	}
	return rpcerr.FromStatus(err)
}

// startPull takes the first chunk's header: it waits for room in the pull
// budget and reserves the secondary copy.
func (r *Raylet) startPull(ctx context.Context, st *pullState, c *pb.ObjectChunk) error {
	if c.Size < 0 || c.Size > MaxObjectBytes {
		return fmt.Errorf("%w: size %d", ErrBadObject, c.Size)
	}
	st.size, st.format = c.Size, c.Format
	if c.JobId != "" {
		st.job = c.JobId
	}
	if c.OwnerAddress != "" {
		st.owner = c.OwnerAddress
	}
	// An object larger than the whole budget still goes, alone.
	st.held = min(st.size, r.pullBudget.capacity())
	if err := r.pullBudget.acquire(ctx, st.held); err != nil {
		st.held = 0
		return &localError{err}
	}
	buf, err := r.shm.Create(st.id, st.size, objectstore.CreateOptions{Format: int32(st.format), Secondary: true})
	if errors.Is(err, objectstore.ErrObjectExists) && r.shm.Locate(st.id).Tier != objectstore.Absent {
		return errAppeared
	}
	if err != nil {
		return &localError{err}
	}
	st.buf, st.created = buf, true
	return nil
}

// notifyOwner tells an object's owner that this node holds a copy now
// (best effort: a later reader can still pull from the primary).
func (r *Raylet) notifyOwner(owner string, id ids.ObjectID) {
	if owner == "" {
		return
	}
	r.objs.mu.Lock()
	defer r.objs.mu.Unlock()
	if r.objs.closed {
		return
	}
	r.wg.Add(1)
	go func() { // owned by the raylet: r.ctx bounds it, Close waits
		defer r.wg.Done()
		cc, err := r.peers.get(owner)
		if err == nil {
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			_, err = pb.NewCoreWorkerClient(cc).AddObjectLocation(ctx, &pb.AddObjectLocationRequest{ObjectId: id[:], Location: r.Address()})
			cancel()
		}
		if err != nil && r.ctx.Err() == nil {
			r.log.Debug("tell owner of a pulled copy", zap.Stringer("id", id), zap.String("owner", owner), zap.Error(err))
		}
	}()
}

// ---- the pull budget ---------------------------------------------------------

// byteBudget is a weighted semaphore over bytes, FIFO so a large pull is
// not starved by a stream of small ones.
type byteBudget struct {
	mu      sync.Mutex
	size    int64
	used    int64
	waiting []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newByteBudget(size int64) *byteBudget { return &byteBudget{size: max(size, 1)} }

func (b *byteBudget) capacity() int64 { return b.size }

func (b *byteBudget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if len(b.waiting) == 0 && b.used+n <= b.size {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiting = append(b.waiting, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.used -= n
			b.grantLocked()
		default:
			for i, x := range b.waiting {
				if x == w {
					b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
					break
				}
			}
			b.grantLocked() // the head may have changed
		}
		return ctx.Err()
	}
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.grantLocked()
}

func (b *byteBudget) grantLocked() {
	for len(b.waiting) > 0 && b.used+b.waiting[0].n <= b.size {
		w := b.waiting[0]
		b.waiting = b.waiting[1:]
		b.used += w.n
		close(w.ready)
	}
}

// ---- connections to other raylets and owners --------------------------------

// peerConns caches one client connection per address (raylets to pull
// from, owners to tell); Close closes them all.
type peerConns struct {
	token string
	tls   *tlsconfig.Source
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (p *peerConns) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, ErrClosed
	}
	if c := p.conns[addr]; c != nil {
		return c, nil
	}
	token := p.token
	c, err := grpc.NewClient(addr, append(DialOptions(), p.tls.DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))...)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
