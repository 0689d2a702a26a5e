package core

// Streaming generators (Ray's ObjectRefGenerator): a task that yields
// items one by one. The worker stores each item like a task return
// (inline when small, in its node's store when large) and reports it to
// the owner at once (ReportGeneratorItem, Ray's
// ReportGeneratorItemReturns); the owner makes it an owned object, queues
// its ref for the consumer and acks. The producer's yield waits for the
// ack, so every item is registered before the task's result (return 1:
// the item count) reaches the owner: when that return is ready the
// stream is complete. With backpressure n the owner holds a report while
// n items wait unconsumed. A retried attempt yields from the start again;
// the owner drops the items whose index it has, so the consumer sees
// each once. Item i is the task's return i+2.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// ErrGeneratorDone is what Next returns after a generator's last item
// (as io.EOF ends a reader).
var ErrGeneratorDone = errors.New("ray: generator done")

// genStream is the owner's side of one generator task: the refs of the
// items reported so far, how many the consumer took, and the end.
type genStream struct {
	mu    sync.Mutex
	items []ObjectKey // items[i] is zeroed once taken (the ref is the consumer's then)
	taken int
	// backpressure holds a report while this many items are unconsumed
	// (0: never).
	backpressure int
	actor        string
	held         int // reports waiting for the consumer (tests)
	// task is the generator task when its lineage is kept (a normal
	// task's; nil for an actor's): lost items are rebuilt by running it
	// again (recovery.go).
	task   *task
	closed bool
	final  error // ErrGeneratorDone or the task's error, once seen
	// changed is closed (and replaced) whenever any of the above changes.
	changed chan struct{}
}

func (s *genStream) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// genTable is the owner's open generator streams by task.
type genTable struct {
	mu      sync.Mutex
	streams map[ids.TaskID]*genStream
}

func (t *genTable) open(tid ids.TaskID, backpressure int, actor string, task *task) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.streams == nil {
		t.streams = map[ids.TaskID]*genStream{}
	}
	t.streams[tid] = &genStream{backpressure: backpressure, actor: actor, changed: make(chan struct{}), task: task}
}

func (t *genTable) get(tid ids.TaskID) *genStream {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.streams[tid]
}

func (t *genTable) drop(tid ids.TaskID) *genStream {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[tid]
	delete(t.streams, tid)
	return s
}

// ReportGeneratorItem takes an item a worker yielded for a generator
// task this process owns and acks it (after the consumer caught up, with
// backpressure).
func (c *Worker) ReportGeneratorItem(ctx context.Context, req *pb.GeneratorItemRequest) (*pb.GeneratorItemReply, error) {
	tid, err := ids.TaskFromBytes(req.TaskId)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "task_id: %v", err)
	}
	if req.Value == nil {
		return nil, status.Error(codes.InvalidArgument, "value: missing")
	}
	if req.Index > 1<<31 {
		return nil, status.Errorf(codes.InvalidArgument, "index: %d is out of range", req.Index)
	}
	idx := int(req.Index)
	s := c.gens.get(tid)
	if s == nil {
		if c.rebuiltItem(ids.ReturnID(tid, uint32(idx+2)), req.Value) {
			return &pb.GeneratorItemReply{}, nil
		}
		return nil, status.Errorf(codes.NotFound, "generator task %s: no consumer here (it ended or was dropped)", tid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.closed:
			return nil, status.Errorf(codes.NotFound, "generator task %s: its consumer dropped it", tid)
		case idx < len(s.items):
			// A retried attempt yields from the start: the consumer has
			// it, unless it was lost and this run rebuilds it.
			if id := ids.ReturnID(tid, uint32(idx+2)); !c.rebuiltItem(id, req.Value) {
				c.dropRepeat(id, req.Value.Location)
			}
			return &pb.GeneratorItemReply{}, nil
		case idx > len(s.items):
			return nil, status.Errorf(codes.FailedPrecondition, "index: item %d of %s before item %d", idx, tid, len(s.items))
		}
		if s.backpressure <= 0 || len(s.items)-s.taken < s.backpressure {
			break
		}
		// Hold the producer's yield until the consumer takes an item.
		ch := s.changed
		s.held++
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-c.ctx.Done():
		}
		s.mu.Lock()
		s.held--
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		if c.ctx.Err() != nil {
			return nil, status.Error(codes.Unavailable, "the owner is shutting down")
		}
	}
	id := ids.ReturnID(tid, uint32(idx+2))
	c.mem.NewOwned([]ids.ObjectID{id}, s.actor)
	k := ObjectKey{ID: id, Owner: c.address, H: c.newHandle(id)}
	if s.task != nil {
		// A task that takes the item finds its producer through the ref,
		// and a lost item its generator's lineage.
		k.H.producer = s.task
		c.lin.itemMade(s.task, idx)
	}
	c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{req.Value})
	s.items = append(s.items, k)
	s.signal()
	return &pb.GeneratorItemReply{}, nil
}

// rebuiltItem completes an item a rebuild of its generator waits for
// (recovery.go renewed it) with the value the new run yielded; false when
// the item is not waited for.
func (c *Worker) rebuiltItem(id ids.ObjectID, v *pb.ObjectValue) bool {
	o := c.mem.Get(id)
	if o == nil || !o.Owned() || o.IsReady() {
		return false
	}
	c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{v})
	return true
}

// dropRepeat frees the copy a retried attempt stored of an item the
// owner has already, when it is on another node than the item's copies
// (on the same node the store kept the first one).
func (c *Worker) dropRepeat(id ids.ObjectID, loc string) {
	if loc == "" {
		return
	}
	if o := c.mem.Get(id); o != nil {
		if v := c.mem.Value(o); v.Location == loc || slices.Contains(v.Copies, loc) {
			return
		}
	}
	c.spawn(func() {
		cc, err := c.conn(loc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		if _, err := pb.NewRayletClient(cc).FreeObjects(ctx, &pb.FreeObjectsRequest{ObjectIds: [][]byte{id[:]}}); err != nil {
			c.log.Debug("free a generator item's repeat failed", zap.String("raylet", loc), zap.Error(err))
		}
	})
}

// Generator is the consumer's side of a generator task: end is its
// return 1 (the item count, or the task's error).
type Generator struct {
	c   *Worker
	tid ids.TaskID
	end ObjectKey
	s   *genStream
}

// OpenGenerator returns the stream of the generator task whose return 1
// is end (from Submit or SubmitActorCall of a generator).
func (c *Worker) OpenGenerator(end ObjectKey) (*Generator, error) {
	tid := end.ID.Task()
	s := c.gens.get(tid)
	if s == nil {
		return nil, fmt.Errorf("%w: task %s is not a generator of this process", ErrInvalidOption, tid)
	}
	return &Generator{c: c, tid: tid, end: end, s: s}, nil
}

// Next returns the next item's ref as soon as the task reported it;
// after the last, ErrGeneratorDone, or the task's error if it failed
// (after the items it yielded).
func (g *Generator) Next(ctx context.Context) (ObjectKey, error) {
	s := g.s
	endObj := g.c.objectFor(g.end)
	for {
		s.mu.Lock()
		if s.taken < len(s.items) {
			k := s.items[s.taken]
			s.items[s.taken] = ObjectKey{}
			s.taken++
			s.signal()
			s.mu.Unlock()
			return k, nil
		}
		if s.final != nil {
			err := s.final
			s.mu.Unlock()
			return ObjectKey{}, err
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
			continue
		case <-ctx.Done():
			return ObjectKey{}, ctx.Err()
		case <-endObj.Ready():
		}
		// The task ended: every item it yielded was registered before its
		// result came (each yield waits for its ack).
		s.mu.Lock()
		more := s.taken < len(s.items)
		s.mu.Unlock()
		if more {
			continue
		}
		final := g.c.endOf(ctx, g.end, s)
		if final == nil {
			continue
		}
		if ctx.Err() != nil {
			return ObjectKey{}, final
		}
		s.mu.Lock()
		s.final = final
		s.mu.Unlock()
		g.c.gens.drop(g.tid)
		return ObjectKey{}, final
	}
}

// endOf reads a generator's end: ErrGeneratorDone, the task's error, or
// nil when items it counted are still to come.
func (c *Worker) endOf(ctx context.Context, end ObjectKey, s *genStream) error {
	var n int
	err := c.Read(ctx, end.ID, end.Owner, func(data []byte, _ pb.Format, _ bool) error {
		return msgpack.Unmarshal(data, &n)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	got := len(s.items)
	s.mu.Unlock()
	if got < n {
		return fmt.Errorf("%w: the generator counted %d items, %d were reported", ErrObjectLost, n, got)
	}
	return ErrGeneratorDone
}

// Close forgets the stream: reports still coming are refused (the
// producer's yield fails) and the items not taken are released with
// their refs.
func (g *Generator) Close() {
	s := g.c.gens.drop(g.tid)
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closed = true
	untaken := s.items[s.taken:]
	s.items = s.items[:s.taken]
	s.signal()
	s.mu.Unlock()
	for _, k := range untaken {
		k.H.Release()
	}
}

// Stats says how many items were reported and taken and how many reports
// wait for the consumer (backpressure).
func (g *Generator) Stats() (reported, taken, held int) {
	g.s.mu.Lock()
	defer g.s.mu.Unlock()
	return len(g.s.items), g.s.taken, g.s.held
}

// genReporter is a worker's side of a running generator task: it stores
// and reports each item to the owner.
type genReporter struct {
	c       *Worker
	tid     ids.TaskID
	owner   string
	attempt int32
	mu      sync.Mutex
	n       int
}

type genKey struct{}

// withGenerator makes ctx the context of a generator task's run.
func (c *Worker) withGenerator(ctx context.Context, spec *pb.TaskSpec, tid ids.TaskID) context.Context {
	return context.WithValue(ctx, genKey{}, &genReporter{c: c, tid: tid, owner: spec.OwnerAddress, attempt: spec.Attempt})
}

// Yield stores v as the next item of the generator task running in ctx
// and reports it to the owner; it returns once the owner acked (with
// backpressure, once the consumer caught up), or the error that stops
// the generator (cancelled, the owner gone).
func Yield(ctx context.Context, v any) error {
	r, ok := ctx.Value(genKey{}).(*genReporter)
	if !ok {
		return fmt.Errorf("%w: yield outside a generator task", ErrInvalidOption)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	ov, err := Encode(v)
	if err != nil {
		return fmt.Errorf("generator item %d: %w", r.n, err)
	}
	item := ids.ReturnID(r.tid, uint32(r.n+2))
	if ov, err = r.c.objs.Store(ctx, item, r.owner, ov); err != nil {
		return fmt.Errorf("generator item %d: %w", r.n, err)
	}
	// The item's owner borrows the refs in it from now on.
	r.c.registerValue(r.owner, item, ov)
	runtime.KeepAlive(v)
	cc, err := r.c.conn(r.owner)
	if err != nil {
		return err
	}
	_, err = pb.NewCoreWorkerClient(cc).ReportGeneratorItem(ctx, &pb.GeneratorItemRequest{TaskId: r.tid[:],
		Index: uint64(r.n), Value: ov, Attempt: r.attempt})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("generator item %d: report to owner %s: %w", r.n, r.owner, err)
	}
	r.n++
	return nil
}

// Yielded is how many items the generator task running in ctx yielded.
func Yielded(ctx context.Context) int {
	r, ok := ctx.Value(genKey{}).(*genReporter)
	if !ok {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
