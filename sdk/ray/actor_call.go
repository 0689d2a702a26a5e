package ray

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// Actor calls go from the caller straight to the actor's worker over one
// PushTasks stream per (caller, actor), so they run in the order they were
// made; the stream carries a sequence number per call. The caller learns
// where the actor lives, and when it moved or died, from a watch of the
// control plane's actor table (actorView).

// actorCall is one submitted call.
type actorCall struct {
	spec       *pb.TaskSpec
	tid        ids.TaskID
	returns    []ids.ObjectID
	deps       []int // argument indices that are refs, resolved before sending
	depKeys    []objectKey
	pinned     []ids.ObjectID // owned reference arguments (refcount.go)
	retries    int
	retriesSet bool
}

// actorClient sends one caller's calls to one actor.
type actorClient struct {
	c  *core
	id string

	// sendMu is held by whoever sends on the stream (the sender goroutine
	// or a caller on the direct path), so sends go out in seq order.
	sendMu sync.Mutex

	mu      sync.Mutex
	seq     uint64
	pending []*actorCall
	live    *liveStream   // nil while the actor is not reachable
	dead    *pb.TaskError // set once the actor is DEAD: new calls fail at once
	signal  chan struct{}
	// Calls cancelled after they left pending: the sender skips them, sends
	// their cancels (toCancel) to the worker, and never resends them.
	cancelled map[ids.TaskID]bool
	toCancel  []*pb.CancelTask
}

// cancel cancels one of this client's calls: a queued one fails at once,
// a sent one is cancelled by the worker.
func (ac *actorClient) cancel(tid ids.TaskID) {
	ac.mu.Lock()
	for i, call := range ac.pending {
		if call.tid == tid {
			ac.pending = append(ac.pending[:i:i], ac.pending[i+1:]...)
			ac.mu.Unlock()
			ac.c.failCancelledCall(call)
			return
		}
	}
	if ac.cancelled == nil {
		ac.cancelled = map[ids.TaskID]bool{}
	}
	ac.cancelled[tid] = true
	ac.toCancel = append(ac.toCancel, &pb.CancelTask{TaskId: tid[:]})
	ac.mu.Unlock()
	select {
	case ac.signal <- struct{}{}:
	default:
	}
}

// isCancelled says whether a call left pending and was cancelled since.
func (ac *actorClient) isCancelled(tid ids.TaskID) bool {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.cancelled[tid]
}

func submitActorCall(ctx context.Context, actorID string, m *actorMethod, args []argumenter) ([]objectKey, error) {
	c, err := current()
	if err != nil {
		return nil, err
	}
	if actorID == "" {
		return nil, fmt.Errorf("%w: a zero ActorHandle", ErrInvalidOption)
	}
	tc := c.taskOf(ctx)
	tid := ids.NewTaskID(c.jobID, tc.id, tc.counter.Add(1))
	call := &actorCall{tid: tid, spec: &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID, Function: m.class.name + "." + m.name,
		NumReturns: int32(m.nret), OwnerAddress: c.address,
		ActorId: actorID, Method: m.name, CallerId: c.address}}
	if call.deps, call.depKeys, err = encodeArgs(call.spec, args); err != nil {
		return nil, err
	}
	call.pinned = c.pinArgs(call.depKeys)
	runtime.KeepAlive(args)
	var keys []objectKey
	// Cancel finds the call's actor from its ref's object.
	call.returns, keys = c.newReturns(tid, m.nret, actorID)
	ac, err := c.actorClient(actorID)
	if err != nil {
		return nil, err
	}
	if ac.trySendNow(call) {
		return keys, nil
	}
	ac.mu.Lock()
	if ac.dead != nil {
		e := ac.dead
		ac.mu.Unlock()
		c.failCall(call, e)
		return keys, nil
	}
	ac.seq++
	call.spec.Seq = ac.seq
	ac.pending = append(ac.pending, call)
	ac.mu.Unlock()
	select {
	case ac.signal <- struct{}{}:
	default:
	}
	return keys, nil
}

// actorClient returns (starting it on first use) the sender to an actor.
func (c *core) actorClient(id string) (*actorClient, error) {
	c.mu.Lock()
	ac := c.actorClients[id]
	if ac != nil {
		c.mu.Unlock()
		return ac, nil
	}
	ac = &actorClient{c: c, id: id, signal: make(chan struct{}, 1)}
	c.actorClients[id] = ac
	c.wg.Add(1)
	c.mu.Unlock()
	if _, err := c.actorView(); err != nil {
		c.wg.Done()
		return nil, err
	}
	go func() {
		defer c.wg.Done()
		ac.run()
	}()
	return ac, nil
}

func (c *core) failCall(call *actorCall, e *pb.TaskError) {
	e = &pb.TaskError{Kind: e.Kind, Message: e.Message, Function: call.spec.Function}
	if tid, err := ids.TaskFromBytes(call.spec.TaskId); err == nil {
		e.TaskId = tid.String()
	}
	v := &pb.ObjectValue{Error: e}
	vals := make([]*pb.ObjectValue, len(call.returns))
	for i := range vals {
		vals[i] = v
	}
	c.mem.Complete(call.returns, vals)
	pinned := call.pinned
	call.pinned = nil
	c.unpinArgs(pinned)
}

// run sends the calls to each incarnation of the actor until it is DEAD.
func (ac *actorClient) run() {
	c := ac.c
	view, _ := c.actorView()
	var last *cpb.ActorInfo
	for {
		info, err := view.wait(c.ctx, ac.id, func(a *cpb.ActorInfo) bool {
			if a.State == cpb.ActorState_DEAD {
				return true
			}
			// DEPENDENCIES_UNREADY, PENDING_CREATION and RESTARTING all
			// wait: calls stay queued, in order, until an incarnation is
			// ALIVE (or the actor is DEAD, a failed constructor argument
			// included, and they fail with its cause).
			return a.State == cpb.ActorState_ALIVE && (last == nil || a.NumRestarts != last.NumRestarts || a.WorkerId != last.WorkerId)
		}, reconnectAfter)
		if errors.Is(err, errStillAlive) {
			// The stream broke but the control plane still has the same
			// worker ALIVE (a dropped connection, not a death): reconnect.
			info, err = view.current(ac.id), nil
		}
		if err != nil {
			return // the process is shutting down
		}
		if info.State == cpb.ActorState_DEAD {
			ac.die(&pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED,
				Message: fmt.Sprintf("actor %s (%s) is dead: %s", ac.id, info.ClassName, info.DeathCause)})
			return
		}
		last = info
		lost, err := ac.stream(info)
		if c.ctx.Err() != nil {
			return
		}
		// The stream broke: the worker died (or is unreachable). Calls it
		// may have run are resent only within MaxTaskRetries.
		var retry []*actorCall
		for _, call := range lost {
			if ac.isCancelled(call.tid) {
				c.failCancelledCall(call)
				continue
			}
			if call.retries != 0 {
				if call.retries > 0 {
					call.retries--
				}
				call.spec.Attempt++
				retry = append(retry, call)
				continue
			}
			c.failCall(call, &pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED,
				Message: fmt.Sprintf("actor %s (%s) died during the call (worker %s: %v) and MaxTaskRetries is exhausted", ac.id, info.ClassName, info.WorkerAddress, errOr(err))})
		}
		if len(retry) > 0 {
			ac.mu.Lock()
			ac.pending = append(retry, ac.pending...)
			ac.mu.Unlock()
		}
		c.log.Debug("actor stream ended; waiting for its next incarnation", zap.String("actor", ac.id), zap.Error(err))
	}
}

// die fails every pending call and every later one.
func (ac *actorClient) die(e *pb.TaskError) {
	ac.mu.Lock()
	ac.dead = e
	calls := ac.pending
	ac.pending = nil
	ac.mu.Unlock()
	for _, call := range calls {
		ac.c.failCall(call, e)
	}
}

// liveStream is the open stream to the actor's current incarnation.
type liveStream struct {
	stream   pb.CoreWorker_PushTasksClient
	info     *cpb.ActorInfo
	mu       sync.Mutex
	inflight []*actorCall // sent, not answered, in order
}

// takeLocked removes the call a result answers from inflight: results
// come in order, except a cancelled call's.
func (ls *liveStream) takeLocked(id []byte) *actorCall {
	for i, call := range ls.inflight {
		if string(call.spec.TaskId) == string(id) {
			if i == 0 {
				ls.inflight[0] = nil
				ls.inflight = ls.inflight[1:]
			} else {
				ls.inflight = append(ls.inflight[:i:i], ls.inflight[i+1:]...)
			}
			return call
		}
	}
	return nil
}

// send records calls as in flight and sends them; the caller holds sendMu.
func (ls *liveStream) send(calls []*actorCall, specs []*pb.TaskSpec) error {
	ls.mu.Lock()
	ls.inflight = append(ls.inflight, calls...)
	ls.mu.Unlock()
	return ls.stream.Send(&pb.PushTasksRequest{Tasks: specs})
}

// trySendNow sends a call from the caller's goroutine when nothing is
// queued before it and no send is under way: the synchronous-call path
// then skips the hand-off to the sender goroutine. It holds sendMu, so
// order stays the order of seq.
func (ac *actorClient) trySendNow(call *actorCall) bool {
	if len(call.deps) > 0 || !ac.sendMu.TryLock() {
		return false
	}
	defer ac.sendMu.Unlock()
	ac.mu.Lock()
	ls := ac.live
	if ac.dead != nil || ls == nil || len(ac.pending) > 0 {
		ac.mu.Unlock()
		return false
	}
	ac.seq++
	call.spec.Seq = ac.seq
	ac.mu.Unlock()
	call.retries, call.retriesSet = int(ls.info.MaxTaskRetries), true
	// A failed send leaves the call in flight: the sender goroutine sees
	// the stream end and retries or fails it with the rest.
	_ = ls.send([]*actorCall{call}, []*pb.TaskSpec{call.spec})
	return true
}

// stream pushes calls to one incarnation until its stream breaks; it
// returns the calls sent and not answered.
func (ac *actorClient) stream(info *cpb.ActorInfo) ([]*actorCall, error) {
	c := ac.c
	cc, err := c.conn(info.WorkerAddress)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	stream, err := pb.NewCoreWorkerClient(cc).PushTasks(ctx)
	if err != nil {
		return nil, err
	}
	ls := &liveStream{stream: stream, info: info}
	recvDone := make(chan error, 1)
	go func() { // ends with the stream, which ends before stream returns
		for {
			reply, err := stream.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			ls.mu.Lock()
			batch := make([]*actorCall, 0, len(reply.Results))
			results := make([]*pb.TaskResult, 0, len(reply.Results))
			for _, res := range reply.Results {
				if call := ls.takeLocked(res.TaskId); call != nil {
					batch = append(batch, call)
					results = append(results, res)
				}
			}
			ls.mu.Unlock()
			for i, call := range batch {
				c.finishCall(call, results[i])
			}
		}
	}()
	ac.sendMu.Lock()
	ac.mu.Lock()
	ac.live = ls
	ac.mu.Unlock()
	ac.sendMu.Unlock()
	lostAll := func(err error) ([]*actorCall, error) {
		// Under sendMu, so no caller adds to inflight after it is read.
		ac.sendMu.Lock()
		ac.mu.Lock()
		ac.live = nil
		ac.mu.Unlock()
		ac.sendMu.Unlock()
		cancel()
		if err == nil {
			err = <-recvDone
		} else {
			<-recvDone
		}
		ls.mu.Lock()
		defer ls.mu.Unlock()
		return ls.inflight, err
	}
	for {
		ac.sendMu.Lock()
		ac.mu.Lock()
		n := min(len(ac.pending), maxBatch)
		batch := ac.pending[:n:n]
		ac.pending = ac.pending[n:]
		cancels := ac.toCancel
		ac.toCancel = nil
		ac.mu.Unlock()
		if len(cancels) > 0 {
			if err := ls.stream.Send(&pb.PushTasksRequest{Cancel: cancels}); err != nil {
				ac.sendMu.Unlock()
				return lostAll(nil)
			}
		}
		if n == 0 {
			ac.sendMu.Unlock()
			select {
			case <-ac.signal:
				continue
			case err := <-recvDone:
				recvDone <- err
				return lostAll(err)
			case <-c.ctx.Done():
				return lostAll(c.ctx.Err())
			}
		}
		specs := make([]*pb.TaskSpec, 0, n)
		sent := make([]*actorCall, 0, n)
		for _, call := range batch {
			if !call.retriesSet {
				call.retries, call.retriesSet = int(info.MaxTaskRetries), true
			}
			if !ac.resolve(call) {
				continue // its argument failed, and so did it; the rest go on in order
			}
			if ac.isCancelled(call.tid) {
				c.failCancelledCall(call)
				continue
			}
			specs = append(specs, call.spec)
			sent = append(sent, call)
		}
		var err error
		if len(specs) > 0 {
			err = ls.send(sent, specs)
		}
		ac.sendMu.Unlock()
		if err != nil {
			return lostAll(nil)
		}
	}
}

// resolve waits for a call's reference arguments (in call order, so order
// is kept); false when one failed (the call is then failed).
func (ac *actorClient) resolve(call *actorCall) bool {
	c := ac.c
	var producers []ids.TaskID
	for j, i := range call.deps {
		if call.spec.Args[i].Value != nil {
			continue
		}
		k := call.depKeys[j]
		ob := c.objectFor(k)
		select {
		case <-ob.Ready():
		case <-c.ctx.Done():
			return false
		}
		if e := ob.Raw().Error; e != nil {
			c.failCall(call, e)
			return false
		}
		v := c.mem.Value(ob)
		call.spec.Args[i].Value = v
		if p, ok := c.producerToWait(k.id, k.owner, v); ok {
			producers = append(producers, p)
		}
	}
	// The actor consumes outputs of this owner's tasks: their lineage
	// commits first (lineage.go).
	c.waitCommitted(c.ctx, producers)
	return true
}

func (c *core) finishCall(call *actorCall, res *pb.TaskResult) {
	if res.Error != nil {
		c.failCall(call, res.Error)
		return
	}
	c.completeReturns(call.returns, call.spec.Function, res, "the call")
	c.mu.Lock()
	pinned := call.pinned
	call.pinned = nil
	c.mu.Unlock()
	c.unpinArgs(pinned)
}

// ---- the actor view ------------------------------------------------------------

// actorView is this process's copy of the actor table, kept by a watch.
type actorView struct {
	mu      sync.Mutex
	actors  map[string]*cpb.ActorInfo
	synced  bool
	changed chan struct{}
}

func (v *actorView) update(r *cpb.WatchResponse) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r.Reset_ {
		v.actors = map[string]*cpb.ActorInfo{}
	}
	for _, e := range r.Events {
		if e.Actor != nil {
			v.actors[e.Actor.ActorId] = e.Actor
		}
	}
	v.synced = true
	close(v.changed)
	v.changed = make(chan struct{})
}

// reconnectAfter is how long a caller whose stream broke waits for the
// control plane to report a new incarnation (or the death) before it
// reconnects to the same worker.
const reconnectAfter = 3 * time.Second

var errStillAlive = errors.New("ray: the actor is still ALIVE at the same worker")

// wait returns the actor once ok accepts it; after patience (when it is
// not the first wait) with the actor ALIVE but not accepted, errStillAlive.
func (v *actorView) wait(ctx context.Context, id string, ok func(*cpb.ActorInfo) bool, patience time.Duration) (*cpb.ActorInfo, error) {
	timer := time.NewTimer(patience)
	defer timer.Stop()
	for {
		v.mu.Lock()
		a := v.actors[id]
		ch := v.changed
		v.mu.Unlock()
		if a != nil && ok(a) {
			return a, nil
		}
		select {
		case <-ch:
		case <-timer.C:
			if a != nil && a.State == cpb.ActorState_ALIVE {
				return nil, errStillAlive
			}
			timer.Reset(patience)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// current returns the view's copy of an actor.
func (v *actorView) current(id string) *cpb.ActorInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.actors[id]
}

// actorView returns the view, starting its watch on first use.
func (c *core) actorView() (*actorView, error) {
	cp, err := c.controlPlane()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.actors != nil {
		return c.actors, nil
	}
	v := &actorView{actors: map[string]*cpb.ActorInfo{}, changed: make(chan struct{})}
	c.actors = v
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := cp.Watch(c.ctx, &cpb.WatchRequest{Kinds: []cpb.EventKind{cpb.EventKind_EVENT_ACTOR}}, func(r *cpb.WatchResponse) error {
			v.update(r)
			return nil
		})
		if err != nil && c.ctx.Err() == nil {
			c.log.Error("actor watch ended", zap.Error(err))
		}
	}()
	return v, nil
}

// controlPlane returns the process's control-plane client: the driver's,
// or in a worker one made from the heads its raylet passed down.
func (c *core) controlPlane() (*cpclient.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cp != nil {
		return c.cp, nil
	}
	heads := os.Getenv(workerpool.EnvHeads)
	if heads == "" {
		return nil, fmt.Errorf("%w: no control plane address in this process", ErrNotInitialized)
	}
	cp, err := cpclient.New(cpclient.Config{Addresses: strings.Split(heads, ","), Token: c.token, Logger: c.log})
	if err != nil {
		return nil, err
	}
	c.cp, c.ownCP = cp, true
	return cp, nil
}
