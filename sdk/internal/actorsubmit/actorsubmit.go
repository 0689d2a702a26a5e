// Package actorsubmit is an owner's actor task submitter (Ray's
// ActorTaskSubmitter): calls go from the caller straight to the actor's
// worker over one PushTasks stream per (caller, actor), so they run in the
// order they were made (each carries a sequence number). The caller learns
// where the actor lives, and when it restarted elsewhere or died, from a
// watch of the control plane's actor table (View). When a stream breaks,
// the calls in flight are resent to the next incarnation within their
// MaxTaskRetries, and fail otherwise; every call to a DEAD actor fails at
// once with the cause. A queued call can be cancelled (it fails at once);
// a sent one is cancelled by the worker.
//
// The submitter owns its clients under its own locks and reports through
// Handler, never holding a lock while it calls out.
package actorsubmit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// Call is one actor call.
type Call struct {
	Spec *pb.TaskSpec
	ID   ids.TaskID
	// Unresolved: the call has reference arguments Handler.Resolve fills
	// before it is sent (in call order, so order is kept).
	Unresolved bool
	// Data is the owner's own record of the call.
	Data any

	retries    int
	retriesSet bool
}

// Handler is how the submitter reports what became of a call.
type Handler interface {
	// Finished: the actor answered (res.Error is set when the call failed
	// there, or was cancelled).
	Finished(c *Call, res *pb.TaskResult)
	// Failed: the call cannot run (the actor is dead, or the call was
	// cancelled or lost with its worker and may not be retried).
	Failed(c *Call, e *pb.TaskError)
	// Resolve fills the call's reference arguments, waiting for them; it
	// returns false when one failed (having failed the call) or ctx ended.
	Resolve(ctx context.Context, c *Call) bool
}

// WorkerDialer gives the client of an actor's worker by address.
type WorkerDialer func(addr string) (pb.CoreWorkerClient, error)

// WatchFunc watches the control plane's actor table from the start until
// ctx ends, calling fn with each batch of changes (a reset first).
type WatchFunc func(ctx context.Context, fn func(*cpb.WatchResponse) error) error

// Config wires a Submitter.
type Config struct {
	Dial    WorkerDialer
	Watch   WatchFunc
	Handler Handler
	Log     *zap.Logger
	// MaxBatch bounds the calls sent in one message (default 128).
	MaxBatch int
	// ReconnectAfter is how long a caller whose stream broke waits for the
	// control plane to report a new incarnation (or the death) before it
	// reconnects to the same worker (default 3 s).
	ReconnectAfter time.Duration
}

// Submitter sends one process's calls to every actor it calls.
type Submitter struct {
	cfg  Config
	view *View

	mu      sync.Mutex
	clients map[string]*client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a submitter and its watch of the actor table; Close stops it.
func New(cfg Config) *Submitter {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 128
	}
	if cfg.ReconnectAfter <= 0 {
		cfg.ReconnectAfter = 3 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	s := &Submitter{cfg: cfg, clients: map[string]*client{}, view: newView()}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := cfg.Watch(s.ctx, func(r *cpb.WatchResponse) error {
			s.view.update(r)
			return nil
		})
		if err != nil && s.ctx.Err() == nil {
			cfg.Log.Error("actor watch ended", zap.Error(err))
		}
	}()
	return s
}

// Close stops every client and the watch, and waits for them.
func (s *Submitter) Close() {
	s.cancel()
	s.wg.Wait()
}

// View is the submitter's copy of the actor table.
func (s *Submitter) View() *View { return s.view }

// Submit queues a call to actor id (sending it at once from the caller's
// goroutine when nothing waits before it).
func (s *Submitter) Submit(id string, call *Call) {
	ac := s.client(id)
	if ac.trySendNow(call) {
		return
	}
	ac.mu.Lock()
	if ac.dead != nil {
		e := ac.dead
		ac.mu.Unlock()
		s.cfg.Handler.Failed(call, e)
		return
	}
	ac.seq++
	call.Spec.Seq = ac.seq
	ac.pending = append(ac.pending, call)
	ac.mu.Unlock()
	ac.wake()
}

// Cancel cancels a call to actor id: a queued one fails at once, a sent
// one is cancelled by the worker (its answer says so).
func (s *Submitter) Cancel(id string, task ids.TaskID) {
	s.mu.Lock()
	ac := s.clients[id]
	s.mu.Unlock()
	if ac != nil {
		ac.cancel(task)
	}
}

// Dead fails every queued and later call to actor id with e (it was
// killed for good: the caller need not wait for the watch to say so).
func (s *Submitter) Dead(id string, e *pb.TaskError) {
	s.client(id).die(e)
}

// client returns (starting it on first use) the sender to an actor.
func (s *Submitter) client(id string) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	ac := s.clients[id]
	if ac != nil {
		return ac
	}
	ac = &client{s: s, id: id, signal: make(chan struct{}, 1)}
	s.clients[id] = ac
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ac.run()
	}()
	return ac
}

// ---- one actor ------------------------------------------------------------------

// client sends one caller's calls to one actor.
type client struct {
	s  *Submitter
	id string

	// sendMu is held by whoever sends on the stream (the sender goroutine
	// or a caller on the direct path), so sends go out in seq order.
	sendMu sync.Mutex

	mu      sync.Mutex
	seq     uint64
	pending []*Call
	live    *liveStream   // nil while the actor is not reachable
	dead    *pb.TaskError // set once the actor is DEAD: new calls fail at once
	signal  chan struct{}
	// Calls cancelled after they left pending: the sender skips them, sends
	// their cancels (toCancel) to the worker, and never resends them.
	cancelled map[ids.TaskID]bool
	toCancel  []*pb.CancelTask
}

func (ac *client) wake() {
	select {
	case ac.signal <- struct{}{}:
	default:
	}
}

func cancelledError(c *Call) *pb.TaskError {
	return &pb.TaskError{Kind: pb.ErrorKind_ERROR_TASK_CANCELLED, Function: c.Spec.Function, Message: "task cancelled before it ran"}
}

func (ac *client) cancel(task ids.TaskID) {
	ac.mu.Lock()
	for i, call := range ac.pending {
		if call.ID == task {
			ac.pending = append(ac.pending[:i:i], ac.pending[i+1:]...)
			ac.mu.Unlock()
			ac.s.cfg.Handler.Failed(call, cancelledError(call))
			return
		}
	}
	if ac.cancelled == nil {
		ac.cancelled = map[ids.TaskID]bool{}
	}
	ac.cancelled[task] = true
	ac.toCancel = append(ac.toCancel, &pb.CancelTask{TaskId: task[:]})
	ac.mu.Unlock()
	ac.wake()
}

// isCancelled says whether a call left pending and was cancelled since.
func (ac *client) isCancelled(task ids.TaskID) bool {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.cancelled[task]
}

// run sends the calls to each incarnation of the actor until it is DEAD.
func (ac *client) run() {
	s := ac.s
	var last *cpb.ActorInfo
	for {
		ac.mu.Lock()
		dead := ac.dead != nil
		ac.mu.Unlock()
		if dead {
			return // Dead: every call fails at once, none is sent
		}
		info, err := s.view.wait(s.ctx, ac.id, func(a *cpb.ActorInfo) bool {
			if a.State == cpb.ActorState_DEAD {
				return true
			}
			// DEPENDENCIES_UNREADY, PENDING_CREATION and RESTARTING all
			// wait: calls stay queued, in order, until an incarnation is
			// ALIVE (or the actor is DEAD, a failed constructor argument
			// included, and they fail with its cause).
			return a.State == cpb.ActorState_ALIVE && (last == nil || a.NumRestarts != last.NumRestarts || a.WorkerId != last.WorkerId)
		}, s.cfg.ReconnectAfter)
		if errors.Is(err, errStillAlive) {
			// The stream broke but the control plane still has the same
			// worker ALIVE (a dropped connection, not a death): reconnect.
			info, err = s.view.Current(ac.id), nil
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
		if s.ctx.Err() != nil {
			return
		}
		// The stream broke: the worker died (or is unreachable). Calls it
		// may have run are resent only within MaxTaskRetries.
		var retry []*Call
		for _, call := range lost {
			if ac.isCancelled(call.ID) {
				s.cfg.Handler.Failed(call, cancelledError(call))
				continue
			}
			if call.retries != 0 {
				if call.retries > 0 {
					call.retries--
				}
				call.Spec.Attempt++
				retry = append(retry, call)
				continue
			}
			s.cfg.Handler.Failed(call, &pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED,
				Message: fmt.Sprintf("actor %s (%s) died during the call (worker %s: %v) and MaxTaskRetries is exhausted", ac.id, info.ClassName, info.WorkerAddress, errOr(err))})
		}
		if len(retry) > 0 {
			ac.mu.Lock()
			ac.pending = append(retry, ac.pending...)
			ac.mu.Unlock()
		}
		s.cfg.Log.Debug("actor stream ended; waiting for its next incarnation", zap.String("actor", ac.id), zap.Error(err))
	}
}

func errOr(err error) error {
	if err == nil {
		return errors.New("reply incomplete")
	}
	return err
}

// die fails every pending call and every later one.
func (ac *client) die(e *pb.TaskError) {
	ac.mu.Lock()
	ac.dead = e
	calls := ac.pending
	ac.pending = nil
	ac.mu.Unlock()
	for _, call := range calls {
		ac.s.cfg.Handler.Failed(call, e)
	}
}

// liveStream is the open stream to the actor's current incarnation.
type liveStream struct {
	stream   pb.CoreWorker_PushTasksClient
	info     *cpb.ActorInfo
	mu       sync.Mutex
	inflight []*Call // sent, not answered, in order
}

// takeLocked removes the call a result answers from inflight: results
// come in order, except a cancelled call's.
func (ls *liveStream) takeLocked(id []byte) *Call {
	for i, call := range ls.inflight {
		if string(call.Spec.TaskId) == string(id) {
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
func (ls *liveStream) send(calls []*Call, specs []*pb.TaskSpec) error {
	ls.mu.Lock()
	ls.inflight = append(ls.inflight, calls...)
	ls.mu.Unlock()
	return ls.stream.Send(&pb.PushTasksRequest{Tasks: specs})
}

// errMoved ends a stream whose actor the control plane says died or moved.
var errMoved = errors.New("actorsubmit: the actor died or moved to another worker")

// requeue puts calls taken from pending back at its front, in order.
func (ac *client) requeue(calls []*Call) {
	if len(calls) == 0 {
		return
	}
	ac.mu.Lock()
	ac.pending = append(append([]*Call(nil), calls...), ac.pending...)
	ac.mu.Unlock()
}

// trySendNow sends a call from the caller's goroutine when nothing is
// queued before it and no send is under way: the synchronous-call path
// then skips the hand-off to the sender goroutine. It holds sendMu, so
// order stays the order of seq.
func (ac *client) trySendNow(call *Call) bool {
	if call.Unresolved || !ac.sendMu.TryLock() {
		return false
	}
	defer ac.sendMu.Unlock()
	ac.mu.Lock()
	ls := ac.live
	if ac.dead != nil || ls == nil || len(ac.pending) > 0 || ac.s.view.state(ls.info) != here {
		ac.mu.Unlock()
		return false
	}
	ac.seq++
	call.Spec.Seq = ac.seq
	ac.mu.Unlock()
	call.retries, call.retriesSet = int(ls.info.MaxTaskRetries), true
	// A failed send leaves the call in flight: the sender goroutine sees
	// the stream end and retries or fails it with the rest.
	_ = ls.send([]*Call{call}, []*pb.TaskSpec{call.Spec})
	return true
}

// stream pushes calls to one incarnation until its stream breaks; it
// returns the calls sent and not answered.
func (ac *client) stream(info *cpb.ActorInfo) ([]*Call, error) {
	s := ac.s
	wc, err := s.cfg.Dial(info.WorkerAddress)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stream, err := wc.PushTasks(ctx)
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
			batch := make([]*Call, 0, len(reply.Results))
			results := make([]*pb.TaskResult, 0, len(reply.Results))
			for _, res := range reply.Results {
				if call := ls.takeLocked(res.TaskId); call != nil {
					batch = append(batch, call)
					results = append(results, res)
				}
			}
			ls.mu.Unlock()
			for i, call := range batch {
				s.cfg.Handler.Finished(call, results[i])
			}
		}
	}()
	ac.sendMu.Lock()
	ac.mu.Lock()
	ac.live = ls
	ac.mu.Unlock()
	ac.sendMu.Unlock()
	lostAll := func(err error) ([]*Call, error) {
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
	viewChanged := s.view.changes()
	for {
		ac.sendMu.Lock()
		ac.mu.Lock()
		n := min(len(ac.pending), s.cfg.MaxBatch)
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
		switch s.view.state(info) {
		case gone:
			// The control plane says the actor died, or lives on another
			// worker now: this stream is over.
			ac.requeue(batch)
			ac.sendMu.Unlock()
			return lostAll(errMoved)
		case leaving:
			// Not ALIVE here any more (restarting): nothing new goes to
			// this worker, but what it runs may still answer.
			ac.requeue(batch)
			n = 0
		}
		if n == 0 {
			ac.sendMu.Unlock()
			select {
			case <-ac.signal:
				continue
			case <-viewChanged:
				viewChanged = s.view.changes()
				continue
			case err := <-recvDone:
				recvDone <- err
				return lostAll(err)
			case <-s.ctx.Done():
				return lostAll(s.ctx.Err())
			}
		}
		specs := make([]*pb.TaskSpec, 0, n)
		sent := make([]*Call, 0, n)
		var err error
		for i, call := range batch {
			if !call.retriesSet {
				call.retries, call.retriesSet = int(info.MaxTaskRetries), true
			}
			if call.Unresolved {
				// The calls before it go first: its argument may be one of
				// their results (a.g(a.f())).
				if len(specs) > 0 {
					if err = ls.send(sent, specs); err != nil {
						ac.requeue(batch[i:]) // the rest go to the next incarnation
						specs = nil
						break
					}
					specs, sent = specs[:0:0], sent[:0:0]
				}
				if !s.cfg.Handler.Resolve(s.ctx, call) {
					continue // its argument failed, and so did it; the rest go on in order
				}
				call.Unresolved = false
			}
			if ac.isCancelled(call.ID) {
				s.cfg.Handler.Failed(call, cancelledError(call))
				continue
			}
			specs = append(specs, call.Spec)
			sent = append(sent, call)
		}
		if err == nil && len(specs) > 0 {
			err = ls.send(sent, specs)
		}
		ac.sendMu.Unlock()
		if err != nil {
			return lostAll(nil)
		}
	}
}

// ---- the actor view ------------------------------------------------------------

// View is a process's copy of the actor table, kept by a watch.
type View struct {
	mu      sync.Mutex
	actors  map[string]*cpb.ActorInfo
	changed chan struct{}
}

func newView() *View {
	return &View{actors: map[string]*cpb.ActorInfo{}, changed: make(chan struct{})}
}

func (v *View) update(r *cpb.WatchResponse) {
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
	close(v.changed)
	v.changed = make(chan struct{})
}

var errStillAlive = errors.New("actorsubmit: the actor is still ALIVE at the same worker")

// Wait returns the actor once ok accepts it, or ctx's error.
func (v *View) Wait(ctx context.Context, id string, ok func(*cpb.ActorInfo) bool) (*cpb.ActorInfo, error) {
	for {
		a, err := v.wait(ctx, id, ok, time.Hour)
		if !errors.Is(err, errStillAlive) {
			return a, err
		}
	}
}

// wait returns the actor once ok accepts it; after patience with the actor
// ALIVE but not accepted, errStillAlive.
func (v *View) wait(ctx context.Context, id string, ok func(*cpb.ActorInfo) bool, patience time.Duration) (*cpb.ActorInfo, error) {
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

// changes is closed at the view's next change.
func (v *View) changes() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

// incarnation says where the view puts an incarnation of an actor.
type incarnation int

const (
	here    incarnation = iota // ALIVE on its worker
	leaving                    // not ALIVE (restarting, or being placed)
	gone                       // DEAD, or ALIVE as another incarnation
)

// state says where the view puts incarnation info.
func (v *View) state(info *cpb.ActorInfo) incarnation {
	v.mu.Lock()
	defer v.mu.Unlock()
	a := v.actors[info.ActorId]
	switch {
	case a == nil || a.State == cpb.ActorState_DEAD:
		return gone
	case a.State != cpb.ActorState_ALIVE:
		return leaving
	case a.WorkerId != info.WorkerId || a.NumRestarts != info.NumRestarts:
		return gone
	}
	return here
}

// Current returns the view's copy of an actor, or nil.
func (v *View) Current(id string) *cpb.ActorInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.actors[id]
}
