package ray

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// Submission tuning.
const (
	// maxLeaseRequests bounds the lease requests in flight per shape.
	maxLeaseRequests = 8
	// maxBatch bounds the tasks pushed to a leased worker in one call.
	maxBatch = 128
	// leaseLinger is how long an idle lease is kept for the next task of
	// its shape before it is returned.
	leaseLinger = 5 * time.Millisecond
)

// task is a submitted task in its owner.
type task struct {
	spec            *pb.TaskSpec
	returns         []ids.ObjectID
	pinned          []ids.ObjectID // owned reference arguments (refcount.go)
	retriesLeft     int
	retryExceptions bool

	// Reference arguments: their indexes in spec.Args, their objects, and
	// the entries they were last resolved from (lineage.go).
	refs    []int
	refKeys []objectKey
	argObjs []*object
	// lin is the task's retained lineage (nil when not recorded);
	// lostRounds counts the pushes again after an argument was rebuilt.
	lin        *lineageEntry
	lostRounds int
}

// shapeQueue holds the tasks of one resource shape waiting for a worker.
type shapeQueue struct {
	key        string
	res        resources.Set
	pending    []*task
	requesting int
	active     int
	signal     chan struct{}
}

// submit builds a task, creates its return objects and queues it once its
// reference arguments are resolved.
func submit(ctx context.Context, f *function, args []argumenter, opts []CallOption) ([]objectKey, error) {
	c, err := current()
	if err != nil {
		return nil, err
	}
	o := newCallOptions(opts)
	if o.err != nil {
		return nil, o.err
	}
	tc := c.taskOf(ctx)
	tid := ids.NewTaskID(c.jobID, tc.id, tc.counter.Add(1))
	t := &task{spec: &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID, Function: f.name, NumReturns: int32(f.nret),
		OwnerAddress: c.address, NumCpus: o.res[resources.CPU]},
		retriesLeft: o.maxRetries, retryExceptions: o.retryExceptions}
	refs, argKeys, err := encodeArgs(t.spec, args)
	if err != nil {
		return nil, err
	}
	t.pinned = c.pinArgs(argKeys)
	runtime.KeepAlive(args)
	t.refs, t.refKeys = refs, argKeys
	var keys []objectKey
	t.returns, keys = c.newReturns(tid, f.nret)
	q := c.queueFor(o.res)
	c.recordTask(t, q, &o)
	if len(refs) == 0 {
		c.enqueue(q, t)
		return keys, nil
	}
	// Resolve reference arguments first (Ray's dependency resolver).
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.resolveAndEnqueue(q, t)
	}()
	return keys, nil
}

// resolveAndEnqueue waits for a task's reference arguments, puts their
// values in its spec and queues it; the records of the tasks that made
// stored ones commit first (lineage.go). A failed argument fails the task.
func (c *core) resolveAndEnqueue(q *shapeQueue, t *task) {
	if len(t.refs) > 0 {
		t.argObjs = make([]*object, len(t.refs))
	}
	var producers []ids.TaskID
	for j, i := range t.refs {
		k := t.refKeys[j]
		ob := c.objectFor(k)
		select {
		case <-ob.ready:
		case <-c.ctx.Done():
			return
		}
		if ob.val.Error != nil {
			c.fail(t, ob.val.Error)
			return
		}
		v := c.valueOf(ob)
		// A new TaskArg, not a changed one: the retained lineage shares
		// the submitted ones.
		t.spec.Args[i] = &pb.TaskArg{ObjectId: t.spec.Args[i].ObjectId, Value: v}
		t.argObjs[j] = ob
		if p, ok := c.producerToWait(k.id, k.owner, v); ok {
			producers = append(producers, p)
		}
	}
	c.waitCommitted(c.ctx, producers)
	c.enqueue(q, t)
}

func (c *core) queueFor(res resources.Set) *shapeQueue {
	key := res.Key()
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[key]
	if q == nil {
		q = &shapeQueue{key: key, res: res, signal: make(chan struct{}, 1)}
		c.queues[key] = q
	}
	return q
}

func (c *core) enqueue(q *shapeQueue, t *task) {
	c.mu.Lock()
	q.pending = append(q.pending, t)
	c.maybeLeaseLocked(q)
	c.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// maybeLeaseLocked asks for another lease when tasks wait that the leases
// held and asked for do not cover.
func (c *core) maybeLeaseLocked(q *shapeQueue) {
	for q.requesting < maxLeaseRequests && q.requesting < len(q.pending)-q.active {
		q.requesting++
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.leaseAndRun(q)
		}()
	}
}

// fail completes a task's returns with an error.
func (c *core) fail(t *task, e *pb.TaskError) {
	if e.Function == "" {
		e.Function = t.spec.Function
	}
	if e.TaskId == "" {
		if tid, err := ids.TaskFromBytes(t.spec.TaskId); err == nil {
			e.TaskId = tid.String()
		}
	}
	v := &pb.ObjectValue{Error: e}
	c.mu.Lock()
	for _, id := range t.returns {
		c.completeLocked(id, v)
	}
	pinned := t.pinned
	t.pinned = nil
	c.runEndedLocked(t)
	c.mu.Unlock()
	c.unpinArgs(pinned)
	c.reportAttempt(t, cpb.TaskState_TASK_FAILED, "", e.Message)
}

// leaseAndRun gets a lease (following spillbacks) and pushes tasks to the
// leased worker until none are left.
func (c *core) leaseAndRun(q *shapeQueue) {
	addr := c.rayletAddr
	req := &pb.LeaseRequest{JobId: c.jobID, BinarySha256: c.binarySHA, Resources: q.res,
		OwnerAddress: c.address, Shape: q.key}
	backoff := 10 * time.Millisecond
	var reply *pb.LeaseReply
	for {
		cc, err := c.conn(addr)
		if err == nil {
			reply, err = pb.NewRayletClient(cc).RequestWorkerLease(c.ctx, req)
		}
		if c.ctx.Err() != nil {
			return
		}
		if err == nil && reply.SpillAddress != "" {
			addr = reply.SpillAddress
			req.Hops++
			continue
		}
		if err == nil {
			break
		}
		switch code := rpcerr.Code(err); {
		case code == codes.InvalidArgument || status.Code(err) == codes.InvalidArgument:
			c.failQueue(q, &pb.TaskError{Kind: pb.ErrorKind_ERROR_INFEASIBLE, Message: err.Error()})
			return
		case errors.Is(err, raylet.ErrJobEnded):
			c.failQueue(q, &pb.TaskError{Kind: pb.ErrorKind_ERROR_WORKER_CRASHED, Message: err.Error()})
			return
		}
		if addr == c.rayletAddr {
			c.log.Warn("lease request failed; retrying", zap.String("raylet", addr), zap.Error(err))
		} else {
			// A spillback target that went away: start again at home.
			c.log.Debug("lease request at a spillback target failed", zap.String("raylet", addr), zap.Error(err))
		}
		if addr != c.rayletAddr {
			addr, req.Hops = c.rayletAddr, 0
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		c.mu.Lock()
		if len(q.pending) == 0 {
			q.requesting--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	q.requesting--
	q.active++
	c.mu.Unlock()
	failed := c.runLease(q, reply)
	rc, err := c.conn(addr)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = pb.NewRayletClient(rc).ReturnWorkerLease(ctx, &pb.ReturnLeaseRequest{LeaseId: reply.LeaseId, WorkerFailed: failed})
		cancel()
	}
	c.mu.Lock()
	q.active--
	if len(q.pending) > 0 {
		c.maybeLeaseLocked(q)
	}
	c.mu.Unlock()
}

func (c *core) failQueue(q *shapeQueue, e *pb.TaskError) {
	c.mu.Lock()
	ts := q.pending
	q.pending = nil
	q.requesting--
	c.mu.Unlock()
	for _, t := range ts {
		c.fail(t, e)
	}
}

// maxInflight bounds the tasks pushed to one leased worker and not yet
// answered.
const maxInflight = 4 * maxBatch

// runLease streams batches of tasks to a leased worker and completes them
// as results come back, until the queue has stayed empty for leaseLinger
// and nothing is in flight; it reports whether the worker failed.
func (c *core) runLease(q *shapeQueue, l *pb.LeaseReply) (workerFailed bool) {
	cc, err := c.conn(l.WorkerAddress)
	if err != nil {
		return true
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	stream, err := pb.NewCoreWorkerClient(cc).PushTasks(ctx)
	if err != nil {
		return true
	}
	var (
		mu       sync.Mutex
		inflight []*task
	)
	progress := make(chan struct{}, 1)
	recvDone := make(chan error, 1)
	// The receiver ends with the stream; every return waits for it.
	recvEnded := make(chan struct{})
	defer func() {
		cancel()
		<-recvEnded
	}()
	var lastActive atomic.Int64 // unix nanos of the last result
	lastActive.Store(time.Now().UnixNano())
	go func() {
		for {
			reply, err := stream.Recv()
			if err != nil {
				recvDone <- err
				close(recvEnded)
				return
			}
			mu.Lock()
			n := min(len(reply.Results), len(inflight))
			batch := inflight[:n:n]
			inflight = inflight[n:]
			mu.Unlock()
			for i, t := range batch {
				c.finishTask(q, t, reply.Results[i], l.NodeId)
			}
			lastActive.Store(time.Now().UnixNano())
			// Wake the sender only when tasks wait for room; an idle
			// lease notices the end of its work through its linger timer.
			c.mu.Lock()
			waiting := len(q.pending) > 0
			c.mu.Unlock()
			if waiting {
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}
	}()
	crashed := func(err error) bool {
		if c.ctx.Err() != nil {
			return false
		}
		mu.Lock()
		lost := inflight
		inflight = nil
		mu.Unlock()
		c.log.Info("leased worker failed; retrying its tasks", zap.String("worker", l.WorkerId),
			zap.Int32("pid", l.WorkerPid), zap.Int("tasks", len(lost)), zap.Error(err))
		for _, t := range lost {
			c.retryOrFail(q, t, &pb.TaskError{Kind: pb.ErrorKind_ERROR_WORKER_CRASHED,
				Message: fmt.Sprintf("worker %s (pid %d) on node %s died: %v", l.WorkerId, l.WorkerPid, l.NodeId, errOr(err))})
		}
		return true
	}
	linger := time.NewTimer(leaseLinger)
	defer linger.Stop()
	for {
		mu.Lock()
		room := maxInflight - len(inflight)
		nInflight := len(inflight)
		mu.Unlock()
		c.mu.Lock()
		n := len(q.pending)
		if n > 0 && room > 0 {
			// At most a fair share of the queue (waiting and in flight
			// here) among the leases held and asked for, so that slow
			// tasks spread over every worker leased.
			leases := max(1, q.active+q.requesting)
			share := (n + nInflight + leases - 1) / leases
			n = max(0, min(maxBatch, room, n, share-nInflight))
		} else {
			n = 0
		}
		batch := q.pending[:n:n]
		q.pending = q.pending[n:]
		c.mu.Unlock()
		if n > 0 {
			specs := make([]*pb.TaskSpec, n)
			for i, t := range batch {
				specs[i] = t.spec
			}
			mu.Lock()
			inflight = append(inflight, batch...)
			mu.Unlock()
			if err := stream.Send(&pb.PushTasksRequest{Tasks: specs}); err != nil {
				cancel()
				return crashed(<-recvDone)
			}
			continue
		}
		select {
		case <-q.signal:
		case <-progress:
		case err := <-recvDone:
			return crashed(err)
		case <-linger.C:
			// Return the lease once it has been idle for leaseLinger.
			idle := time.Duration(time.Now().UnixNano() - lastActive.Load())
			mu.Lock()
			busy := len(inflight) > 0
			mu.Unlock()
			c.mu.Lock()
			empty := len(q.pending) == 0
			c.mu.Unlock()
			if busy || !empty || idle < leaseLinger {
				linger.Reset(max(leaseLinger-idle, time.Millisecond))
				continue
			}
			_ = stream.CloseSend()
			err := <-recvDone
			if err != io.EOF {
				return crashed(err)
			}
			return false
		case <-c.ctx.Done():
			return false
		}
	}
}

// finishTask completes a task from its result (node ran it), or retries
// it.
func (c *core) finishTask(q *shapeQueue, t *task, res *pb.TaskResult, node string) {
	if res.Error != nil {
		if c.lostArg(q, t, res.Error) {
			return
		}
		if t.retryExceptions && (res.Error.Kind == pb.ErrorKind_ERROR_APPLICATION || res.Error.Kind == pb.ErrorKind_ERROR_PANIC) {
			c.retryOrFail(q, t, res.Error)
		} else {
			c.fail(t, res.Error)
		}
		return
	}
	// A stored return can be lost with its node: record the task before
	// anyone can consume the returns (lineage.go).
	sent := storesAny(res) && c.persist(t, node)
	c.completeReturns(t.returns, t.spec.Function, res, "the task")
	c.mu.Lock()
	pinned := t.pinned
	t.pinned = nil
	c.runEndedLocked(t)
	c.mu.Unlock()
	c.unpinArgs(pinned)
	if !sent {
		c.reportAttempt(t, cpb.TaskState_TASK_FINISHED, node, "")
	}
}

// completeReturns completes a finished task's or call's return objects
// from its result; any it did not return fail with a bad-argument error.
func (c *core) completeReturns(returns []ids.ObjectID, function string, res *pb.TaskResult, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for j, id := range returns {
		if j < len(res.Returns) {
			c.completeLocked(id, res.Returns[j])
		} else {
			c.completeLocked(id, &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_BAD_ARGUMENT,
				Function: function, Message: what + " returned too few values"}})
		}
	}
}

func errOr(err error) error {
	if err == nil {
		return errors.New("reply incomplete")
	}
	return err
}

func (c *core) retryOrFail(q *shapeQueue, t *task, e *pb.TaskError) {
	if t.retriesLeft > 0 {
		t.retriesLeft--
		t.spec.Attempt++
		c.enqueue(q, t)
		return
	}
	c.fail(t, e)
}

// encodeArgs fills spec's arguments: values inline, references by ID. It
// returns the indexes of the reference arguments and their objects.
func encodeArgs(spec *pb.TaskSpec, args []argumenter) (refs []int, refKeys []objectKey, err error) {
	spec.Args = make([]*pb.TaskArg, len(args))
	for i, a := range args {
		av, err := a.argument()
		if err != nil {
			return nil, nil, err
		}
		if av.ref {
			spec.Args[i] = &pb.TaskArg{ObjectId: av.id[:]}
			refs = append(refs, i)
			refKeys = append(refKeys, objectKey{id: av.id, owner: av.owner})
			continue
		}
		spec.Args[i] = &pb.TaskArg{Value: av.value}
	}
	return refs, refKeys, nil
}

// newReturns creates the n return objects of task tid, owned here.
func (c *core) newReturns(tid ids.TaskID, n int) ([]ids.ObjectID, []objectKey) {
	returns := make([]ids.ObjectID, n)
	keys := make([]objectKey, n)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range n {
		returns[i] = ids.ReturnID(tid, uint32(i+1))
		o := c.newObjectLocked(returns[i])
		keys[i] = objectKey{id: returns[i], owner: c.address, h: c.newHandleLocked(o, returns[i])}
	}
	return returns, keys
}
