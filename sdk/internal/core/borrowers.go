package core

// The borrower protocol: an object lives while its owner's own count is
// above zero or another process borrows it. As in Ray, a borrower is a
// process that holds a ref it does not own; unlike Ray's, where borrowers
// are reported back up the chain of task replies, here every borrower
// registers itself with the owner directly, before the ref it decoded
// can be used (one batched UpdateBorrowers call per owner and decode),
// so nested borrowing needs no bookkeeping in the middle of the chain.
// Whoever passes a ref on holds it until the receiver has registered:
//
//   - a task's caller pins the refs in its arguments, direct or inside
//     values, until the task ends; the task decodes them (registering)
//     before it runs;
//   - a value that holds refs holds them while it lives: its encoder
//     registers the value's owner as a borrower keyed by the value's
//     object (the Outer of a memstore.Borrow), before the value is
//     visible — Put registers itself, a worker registers the caller
//     of the task whose result it is — and the value's owner unregisters
//     when the value is freed (OnContainedFreed);
//   - a reader that decodes refs from a value registers before Get
//     returns, while the ref it read the value through still holds it.
//
// An owner pings its borrowers every second and forgets one that stopped
// answering (it died: its refs die with it). A raylet does not retire an
// idle worker that owns borrowed objects (Ping's borrowed_objects).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/memstore"
)

// ErrOwnerDied: the object's owner died (or cannot be reached), and its
// reference count with it.
var ErrOwnerDied = errors.New("ray: the object's owner died")

// Borrower liveness: an owner pings each borrower this often and forgets
// one after this many failed pings in a row.
const (
	borrowerPingEvery  = time.Second
	borrowerPingMisses = 3
	// borrowRegisterTimeout bounds a registration with an owner that does
	// not answer (it is then taken as dead).
	borrowRegisterTimeout = 30 * time.Second
)

// borrowTable is this process's side as a borrower: the objects it holds
// refs to and does not own, and the queues of registrations per owner.
type borrowTable struct {
	c *Worker

	mu     sync.Mutex
	refs   map[ids.ObjectID]*borrowed
	queues map[queueKey]*opQueue

	// acquired counts first borrows, so a worker can tell that a task
	// decoded refs (collectAfterTask).
	acquired atomic.Uint64
	gcQueued atomic.Bool
}

// borrowed is one object this process borrows by live refs.
type borrowed struct {
	owner string
	n     int           // live handles and pins (tasks, values)
	ready chan struct{} // closed when the owner answered the registration
	err   error         // set before ready closes: not found, owner died
	// via is the task whose result registers this borrow (its owner is
	// the task's caller, which pins it until then); viaSent once that
	// result was built.
	via     ids.TaskID
	viaSent bool
}

// closedCh is a ready channel for borrows that need no answer.
var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

type queueKey struct{ owner, borrower string }

// opQueue sends one (owner, borrower)'s operations in order, batched, one
// call in flight at a time: a removal never overtakes the add before it.
type opQueue struct {
	ops     []queuedOp
	running bool
}

type queuedOp struct {
	op   *pb.BorrowOp
	done func(err error) // nil for removals
}

func newBorrowTable(c *Worker) *borrowTable {
	return &borrowTable{c: c, refs: map[ids.ObjectID]*borrowed{}, queues: map[queueKey]*opQueue{}}
}

// acquire counts one more live ref to a borrowed object, registering this
// process with the owner on the first: the caller waits on the entry's
// ready before handing the ref out.
func (b *borrowTable) acquire(id ids.ObjectID, owner string) *borrowed {
	b.mu.Lock()
	e := b.refs[id]
	if e == nil {
		e = &borrowed{owner: owner, ready: make(chan struct{})}
		b.refs[id] = e
		b.acquired.Add(1)
		b.enqueueLocked(owner, b.c.address, &pb.BorrowOp{ObjectId: id[:]}, func(err error) {
			if err != nil {
				b.c.failBorrowed(id, owner, err)
			}
			b.mu.Lock()
			e.err = err
			b.mu.Unlock()
			close(e.ready)
		})
	}
	e.n++
	b.mu.Unlock()
	return e
}

// acquireVia counts one more live ref to an object of the running task's
// caller decoded from the task's arguments. A first one is not registered
// now: the caller pins the object until the task's result, which carries
// the registration (viaResult), so the task does not wait for a round
// trip per new ref.
func (b *borrowTable) acquireVia(id ids.ObjectID, owner string, tc *taskCtx) {
	b.mu.Lock()
	e := b.refs[id]
	if e == nil {
		e = &borrowed{owner: owner, ready: closedCh, via: tc.id}
		b.refs[id] = e
		b.acquired.Add(1)
	}
	e.n++
	b.mu.Unlock()
	tc.viaMu.Lock()
	tc.via = append(tc.via, id)
	tc.viaMu.Unlock()
}

// viaResult lists, for task tc's result, the objects of its caller it
// still borrows through it; they count as registered from then on.
func (b *borrowTable) viaResult(tc *taskCtx) [][]byte {
	tc.viaMu.Lock()
	via := tc.via
	tc.via = nil
	tc.viaMu.Unlock()
	if len(via) == 0 {
		return nil
	}
	var out [][]byte
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range via {
		if e := b.refs[id]; e != nil && e.via == tc.id && !e.viaSent {
			e.viaSent = true
			out = append(out, id[:])
		}
	}
	return out
}

// hold counts a pin on a borrowed object this process holds a ref to; it
// says whether it did (an object not borrowed here is not held).
func (b *borrowTable) hold(id ids.ObjectID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.refs[id]; e != nil {
		e.n++
		return true
	}
	return false
}

// release drops one live ref or pin; the last unregisters this process
// and forgets the object's cached value.
func (b *borrowTable) release(id ids.ObjectID) {
	b.mu.Lock()
	e := b.refs[id]
	if e == nil {
		b.mu.Unlock()
		return
	}
	if e.n--; e.n > 0 {
		b.mu.Unlock()
		return
	}
	delete(b.refs, id)
	failed := false
	select {
	case <-e.ready:
		failed = e.err != nil
	default:
	}
	switch {
	case e.via != (ids.TaskID{}) && !e.viaSent:
		// Dropped before its task's result: never registered.
	case e.via != (ids.TaskID{}):
		b.enqueueLocked(e.owner, b.c.address, &pb.BorrowOp{ObjectId: id[:], Remove: true, ViaTask: e.via[:]}, nil)
	case !failed:
		b.enqueueLocked(e.owner, b.c.address, &pb.BorrowOp{ObjectId: id[:], Remove: true}, nil)
	}
	b.mu.Unlock()
	b.c.mem.Forget(id)
}

// borrowGCDelay is how long after a task that borrowed refs a worker
// collects garbage, so that the refs the task dropped are released. At
// most one collection per delay: a worker with a large heap that is given
// new refs by every task does not collect more than once a second.
const borrowGCDelay = time.Second

// collectAfterTask runs the garbage collector shortly after a task that
// borrowed refs (acquired moved past before): a Go ref is released by a
// cleanup the collector runs, and an idle worker may not collect for a
// long time, keeping the owner from freeing what the task dropped. At
// most one collection is queued at a time.
func (b *borrowTable) collectAfterTask(before uint64) {
	if b.acquired.Load() == before || !b.gcQueued.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(borrowGCDelay, func() {
		b.gcQueued.Store(false)
		runtime.GC()
	})
}

// len is how many objects this process borrows.
func (b *borrowTable) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.refs)
}

func (b *borrowTable) enqueueLocked(owner, borrower string, op *pb.BorrowOp, done func(error)) {
	k := queueKey{owner, borrower}
	q := b.queues[k]
	if q == nil {
		q = &opQueue{}
		b.queues[k] = q
	}
	q.ops = append(q.ops, queuedOp{op: op, done: done})
	if !q.running {
		q.running = true
		b.c.spawn(func() { b.drain(k, q) })
	}
}

// drain sends a queue's operations until it is empty.
func (b *borrowTable) drain(k queueKey, q *opQueue) {
	for {
		b.mu.Lock()
		batch := q.ops
		q.ops = nil
		if len(batch) == 0 {
			q.running = false
			delete(b.queues, k)
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		req := &pb.UpdateBorrowersRequest{Borrower: k.borrower, Ops: make([]*pb.BorrowOp, len(batch))}
		for i, o := range batch {
			req.Ops[i] = o.op
		}
		notFound, err := b.c.sendBorrowOps(k.owner, req)
		for _, o := range batch {
			if o.done == nil {
				continue
			}
			switch {
			case err != nil:
				o.done(err)
			case notFound[string(o.op.ObjectId)]:
				id, _ := ids.ObjectFromBytes(o.op.ObjectId)
				o.done(fmt.Errorf("%w: object %s was released by its owner before this process registered as its borrower", ErrObjectNotFound, id))
			default:
				o.done(nil)
			}
		}
	}
}

// sendBorrowOps applies a batch at the owner: here when this process owns
// the objects, else by UpdateBorrowers. It returns the added objects the
// owner no longer had.
func (c *Worker) sendBorrowOps(owner string, req *pb.UpdateBorrowersRequest) (map[string]bool, error) {
	if owner == c.address {
		rep := c.applyBorrowOps(req)
		return notFoundSet(rep), nil
	}
	cc, err := c.conn(owner)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrOwnerDied, owner, err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, borrowRegisterTimeout)
	defer cancel()
	rep, err := pb.NewCoreWorkerClient(cc).UpdateBorrowers(ctx, req)
	if err != nil {
		if c.ctx.Err() != nil {
			return nil, fmt.Errorf("%w: shutting down", ErrNotInitialized)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrOwnerDied, owner, err)
	}
	return notFoundSet(rep), nil
}

func notFoundSet(rep *pb.UpdateBorrowersReply) map[string]bool {
	if len(rep.NotFound) == 0 {
		return nil
	}
	m := make(map[string]bool, len(rep.NotFound))
	for _, id := range rep.NotFound {
		m[string(id)] = true
	}
	return m
}

// UpdateBorrowers applies a borrower's registrations, in order.
func (c *Worker) UpdateBorrowers(_ context.Context, req *pb.UpdateBorrowersRequest) (*pb.UpdateBorrowersReply, error) {
	if req.Borrower == "" {
		return nil, status.Error(codes.InvalidArgument, "borrower is empty")
	}
	for i, op := range req.Ops {
		if _, err := ids.ObjectFromBytes(op.ObjectId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "ops[%d].object_id: %v", i, err)
		}
		if len(op.Outer) > 0 {
			if _, err := ids.ObjectFromBytes(op.Outer); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "ops[%d].outer: %v", i, err)
			}
		}
		if len(op.ViaTask) > 0 {
			if _, err := ids.TaskFromBytes(op.ViaTask); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "ops[%d].via_task: %v", i, err)
			}
		}
	}
	return c.applyBorrowOps(req), nil
}

func (c *Worker) applyBorrowOps(req *pb.UpdateBorrowersRequest) *pb.UpdateBorrowersReply {
	rep := &pb.UpdateBorrowersReply{}
	for _, op := range req.Ops {
		id, err := ids.ObjectFromBytes(op.ObjectId)
		if err != nil {
			continue
		}
		b := memstore.Borrow{Addr: req.Borrower}
		if len(op.Outer) > 0 {
			if b.Outer, err = ids.ObjectFromBytes(op.Outer); err != nil {
				continue
			}
		}
		if op.Remove && len(op.ViaTask) > 0 {
			if via, err := ids.TaskFromBytes(op.ViaTask); err == nil {
				c.mem.RemoveBorrowerVia(id, b, via)
			}
		} else if op.Remove {
			c.mem.RemoveBorrower(id, b)
		} else if !c.mem.AddBorrower(id, b) {
			rep.NotFound = append(rep.NotFound, op.ObjectId)
		}
	}
	return rep
}

// takeResultBorrows registers the borrowers a task's result reports (the
// worker kept objects of ours it decoded from the task's arguments);
// called before the task's arguments are unpinned.
func (c *Worker) takeResultBorrows(task ids.TaskID, res *pb.TaskResult) {
	if len(res.Borrowed) == 0 || res.Borrower == "" {
		return
	}
	b := memstore.Borrow{Addr: res.Borrower}
	for _, raw := range res.Borrowed {
		if id, err := ids.ObjectFromBytes(raw); err == nil {
			c.mem.AddBorrowerVia(id, b, task)
		}
	}
}

// failBorrowed makes a borrowed object whose registration failed read as
// that failure; when the owner could not be reached, the control plane is
// asked instead (it may have adopted the object: adoption.go).
func (c *Worker) failBorrowed(id ids.ObjectID, owner string, err error) {
	kind := pb.ErrorKind_ERROR_OWNER_DIED
	if errors.Is(err, ErrObjectNotFound) {
		kind = pb.ErrorKind_ERROR_OBJECT_NOT_FOUND
	}
	if _, added := c.mem.Fetching(id); !added {
		// A fetch is under way or done: it fails the same way.
		return
	}
	if kind == pb.ErrorKind_ERROR_OWNER_DIED && c.ctx.Err() == nil {
		c.spawn(func() {
			v, ferr := c.fetchFromOwner(ObjectKey{ID: id, Owner: owner})
			if ferr != nil {
				v = &pb.ObjectValue{Error: &pb.TaskError{Kind: kind, Message: err.Error()}}
			}
			c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{v})
		})
		return
	}
	c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{{Error: &pb.TaskError{Kind: kind, Message: err.Error()}}})
}

// registerValue registers holder as a borrower of every ref a value holds,
// keyed by the value's object outer, and waits until every owner has
// answered: the value may be handed out then. The caller keeps the refs
// reachable until it returns. Refs whose owner is gone are skipped (the
// reader of the value gets their error).
func (c *Worker) registerValue(holder string, outer ids.ObjectID, v *pb.ObjectValue) {
	if len(v.Contained) == 0 {
		return
	}
	c.commitContained(v)
	var wg sync.WaitGroup
	c.borrows.mu.Lock()
	for _, r := range v.Contained {
		wg.Add(1)
		c.borrows.enqueueLocked(r.Owner, holder, &pb.BorrowOp{ObjectId: r.ObjectId, Outer: outer[:]}, func(error) { wg.Done() })
	}
	c.borrows.mu.Unlock()
	waitGroup(c.ctx, &wg, borrowRegisterTimeout)
}

// commitContained waits until the lineage of the stored objects of this
// process's that v holds refs to is committed (commit before consume, as
// for task arguments): whoever reads v may need them rebuilt, by the
// control plane's adopter if this process dies first.
func (c *Worker) commitContained(v *pb.ObjectValue) {
	var producers []ids.TaskID
	for _, r := range v.Contained {
		if r.Owner != c.address {
			continue
		}
		id, err := ids.ObjectFromBytes(r.ObjectId)
		if err != nil {
			continue
		}
		if o := c.mem.Get(id); o != nil && o.IsReady() {
			if p, ok := c.lin.producerToWait(id, r.Owner, c.mem.Value(o)); ok {
				producers = append(producers, p)
			}
		}
	}
	c.lin.waitCommitted(c.ctx, producers)
}

// containedFreed unregisters this process as the borrower, by a value it
// owned, of the refs that value held.
func (c *Worker) containedFreed(outer ids.ObjectID, refs []*pb.ObjectRefInfo) {
	c.borrows.mu.Lock()
	defer c.borrows.mu.Unlock()
	for _, r := range refs {
		c.borrows.enqueueLocked(r.Owner, c.address, &pb.BorrowOp{ObjectId: r.ObjectId, Outer: outer[:], Remove: true}, nil)
	}
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-t.C:
	}
}

// borrowerLoop pings the processes that borrow objects owned here and
// forgets those that stopped answering, until the Worker closes.
func (c *Worker) borrowerLoop() {
	defer c.wg.Done()
	t := time.NewTicker(borrowerPingEvery)
	defer t.Stop()
	misses := map[string]int{}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		addrs := c.mem.BorrowerAddrs()
		alive := map[string]bool{}
		for _, a := range addrs {
			if a == c.address {
				continue
			}
			alive[a] = true
			if c.pingBorrower(a) {
				delete(misses, a)
				continue
			}
			if misses[a]++; misses[a] >= borrowerPingMisses {
				n := c.mem.DropBorrower(a)
				delete(misses, a)
				c.log.Info("a borrower stopped answering; its borrows are dropped", zap.String("borrower", a), zap.Int("objects", n))
			}
		}
		for a := range misses {
			if !alive[a] {
				delete(misses, a)
			}
		}
	}
}

func (c *Worker) pingBorrower(addr string) bool {
	cc, err := c.conn(addr)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(c.ctx, borrowerPingEvery)
	defer cancel()
	_, err = pb.NewCoreWorkerClient(cc).Ping(ctx, &pb.PingRequest{})
	return err == nil
}

// ---- Refs in values ---------------------------------------------------------

// refWriter is the encoder's buffer; it collects the refs encoded into it.
type refWriter struct {
	bytes.Buffer
	refs []*pb.ObjectRefInfo
}

// refReader is the decoder's input; it collects the registrations the
// refs decoded from it wait for.
type refReader struct {
	bytes.Reader
	pending []*borrowed
	// tc is the running task whose arguments these are, when its result
	// reports their borrows (acquireVia).
	tc *taskCtx
}

// Decode reads a msgpack value into v (a pointer). Refs inside it are
// registered with their owners before it returns.
func Decode(data []byte, v any) error { return decode(data, v, nil) }

// DecodeArg is Decode for an argument of the task running in ctx: refs of
// the task's caller in it are registered by the task's result.
func DecodeArg(ctx context.Context, data []byte, v any) error {
	tc, _ := ctx.Value(taskKey{}).(*taskCtx)
	if tc != nil && tc.caller == "" {
		tc = nil
	}
	return decode(data, v, tc)
}

func decode(data []byte, v any, tc *taskCtx) error {
	r := &refReader{tc: tc}
	r.Reset(data)
	dec := msgpack.GetDecoder()
	dec.UsePreallocateValues(true)
	dec.Reset(r)
	err := dec.Decode(v)
	msgpack.PutDecoder(dec)
	for _, e := range r.pending {
		waitBorrow(e)
	}
	return err
}

func waitBorrow(e *borrowed) {
	t := time.NewTimer(borrowRegisterTimeout + time.Second)
	defer t.Stop()
	select {
	case <-e.ready:
	case <-t.C:
	}
}

// EncodeRef writes a ref inside a value: its object and owner, or nil for
// the zero ref.
func EncodeRef(enc *msgpack.Encoder, id ids.ObjectID, owner string) error {
	if owner == "" {
		return enc.EncodeNil()
	}
	if err := enc.EncodeArrayLen(2); err != nil {
		return err
	}
	if err := enc.EncodeBytes(id[:]); err != nil {
		return err
	}
	if err := enc.EncodeString(owner); err != nil {
		return err
	}
	if w, ok := enc.Writer().(*refWriter); ok {
		w.refs = append(w.refs, &pb.ObjectRefInfo{ObjectId: id[:], Owner: owner})
	}
	return nil
}

// DecodeRef reads a ref written by EncodeRef and makes this process's
// handle of it: a counted reference when this process owns the object, a
// borrow otherwise. ok is false for the zero ref. A ref of an object its
// owner released reads ErrObjectNotFound at Get, one whose owner is gone
// ErrOwnerDied.
func DecodeRef(dec *msgpack.Decoder) (k ObjectKey, ok bool, err error) {
	code, err := dec.PeekCode()
	if err != nil {
		return k, false, err
	}
	if code == msgpcode.Nil {
		return k, false, dec.DecodeNil()
	}
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return k, false, fmt.Errorf("%w: object ref: %v", ErrBadArgument, err)
	}
	if n != 2 {
		return k, false, fmt.Errorf("%w: object ref has %d fields; want 2 (object_id, owner)", ErrBadArgument, n)
	}
	b, err := dec.DecodeBytes()
	if err != nil {
		return k, false, fmt.Errorf("%w: object ref field object_id: %v", ErrBadArgument, err)
	}
	if k.ID, err = ids.ObjectFromBytes(b); err != nil {
		return k, false, fmt.Errorf("%w: object ref field object_id: %v", ErrBadArgument, err)
	}
	if k.Owner, err = dec.DecodeString(); err != nil || k.Owner == "" {
		return k, false, fmt.Errorf("%w: object ref field owner: empty or not a string", ErrBadArgument)
	}
	c, err := Current()
	if err != nil {
		return k, false, err
	}
	if k.Owner == c.address {
		if len(c.mem.AddRefs([]ids.ObjectID{k.ID})) == 1 {
			k.H = c.newHandle(k.ID)
		}
		// Released: the key has no handle and Get finds nothing.
		return k, true, nil
	}
	r, isRef := dec.Buffered().(*refReader)
	if isRef && r.tc != nil && k.Owner == r.tc.caller {
		c.borrows.acquireVia(k.ID, k.Owner, r.tc)
		k.H = c.newBorrowHandle(k.ID)
		return k, true, nil
	}
	e := c.borrows.acquire(k.ID, k.Owner)
	k.H = c.newBorrowHandle(k.ID)
	if isRef {
		r.pending = append(r.pending, e)
	} else {
		waitBorrow(e)
	}
	return k, true, nil
}

// encodeValue is Encode's msgpack path.
func encodeValue(v any) (*pb.ObjectValue, error) {
	w := &refWriter{}
	enc := msgpack.GetEncoder()
	enc.Reset(w)
	err := enc.Encode(v)
	msgpack.PutEncoder(enc)
	if err != nil {
		return nil, fmt.Errorf("ray: encode %T: %w", v, err)
	}
	data := w.Bytes()
	if cap(data)-len(data) > 32 {
		// The buffer starts at 64 bytes: a small value (an int argument
		// of a million queued tasks) keeps an exact copy instead.
		data = bytes.Clone(data)
	}
	return &pb.ObjectValue{Data: data, Contained: w.refs}, nil
}
