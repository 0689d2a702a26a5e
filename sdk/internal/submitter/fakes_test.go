package submitter

// Fakes of the submitter's neighbours, served with real gRPC over bufconn:
// raylets that grant leases from a fixed number of worker slots, workers
// that run pushed tasks the way sdk/ray/execute_stream.go does, a Conns
// that dials them by address, and a Handler that records every outcome.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

const testJob = "job-test"

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// eventually polls cond for up to 5 s and says whether it came to hold.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// waitChan waits for ch to close, failing the test after 5 s.
func waitChan(t testing.TB, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// ---- cluster: the network and what ran where ----------------------------------

// cluster is a set of fake raylets and workers on a bufconn network, and
// the record of every task the fake workers ran.
type cluster struct {
	t *testing.T

	mu        sync.Mutex
	listeners map[string]*bufconn.Listener
	servers   []*grpc.Server
	conns     map[string]*grpc.ClientConn
	raylets   map[string]*fakeRaylet
	workers   map[string]*fakeWorker
	gates     map[string]chan struct{}
	closed    bool

	// What the workers did.
	runs         map[ids.TaskID]int    // times each task started running
	ranOn        map[ids.TaskID]string // the worker that ran it last
	started      map[ids.TaskID]chan struct{}
	ctxCancelled map[ids.TaskID]chan struct{}
	running      int // tasks running now, over every worker
	peak         int
	taskMsgs     int // PushTasksRequests that carried tasks
	tasksPushed  int // tasks in those

	wg sync.WaitGroup // the fake workers' goroutines
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{
		t:            t,
		listeners:    map[string]*bufconn.Listener{},
		conns:        map[string]*grpc.ClientConn{},
		raylets:      map[string]*fakeRaylet{},
		workers:      map[string]*fakeWorker{},
		gates:        map[string]chan struct{}{},
		runs:         map[ids.TaskID]int{},
		ranOn:        map[ids.TaskID]string{},
		started:      map[ids.TaskID]chan struct{}{},
		ctxCancelled: map[ids.TaskID]chan struct{}{},
	}
	t.Cleanup(c.close)
	return c
}

// close releases every gate and stops every server and connection; it
// may be called more than once.
func (c *cluster) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	for _, g := range c.gates {
		select {
		case <-g:
		default:
			close(g)
		}
	}
	conns, servers := c.conns, c.servers
	c.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
	for _, s := range servers {
		s.Stop()
	}
	c.wg.Wait()
}

func (c *cluster) serve(addr string, register func(*grpc.Server)) {
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	register(s)
	c.mu.Lock()
	c.listeners[addr] = lis
	c.servers = append(c.servers, s)
	c.mu.Unlock()
	go func() { _ = s.Serve(lis) }()
}

func (c *cluster) dial(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("cluster closed")
	}
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	lis := c.listeners[addr]
	if lis == nil {
		return nil, fmt.Errorf("no such address %q", addr)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// Raylet and Worker make the cluster the submitter's Conns.
func (c *cluster) Raylet(addr string) (pb.RayletClient, error) {
	cc, err := c.dial(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewRayletClient(cc), nil
}

func (c *cluster) Worker(addr string) (pb.CoreWorkerClient, error) {
	cc, err := c.dial(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewCoreWorkerClient(cc), nil
}

// gate returns the channel a "block:name" task waits on.
func (c *cluster) gate(name string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gates[name]
	if g == nil {
		g = make(chan struct{})
		c.gates[name] = g
	}
	return g
}

// release lets the "block:name" tasks finish.
func (c *cluster) release(name string) {
	g := c.gate(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-g:
	default:
		close(g)
	}
}

func (c *cluster) chanLocked(m map[ids.TaskID]chan struct{}, id ids.TaskID) chan struct{} {
	ch := m[id]
	if ch == nil {
		ch = make(chan struct{})
		m[id] = ch
	}
	return ch
}

// startedCh is closed once the task starts running on some worker.
func (c *cluster) startedCh(id ids.TaskID) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chanLocked(c.started, id)
}

// cancelledCh is closed once a running task's context is cancelled.
func (c *cluster) cancelledCh(id ids.TaskID) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chanLocked(c.ctxCancelled, id)
}

func (c *cluster) runCount(id ids.TaskID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[id]
}

// execute runs one task on worker w. Its function says what it does:
// "sleep:<duration>" sleeps, "block:<gate>" waits for the gate,
// "stubborn:<gate>" waits for the gate and ignores cancellation;
// anything else returns at once. Sleeping and blocking tasks end early
// when their context is cancelled.
func (c *cluster) execute(ctx context.Context, w *fakeWorker, spec *pb.TaskSpec) *pb.TaskResult {
	id, _ := ids.TaskFromBytes(spec.TaskId)
	c.mu.Lock()
	c.runs[id]++
	c.ranOn[id] = w.name
	c.running++
	c.peak = max(c.peak, c.running)
	if ch := c.chanLocked(c.started, id); c.runs[id] == 1 {
		close(ch)
	}
	c.mu.Unlock()

	fn := spec.Function
	switch {
	case strings.HasPrefix(fn, "sleep:"):
		d, _ := time.ParseDuration(strings.TrimPrefix(fn, "sleep:"))
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-ctx.Done():
		}
		tm.Stop()
	case strings.HasPrefix(fn, "block:"):
		select {
		case <-c.gate(strings.TrimPrefix(fn, "block:")):
		case <-ctx.Done():
		}
	case strings.HasPrefix(fn, "stubborn:"):
		<-c.gate(strings.TrimPrefix(fn, "stubborn:"))
	}

	c.mu.Lock()
	c.running--
	if ctx.Err() != nil {
		if ch := c.chanLocked(c.ctxCancelled, id); !isClosed(ch) {
			close(ch)
		}
	}
	c.mu.Unlock()
	return &pb.TaskResult{Returns: []*pb.ObjectValue{{Data: resultData(id)}}}
}

func resultData(id ids.TaskID) []byte { return []byte("out-" + id.String()) }

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ---- fake raylet -------------------------------------------------------------------

// fakeRaylet grants leases of its workers, one lease per worker, queues
// requests while every worker is leased and grants them in order as
// leases come back; a request whose caller gives up leaves the queue.
type fakeRaylet struct {
	pb.UnimplementedRayletServer
	c    *cluster
	addr string
	node string

	mu         sync.Mutex
	infeasible func(*pb.LeaseRequest) bool
	spillTo    string
	workers    []*fakeWorker
	leasedTo   map[string]int // lease ID → worker index
	busy       []bool
	queue      []*leaseWaiter
	nextLease  int
	requests   int // RequestWorkerLease calls
	granted    int
	// CancelLeaseRequests calls, and requests they withdrew
	cancelCalls, withdrawn int
	returns                []*pb.ReturnLeaseRequest
	badReturns             []string // lease IDs returned that were not out
}

type leaseWaiter struct {
	req *pb.LeaseRequest
	ch  chan *pb.LeaseReply
}

// addRaylet starts a raylet at addr with slots workers ("<addr>-w<i>").
func (c *cluster) addRaylet(addr string, slots int) *fakeRaylet {
	r := &fakeRaylet{c: c, addr: addr, node: "node-" + addr, leasedTo: map[string]int{}, busy: make([]bool, slots)}
	for i := range slots {
		r.workers = append(r.workers, c.addWorker(fmt.Sprintf("%s-w%d", addr, i)))
	}
	c.mu.Lock()
	c.raylets[addr] = r
	c.mu.Unlock()
	c.serve(addr, func(s *grpc.Server) { pb.RegisterRayletServer(s, r) })
	return r
}

func (r *fakeRaylet) RequestWorkerLease(ctx context.Context, req *pb.LeaseRequest) (*pb.LeaseReply, error) {
	r.mu.Lock()
	r.requests++
	if r.infeasible != nil && r.infeasible(req) {
		r.mu.Unlock()
		return nil, status.Errorf(codes.InvalidArgument, "no node can ever fit %s", req.Shape)
	}
	if r.spillTo != "" {
		to := r.spillTo
		r.mu.Unlock()
		return &pb.LeaseReply{SpillAddress: to, SpillNodeId: "node-" + to}, nil
	}
	w := &leaseWaiter{req: req, ch: make(chan *pb.LeaseReply, 1)}
	r.queue = append(r.queue, w)
	r.dispatchLocked()
	r.mu.Unlock()
	select {
	case rep := <-w.ch:
		if ctx.Err() == nil || rep.Withdrawn {
			return rep, nil
		}
		// Granted as the caller gave up: take the worker back.
		r.mu.Lock()
		r.freeLocked(rep.LeaseId)
		r.granted--
		r.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-ctx.Done():
		r.mu.Lock()
		for i, x := range r.queue {
			if x == w {
				r.queue = append(r.queue[:i:i], r.queue[i+1:]...)
				r.mu.Unlock()
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		r.mu.Unlock()
		if rep := <-w.ch; !rep.Withdrawn { // granted meanwhile
			r.mu.Lock()
			r.freeLocked(rep.LeaseId)
			r.granted--
			r.mu.Unlock()
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// CancelLeaseRequests answers the owner's named requests still queued
// here as withdrawn; the others (granted already, or unknown) are left.
func (r *fakeRaylet) CancelLeaseRequests(_ context.Context, req *pb.CancelLeaseRequestsRequest) (*pb.CancelLeaseRequestsReply, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancelCalls++
	named := map[string]bool{}
	for _, id := range req.RequestIds {
		named[id] = true
	}
	keep := r.queue[:0]
	for _, w := range r.queue {
		if w.req.OwnerAddress == req.OwnerAddress && named[w.req.RequestId] {
			w.ch <- &pb.LeaseReply{Withdrawn: true}
			r.withdrawn++
			continue
		}
		keep = append(keep, w)
	}
	clear(r.queue[len(keep):])
	r.queue = keep
	return &pb.CancelLeaseRequestsReply{}, nil
}

// dispatchLocked grants queued requests while a worker is free.
func (r *fakeRaylet) dispatchLocked() {
	for len(r.queue) > 0 {
		i := -1
		for j, b := range r.busy {
			if !b {
				i = j
				break
			}
		}
		if i < 0 {
			return
		}
		w := r.queue[0]
		r.queue = r.queue[1:]
		r.busy[i] = true
		r.nextLease++
		id := fmt.Sprintf("%s-L%d", r.addr, r.nextLease)
		r.leasedTo[id] = i
		r.granted++
		wk := r.workers[i]
		w.ch <- &pb.LeaseReply{LeaseId: id, WorkerId: wk.name, WorkerAddress: wk.name, WorkerPid: int32(1000 + i), NodeId: r.node}
	}
}

func (r *fakeRaylet) freeLocked(leaseID string) bool {
	i, ok := r.leasedTo[leaseID]
	if !ok {
		return false
	}
	delete(r.leasedTo, leaseID)
	r.busy[i] = false
	r.dispatchLocked()
	return true
}

func (r *fakeRaylet) ReturnWorkerLease(_ context.Context, req *pb.ReturnLeaseRequest) (*pb.ReturnLeaseReply, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.returns = append(r.returns, req)
	if !r.freeLocked(req.LeaseId) {
		r.badReturns = append(r.badReturns, req.LeaseId)
	}
	return &pb.ReturnLeaseReply{}, nil
}

// raylet state, read under its lock
type rayletState struct {
	queued, out, granted, requests int
	cancelCalls, withdrawn         int
	returns                        []*pb.ReturnLeaseRequest
	badReturns                     []string
}

func (r *fakeRaylet) state() rayletState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return rayletState{queued: len(r.queue), out: len(r.leasedTo), granted: r.granted, requests: r.requests,
		cancelCalls: r.cancelCalls, withdrawn: r.withdrawn,
		returns: append([]*pb.ReturnLeaseRequest(nil), r.returns...), badReturns: append([]string(nil), r.badReturns...)}
}

// queuedFrom counts the requests of owner waiting here.
func (r *fakeRaylet) queuedFrom(owner string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.queue {
		if w.req.OwnerAddress == owner {
			n++
		}
	}
	return n
}

// failedReturns counts the leases returned with worker_failed.
func (r *fakeRaylet) failedReturns() int {
	n := 0
	for _, x := range r.state().returns {
		if x.WorkerFailed {
			n++
		}
	}
	return n
}

// ---- fake worker -------------------------------------------------------------------

// fakeWorker serves PushTasks like sdk/internal/receiver: it queues
// pushed tasks and runs them one at a time in order; a steal gives back
// up to N not-started tasks from the tail (always answered, perhaps
// empty); a cancel removes a queued task (answering it cancelled) or
// cancels a running one's context (answering cancelled when it returns);
// a force cancel of the running task gives back every queued task as
// stolen and answers cancelled at once.
type fakeWorker struct {
	pb.UnimplementedCoreWorkerServer
	c    *cluster
	name string

	mu      sync.Mutex
	streams map[*wstream]bool
	msgs    int // PushTasksRequests received
	// holdSends: answers wait (in order) until resumeSends, as on a slow
	// link.
	holdSends bool
	// holdStart: the executor takes no next task until resumeStart, as
	// when it is slow to get to it.
	holdStart bool
	resume    chan struct{}
}

func (c *cluster) addWorker(addr string) *fakeWorker {
	w := &fakeWorker{c: c, name: addr, streams: map[*wstream]bool{}, resume: make(chan struct{})}
	c.mu.Lock()
	c.workers[addr] = w
	c.mu.Unlock()
	c.serve(addr, func(s *grpc.Server) { pb.RegisterCoreWorkerServer(s, w) })
	return w
}

// wstream is one PushTasks stream's queue and running task.
type wstream struct {
	w      *fakeWorker
	stream pb.CoreWorker_PushTasksServer
	ctx    context.Context
	broken chan struct{}

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*pb.TaskSpec
	running *runningTask
	closed  bool

	sendMu  sync.Mutex
	dead    bool // the handler returned or the stream broke: send nothing
	pending []*pb.PushTasksReply
}

type runningTask struct {
	id        ids.TaskID
	cancel    context.CancelFunc
	cancelled bool
	answered  bool
}

func (w *fakeWorker) PushTasks(stream pb.CoreWorker_PushTasksServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	st := &wstream{w: w, stream: stream, ctx: ctx, broken: make(chan struct{})}
	st.cond = sync.NewCond(&st.mu)
	stop := context.AfterFunc(ctx, func() {
		st.mu.Lock()
		st.cond.Broadcast()
		st.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	w.streams[st] = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.streams, st)
		w.mu.Unlock()
	}()

	recvDone := make(chan error, 1)
	// Add under the cluster's lock, and not once it closed: close waits
	// on wg, and an Add racing that Wait is a misuse (the race detector
	// caught one, a stream starting while the test ended).
	w.c.mu.Lock()
	if w.c.closed {
		w.c.mu.Unlock()
		return status.Error(codes.Unavailable, "fake cluster closed")
	}
	w.c.wg.Add(2)
	w.c.mu.Unlock()
	go func() {
		defer w.c.wg.Done()
		for {
			req, err := stream.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			st.handle(req)
		}
	}()
	execDone := make(chan struct{})
	go func() {
		defer w.c.wg.Done()
		defer close(execDone)
		st.loop()
	}()
	var ret error
	select {
	case err := <-recvDone:
		st.mu.Lock()
		st.closed = true
		st.cond.Broadcast()
		st.mu.Unlock()
		if err != io.EOF {
			cancel() // the owner went away
		}
		<-execDone
		st.flush()
	case <-st.broken:
		cancel()
		<-execDone
		ret = status.Error(codes.Unavailable, "worker died")
	}
	st.sendMu.Lock()
	st.dead = true
	st.sendMu.Unlock()
	return ret
}

// send sends an answer, unless the stream is dead; answers wait while
// the worker holds its sends.
func (st *wstream) send(r *pb.PushTasksReply) {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	if st.dead {
		return
	}
	st.w.mu.Lock()
	hold := st.w.holdSends
	st.w.mu.Unlock()
	if hold || len(st.pending) > 0 {
		st.pending = append(st.pending, r)
		return
	}
	_ = st.stream.Send(r)
}

// flush sends the answers held back.
func (st *wstream) flush() {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	for _, r := range st.pending {
		if !st.dead {
			_ = st.stream.Send(r)
		}
	}
	st.pending = nil
}

func (st *wstream) handle(req *pb.PushTasksRequest) {
	c := st.w.c
	st.w.mu.Lock()
	st.w.msgs++
	st.w.mu.Unlock()
	if len(req.Tasks) > 0 {
		c.mu.Lock()
		c.taskMsgs++
		c.tasksPushed += len(req.Tasks)
		c.mu.Unlock()
		st.mu.Lock()
		st.queue = append(st.queue, req.Tasks...)
		st.cond.Broadcast()
		st.mu.Unlock()
	}
	for _, cn := range req.Cancel {
		st.cancel(cn)
	}
	if req.Steal > 0 {
		st.mu.Lock()
		n := min(int(req.Steal), len(st.queue))
		taken := st.queue[len(st.queue)-n:]
		st.queue = st.queue[:len(st.queue)-n]
		st.mu.Unlock()
		stolen := make([][]byte, len(taken))
		for i, spec := range taken {
			stolen[i] = spec.TaskId
		}
		st.send(&pb.PushTasksReply{Stolen: stolen, StealAnswered: true})
	}
}

func (st *wstream) cancel(cn *pb.CancelTask) {
	tid, err := ids.TaskFromBytes(cn.TaskId)
	if err != nil {
		return
	}
	st.mu.Lock()
	for i, spec := range st.queue {
		if bytes.Equal(spec.TaskId, cn.TaskId) {
			st.queue = append(st.queue[:i:i], st.queue[i+1:]...)
			st.mu.Unlock()
			st.send(&pb.PushTasksReply{Results: []*pb.TaskResult{{TaskId: spec.TaskId, Error: CancelledError(spec.Function, "before it started")}}})
			return
		}
	}
	rt := st.running
	if rt == nil || rt.id != tid || rt.cancelled {
		st.mu.Unlock()
		return
	}
	rt.cancelled = true
	rt.cancel()
	if !cn.Force {
		st.mu.Unlock()
		return
	}
	rt.answered = true
	var stolen [][]byte
	for _, spec := range st.queue {
		stolen = append(stolen, spec.TaskId)
	}
	st.queue = nil
	st.mu.Unlock()
	st.send(&pb.PushTasksReply{Stolen: stolen, StealAnswered: true,
		Results: []*pb.TaskResult{{TaskId: cn.TaskId, Error: CancelledError("", "while it ran (force)"), KillWorker: true}}})
}

// loop runs the queued tasks in order until the stream ends.
func (st *wstream) loop() {
	for {
		st.mu.Lock()
		for (len(st.queue) == 0 || st.w.startHeld()) && !st.closed && st.ctx.Err() == nil {
			if len(st.queue) > 0 {
				// Held: wait for resumeStart without the lock.
				st.mu.Unlock()
				select {
				case <-st.w.resumeCh():
				case <-st.ctx.Done():
				}
				st.mu.Lock()
				continue
			}
			st.cond.Wait()
		}
		if len(st.queue) == 0 || st.ctx.Err() != nil {
			st.queue = nil
			st.mu.Unlock()
			return
		}
		spec := st.queue[0]
		st.queue[0] = nil
		st.queue = st.queue[1:]
		id, _ := ids.TaskFromBytes(spec.TaskId)
		tctx, tcancel := context.WithCancel(st.ctx)
		rt := &runningTask{id: id, cancel: tcancel}
		st.running = rt
		st.mu.Unlock()

		start := time.Now()
		res := st.w.c.execute(tctx, st.w, spec)
		run := time.Since(start)
		tcancel()

		st.mu.Lock()
		st.running = nil
		cancelled, answered := rt.cancelled, rt.answered
		st.mu.Unlock()
		if answered {
			continue
		}
		if cancelled {
			res = &pb.TaskResult{Error: CancelledError(spec.Function, "while it ran")}
		}
		res.TaskId, res.RunNanos = spec.TaskId, int64(run)
		st.send(&pb.PushTasksReply{Results: []*pb.TaskResult{res}})
	}
}

// held lists the tasks this worker holds on its streams: queued or
// running, not answered.
func (w *fakeWorker) held() []ids.TaskID {
	w.mu.Lock()
	sts := make([]*wstream, 0, len(w.streams))
	for st := range w.streams {
		sts = append(sts, st)
	}
	w.mu.Unlock()
	var out []ids.TaskID
	for _, st := range sts {
		st.mu.Lock()
		if st.running != nil && !st.running.answered {
			out = append(out, st.running.id)
		}
		for _, spec := range st.queue {
			id, _ := ids.TaskFromBytes(spec.TaskId)
			out = append(out, id)
		}
		st.mu.Unlock()
	}
	return out
}

// die breaks every stream of the worker at once, as if its process
// died: nothing more is answered on them. It returns the tasks they held.
func (w *fakeWorker) die() []ids.TaskID {
	w.mu.Lock()
	sts := make([]*wstream, 0, len(w.streams))
	for st := range w.streams {
		sts = append(sts, st)
	}
	w.mu.Unlock()
	var out []ids.TaskID
	for _, st := range sts {
		st.sendMu.Lock()
		st.dead = true
		st.mu.Lock()
		if st.running != nil && !st.running.answered {
			out = append(out, st.running.id)
		}
		for _, spec := range st.queue {
			id, _ := ids.TaskFromBytes(spec.TaskId)
			out = append(out, id)
		}
		st.mu.Unlock()
		st.sendMu.Unlock()
		select {
		case <-st.broken:
		default:
			close(st.broken)
		}
	}
	return out
}

func (w *fakeWorker) holdSendsNow() {
	w.mu.Lock()
	w.holdSends = true
	w.mu.Unlock()
}

// resumeSends sends the answers held back, in order.
func (w *fakeWorker) resumeSends() {
	w.mu.Lock()
	w.holdSends = false
	sts := make([]*wstream, 0, len(w.streams))
	for st := range w.streams {
		sts = append(sts, st)
	}
	w.mu.Unlock()
	for _, st := range sts {
		st.flush()
	}
}

func (w *fakeWorker) holdStartNow() {
	w.mu.Lock()
	w.holdStart = true
	w.mu.Unlock()
}

func (w *fakeWorker) resumeStart() {
	w.mu.Lock()
	if w.holdStart {
		w.holdStart = false
		close(w.resume)
		w.resume = make(chan struct{})
	}
	w.mu.Unlock()
}

func (w *fakeWorker) startHeld() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.holdStart
}

func (w *fakeWorker) resumeCh() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.resume
}

// queued counts the tasks waiting (not running) on the worker's streams.
func (w *fakeWorker) queued() int {
	w.mu.Lock()
	sts := make([]*wstream, 0, len(w.streams))
	for st := range w.streams {
		sts = append(sts, st)
	}
	w.mu.Unlock()
	n := 0
	for _, st := range sts {
		st.mu.Lock()
		n += len(st.queue)
		st.mu.Unlock()
	}
	return n
}

// ---- handler -------------------------------------------------------------------------

type outcome struct {
	kind string // "finished", "lost", "failed"
	res  *pb.TaskResult
	err  *pb.TaskError
	node string
}

// recHandler records what became of every task.
type recHandler struct {
	mu       sync.Mutex
	outcomes map[ids.TaskID][]outcome
	done     map[ids.TaskID]chan struct{}
}

func newHandler() *recHandler {
	return &recHandler{outcomes: map[ids.TaskID][]outcome{}, done: map[ids.TaskID]chan struct{}{}}
}

func (h *recHandler) record(id ids.TaskID, o outcome) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.outcomes[id] = append(h.outcomes[id], o)
	ch := h.doneLocked(id)
	if !isClosed(ch) {
		close(ch)
	}
}

func (h *recHandler) doneLocked(id ids.TaskID) chan struct{} {
	ch := h.done[id]
	if ch == nil {
		ch = make(chan struct{})
		h.done[id] = ch
	}
	return ch
}

func (h *recHandler) Finished(t *Task, res *pb.TaskResult, ran *pb.LeaseReply) {
	node := ran.GetNodeId()
	h.record(t.ID, outcome{kind: "finished", res: res, node: node})
}

func (h *recHandler) WorkerLost(t *Task, e *pb.TaskError) {
	h.record(t.ID, outcome{kind: "lost", err: e})
}

func (h *recHandler) Failed(t *Task, e *pb.TaskError) {
	h.record(t.ID, outcome{kind: "failed", err: e})
}

// doneCh is closed at the task's first outcome.
func (h *recHandler) doneCh(id ids.TaskID) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.doneLocked(id)
}

func (h *recHandler) get(id ids.TaskID) []outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]outcome(nil), h.outcomes[id]...)
}

// count counts the tasks with at least one outcome of kind ("" any).
func (h *recHandler) count(kind string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, os := range h.outcomes {
		for _, o := range os {
			if kind == "" || o.kind == kind {
				n++
				break
			}
		}
	}
	return n
}

func (h *recHandler) ids(kind string) map[ids.TaskID]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[ids.TaskID]bool{}
	for id, os := range h.outcomes {
		for _, o := range os {
			if o.kind == kind {
				out[id] = true
			}
		}
	}
	return out
}

// only returns the task's single outcome, failing if it had none or more.
func (h *recHandler) only(t testing.TB, id ids.TaskID) outcome {
	t.Helper()
	os := h.get(id)
	if len(os) != 1 {
		t.Fatalf("task %s: %d outcomes %+v, want exactly 1", id, len(os), os)
	}
	return os[0]
}

// ---- setup ---------------------------------------------------------------------------

// env is a submitter on a cluster with a recording handler.
type env struct {
	t    *testing.T
	c    *cluster
	h    *recHandler
	s    *Submitter
	seq  uint64
	hung bool // Close did not return
}

var cpu1 = resources.Set{"CPU": 1}

// newEnv starts a submitter whose home raylet is home, in cluster c; cfg
// tuning fields are kept.
func newEnv(t *testing.T, c *cluster, home string, cfg Config) *env {
	h := newHandler()
	if cfg.Conns == nil {
		cfg.Conns = c
	}
	cfg.Owner = "owner-" + t.Name() + "-" + cfg.Owner
	cfg.JobID, cfg.Home, cfg.Handler = testJob, home, h
	s := New(cfg)
	e := &env{t: t, c: c, h: h, s: s}
	t.Cleanup(func() {
		if !e.hung {
			d := 5 * time.Second
			if t.Failed() {
				d = time.Second // already failed: do not wait long for Close
			}
			e.close(d)
		}
	})
	return e
}

// close closes the submitter, failing the test if Close takes longer
// than d (and then not trying again at cleanup).
func (e *env) close(d time.Duration) bool {
	e.t.Helper()
	done := make(chan struct{})
	go func() {
		e.s.Close()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		e.hung = true
		e.t.Errorf("Close did not return within %v", d)
		return false
	}
}

// task makes a task running fn with resources res (CPU=1 if nil).
func (e *env) task(fn string, res resources.Set) *Task {
	e.seq++
	id := ids.NewTaskID(testJob, ids.DriverTaskID(testJob), e.seq)
	if res == nil {
		res = cpu1
	}
	return &Task{Spec: &pb.TaskSpec{TaskId: id[:], JobId: testJob, Function: fn, NumReturns: 1}, ID: id, Res: res}
}

// submit submits a new task and returns it.
func (e *env) submit(fn string, res resources.Set) *Task {
	t := e.task(fn, res)
	e.s.Submit(t)
	return t
}

// pushed counts the tasks the submitter has pushed and not had answered.
func (e *env) pushed() int {
	n := 0
	for _, st := range e.s.Stats() {
		n += st.Pushed
	}
	return n
}

// submitterGoroutines counts the goroutines running the submitter's
// code (its lease loops, requests and receivers).
func submitterGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "submitter.(*Submitter).") {
			count++
		}
	}
	return count
}
