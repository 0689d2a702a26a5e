package actorsubmit

// Fakes of the submitter's neighbours: actor workers served with real gRPC
// over bufconn (dialled by address through Config.Dial), a control-plane
// actor table whose WatchFunc the test feeds, and a Handler that records
// every outcome.

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/manta-ray/manta/internal/ids"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

const testJob = "job-actorsubmit"

// Call behaviours, by the spec's Method.
const (
	mOK    = "ok"    // answers at once with the call's seq
	mBlock = "block" // waits for net.release(id) or a cancel
	mCrash = "crash" // first attempt: ends the stream with an error; later ones answer
)

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

var taskCounter atomic.Uint64

// newCall makes a call to actor with the given method (behaviour).
func newCall(actor, method string) *Call {
	id := ids.NewTaskID(testJob, ids.DriverTaskID(testJob), taskCounter.Add(1))
	return &Call{ID: id, Spec: &pb.TaskSpec{TaskId: id[:], JobId: testJob, Function: "Actor." + method,
		ActorId: actor, Method: method, CallerId: "caller-1", NumReturns: 1}}
}

func calls(actor, method string, n int) []*Call {
	out := make([]*Call, n)
	for i := range out {
		out[i] = newCall(actor, method)
	}
	return out
}

// ---- network and workers -----------------------------------------------------

// fakeNet is a set of fake actor workers on a bufconn network, with the
// gates that "block" calls wait on (shared, so a resent call waits on the
// same gate at its next worker).
type fakeNet struct {
	t *testing.T

	mu        sync.Mutex
	listeners map[string]*bufconn.Listener
	servers   []*grpc.Server
	conns     map[string]*grpc.ClientConn
	workers   map[string]*fakeWorker
	gates     map[ids.TaskID]chan struct{}
	closed    bool
	dials     int

	wg sync.WaitGroup // the fake workers' goroutines
}

func newNet(t *testing.T) *fakeNet {
	n := &fakeNet{t: t, listeners: map[string]*bufconn.Listener{}, conns: map[string]*grpc.ClientConn{},
		workers: map[string]*fakeWorker{}, gates: map[ids.TaskID]chan struct{}{}}
	t.Cleanup(n.close)
	return n
}

// close releases every gate and stops every server and connection.
func (n *fakeNet) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	for _, g := range n.gates {
		if !isClosed(g) {
			close(g)
		}
	}
	conns, servers := n.conns, n.servers
	n.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
	for _, s := range servers {
		s.Stop()
	}
	n.wg.Wait()
}

// addWorker serves a fake actor worker at addr.
func (n *fakeNet) addWorker(addr string) *fakeWorker {
	w := &fakeWorker{n: n, addr: addr, crashCh: make(chan struct{}), received: map[ids.TaskID]int{}}
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	pb.RegisterCoreWorkerServer(s, w)
	n.mu.Lock()
	n.listeners[addr] = lis
	n.servers = append(n.servers, s)
	n.workers[addr] = w
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		_ = s.Serve(lis)
	}()
	return w
}

// Dial is the submitter's WorkerDialer.
func (n *fakeNet) Dial(addr string) (pb.CoreWorkerClient, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dials++
	if n.closed {
		return nil, fmt.Errorf("network closed")
	}
	if cc := n.conns[addr]; cc != nil {
		return pb.NewCoreWorkerClient(cc), nil
	}
	lis := n.listeners[addr]
	if lis == nil {
		return nil, fmt.Errorf("no worker at %q", addr)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		return nil, err
	}
	n.conns[addr] = cc
	return pb.NewCoreWorkerClient(cc), nil
}

func (n *fakeNet) gate(id ids.TaskID) chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	g := n.gates[id]
	if g == nil {
		g = make(chan struct{})
		n.gates[id] = g
	}
	return g
}

// release lets the "block" call id return.
func (n *fakeNet) release(id ids.TaskID) {
	g := n.gate(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if !isClosed(g) {
		close(g)
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// execRec is one call a worker started.
type execRec struct {
	id      ids.TaskID
	seq     uint64
	attempt int32
	method  string
	args    []string
}

// fakeWorker is an actor's worker: each PushTasks stream runs its calls
// one at a time in arrival order; a cancel answers a queued call at once
// (ERROR_TASK_CANCELLED) or cancels the running "block" call.
type fakeWorker struct {
	pb.UnimplementedCoreWorkerServer
	n    *fakeNet
	addr string

	mu       sync.Mutex
	crashCh  chan struct{} // closed by crash: every open stream ends with an error
	streams  int           // PushTasks calls
	received map[ids.TaskID]int
	executed []execRec
	cancels  []ids.TaskID
}

// crash ends every open stream of the worker with an error (the process
// died); later streams are served again.
func (w *fakeWorker) crash() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.crashCh)
	w.crashCh = make(chan struct{})
}

func (w *fakeWorker) got(id ids.TaskID) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.received[id]
}

func (w *fakeWorker) runs() []execRec {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]execRec(nil), w.executed...)
}

func (w *fakeWorker) started(id ids.TaskID, attempt int32) bool {
	for _, r := range w.runs() {
		if r.id == id && r.attempt == attempt {
			return true
		}
	}
	return false
}

func (w *fakeWorker) streamCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.streams
}

var errCrashed = status.Error(codes.Unavailable, "fake worker crashed")

// wstream is one PushTasks stream's queue at the worker.
type wstream struct {
	w      *fakeWorker
	srv    pb.CoreWorker_PushTasksServer
	sendMu sync.Mutex

	mu        sync.Mutex
	queue     []*pb.TaskSpec
	running   ids.TaskID
	runCancel chan struct{} // closed when the running call is cancelled
	notify    chan struct{}
}

func (ws *wstream) send(res *pb.TaskResult) error {
	ws.sendMu.Lock()
	defer ws.sendMu.Unlock()
	return ws.srv.Send(&pb.PushTasksReply{Results: []*pb.TaskResult{res}})
}

func cancelledResult(id ids.TaskID) *pb.TaskResult {
	return &pb.TaskResult{TaskId: id[:], Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_TASK_CANCELLED,
		Message: "cancelled by the worker", TaskId: id.String()}}
}

// seqResult is a finished call's answer: its seq.
func seqResult(spec *pb.TaskSpec) *pb.TaskResult {
	return &pb.TaskResult{TaskId: spec.TaskId,
		Returns: []*pb.ObjectValue{{Data: []byte(strconv.FormatUint(spec.Seq, 10))}}}
}

// handle takes one request off the stream: its tasks join the queue, its
// cancels remove queued tasks (answered at once) or cancel the running one.
func (ws *wstream) handle(req *pb.PushTasksRequest) {
	w := ws.w
	w.mu.Lock()
	for _, spec := range req.Tasks {
		id, _ := ids.TaskFromBytes(spec.TaskId)
		w.received[id]++
	}
	for _, c := range req.Cancel {
		id, _ := ids.TaskFromBytes(c.TaskId)
		w.cancels = append(w.cancels, id)
	}
	w.mu.Unlock()

	ws.mu.Lock()
	ws.queue = append(ws.queue, req.Tasks...)
	var answer []ids.TaskID
	for _, c := range req.Cancel {
		id, _ := ids.TaskFromBytes(c.TaskId)
		found := false
		for i, spec := range ws.queue {
			if string(spec.TaskId) == string(id[:]) {
				ws.queue = append(ws.queue[:i:i], ws.queue[i+1:]...)
				answer = append(answer, id)
				found = true
				break
			}
		}
		if !found && ws.running == id && ws.runCancel != nil && !isClosed(ws.runCancel) {
			close(ws.runCancel)
		}
	}
	ws.mu.Unlock()
	for _, id := range answer {
		_ = ws.send(cancelledResult(id))
	}
	select {
	case ws.notify <- struct{}{}:
	default:
	}
}

func (w *fakeWorker) PushTasks(srv pb.CoreWorker_PushTasksServer) error {
	// Add under the net's lock, and not once it closed: close waits on wg,
	// and an Add racing that Wait is a misuse.
	w.n.mu.Lock()
	if w.n.closed {
		w.n.mu.Unlock()
		return status.Error(codes.Unavailable, "fake net closed")
	}
	w.n.wg.Add(1)
	w.n.mu.Unlock()
	defer w.n.wg.Done()
	w.mu.Lock()
	w.streams++
	crashed := w.crashCh
	w.mu.Unlock()
	ctx := srv.Context()
	ws := &wstream{w: w, srv: srv, notify: make(chan struct{}, 1)}
	recvEnded := make(chan struct{})
	w.n.wg.Add(1)
	go func() {
		defer w.n.wg.Done()
		defer close(recvEnded)
		for {
			req, err := srv.Recv()
			if err != nil {
				return
			}
			ws.handle(req)
		}
	}()
	for {
		ws.mu.Lock()
		var spec *pb.TaskSpec
		var cancelled chan struct{}
		if len(ws.queue) > 0 {
			spec = ws.queue[0]
			ws.queue[0] = nil
			ws.queue = ws.queue[1:]
			ws.running, _ = ids.TaskFromBytes(spec.TaskId)
			ws.runCancel = make(chan struct{})
			cancelled = ws.runCancel
		}
		ws.mu.Unlock()
		if spec == nil {
			select {
			case <-ws.notify:
				continue
			case <-recvEnded:
				return nil
			case <-crashed:
				return errCrashed
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		id, _ := ids.TaskFromBytes(spec.TaskId)
		rec := execRec{id: id, seq: spec.Seq, attempt: spec.Attempt, method: spec.Method}
		for _, a := range spec.Args {
			rec.args = append(rec.args, string(a.GetValue().GetData()))
		}
		w.mu.Lock()
		w.executed = append(w.executed, rec)
		w.mu.Unlock()
		res := seqResult(spec)
		switch spec.Method {
		case mCrash:
			if spec.Attempt == 0 {
				return errCrashed
			}
		case mBlock:
			select {
			case <-w.n.gate(id):
			case <-cancelled:
				res = cancelledResult(id)
			case <-crashed:
				return errCrashed
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ws.mu.Lock()
		ws.running, ws.runCancel = ids.TaskID{}, nil
		ws.mu.Unlock()
		if err := ws.send(res); err != nil {
			return err
		}
	}
}

// ---- the actor table ---------------------------------------------------------

// fakeTable is the control plane's actor table; Watch is the submitter's
// WatchFunc: a reset with the table, then every published change.
type fakeTable struct {
	mu      sync.Mutex
	actors  map[string]*cpb.ActorInfo
	index   uint64
	subs    map[*watchSub]bool
	watches int // Watch calls running
}

type watchSub struct {
	mu     sync.Mutex
	queue  []*cpb.WatchResponse
	notify chan struct{}
}

func newTable() *fakeTable {
	return &fakeTable{actors: map[string]*cpb.ActorInfo{}, subs: map[*watchSub]bool{}}
}

func (f *fakeTable) Watch(ctx context.Context, fn func(*cpb.WatchResponse) error) error {
	f.mu.Lock()
	reset := &cpb.WatchResponse{Reset_: true, Index: f.index}
	for _, a := range f.actors {
		reset.Events = append(reset.Events, &cpb.Event{Index: f.index, Kind: cpb.EventKind_EVENT_ACTOR, Actor: a})
	}
	sub := &watchSub{notify: make(chan struct{}, 1)}
	f.subs[sub] = true
	f.watches++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, sub)
		f.watches--
		f.mu.Unlock()
	}()
	if err := fn(reset); err != nil {
		return err
	}
	for {
		sub.mu.Lock()
		q := sub.queue
		sub.queue = nil
		sub.mu.Unlock()
		for _, r := range q {
			if err := fn(r); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.notify:
		}
	}
}

// publish sets an actor's row and sends the change to every watch.
func (f *fakeTable) publish(a *cpb.ActorInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.actors[a.ActorId] = a
	r := &cpb.WatchResponse{Index: f.index, Events: []*cpb.Event{{Index: f.index, Kind: cpb.EventKind_EVENT_ACTOR, Actor: a}}}
	for sub := range f.subs {
		sub.mu.Lock()
		sub.queue = append(sub.queue, r)
		sub.mu.Unlock()
		select {
		case sub.notify <- struct{}{}:
		default:
		}
	}
}

func (f *fakeTable) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches
}

// actor builds a row: worker is the incarnation's address ("" when none).
func actor(id string, state cpb.ActorState, worker string, restarts, retries int32) *cpb.ActorInfo {
	a := &cpb.ActorInfo{ActorId: id, JobId: testJob, ClassName: "Counter", State: state,
		WorkerAddress: worker, NumRestarts: restarts, MaxTaskRetries: retries, MaxRestarts: -1}
	if worker != "" {
		a.WorkerId = "wid-" + worker
	}
	return a
}

// ---- handler -------------------------------------------------------------------

type outcome struct {
	finished []*pb.TaskResult
	failed   []*pb.TaskError
}

func (o outcome) n() int { return len(o.finished) + len(o.failed) }

// recHandler records what became of each call; Resolve fills the call's
// argument, after the call's gate when it has one, or fails the call.
type recHandler struct {
	t *testing.T

	mu          sync.Mutex
	out         map[ids.TaskID]*outcome
	finishOrder []ids.TaskID
	gates       map[ids.TaskID]chan struct{}
	failResolve map[ids.TaskID]bool
	resolving   map[ids.TaskID]int // Resolve entered
}

func newHandler(t *testing.T) *recHandler {
	h := &recHandler{t: t, out: map[ids.TaskID]*outcome{}, gates: map[ids.TaskID]chan struct{}{},
		failResolve: map[ids.TaskID]bool{}, resolving: map[ids.TaskID]int{}}
	t.Cleanup(func() {
		// Every gate opens (Close has already stopped the submitter), and
		// no call was ever answered twice.
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, g := range h.gates {
			if !isClosed(g) {
				close(g)
			}
		}
		for id, o := range h.out {
			if o.n() > 1 {
				t.Errorf("call %s answered %d times (finished %d, failed %d)", id, o.n(), len(o.finished), len(o.failed))
			}
		}
	})
	return h
}

func (h *recHandler) rec(id ids.TaskID) *outcome {
	o := h.out[id]
	if o == nil {
		o = &outcome{}
		h.out[id] = o
	}
	return o
}

func (h *recHandler) Finished(c *Call, res *pb.TaskResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.rec(c.ID)
	o.finished = append(o.finished, res)
	h.finishOrder = append(h.finishOrder, c.ID)
}

func (h *recHandler) Failed(c *Call, e *pb.TaskError) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.rec(c.ID)
	o.failed = append(o.failed, e)
}

func (h *recHandler) Resolve(ctx context.Context, c *Call) bool {
	h.mu.Lock()
	h.resolving[c.ID]++
	g := h.gates[c.ID]
	fail := h.failResolve[c.ID]
	h.mu.Unlock()
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return false
		}
	}
	if fail {
		h.Failed(c, &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: "argument lost"})
		return false
	}
	c.Spec.Args = append(c.Spec.Args, &pb.TaskArg{Value: &pb.ObjectValue{Data: []byte("resolved")}})
	return true
}

// gate makes Resolve of call id wait until openGate.
func (h *recHandler) gate(id ids.TaskID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gates[id] = make(chan struct{})
}

func (h *recHandler) openGate(id ids.TaskID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if g := h.gates[id]; g != nil && !isClosed(g) {
		close(g)
	}
}

func (h *recHandler) failResolveOf(id ids.TaskID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failResolve[id] = true
}

func (h *recHandler) resolveEntered(id ids.TaskID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.resolving[id] > 0
}

func (h *recHandler) get(id ids.TaskID) outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	if o := h.out[id]; o != nil {
		return outcome{finished: append([]*pb.TaskResult(nil), o.finished...), failed: append([]*pb.TaskError(nil), o.failed...)}
	}
	return outcome{}
}

func (h *recHandler) answered(id ids.TaskID) bool { return h.get(id).n() > 0 }

func (h *recHandler) order() []ids.TaskID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]ids.TaskID(nil), h.finishOrder...)
}

// ---- environment ---------------------------------------------------------------

type env struct {
	t   *testing.T
	net *fakeNet
	tab *fakeTable
	h   *recHandler
	s   *Submitter
}

// newEnv starts a submitter on a fresh network and table. The cleanups run
// in reverse: the submitter closes first, then the handler's gates open,
// then the network stops.
func newEnv(t *testing.T, cfg Config) *env {
	e := &env{t: t, net: newNet(t), tab: newTable(), h: newHandler(t)}
	cfg.Dial = e.net.Dial
	cfg.Watch = e.tab.Watch
	cfg.Handler = e.h
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.ReconnectAfter == 0 {
		// No test relies on reconnecting to the same worker unless it says so.
		cfg.ReconnectAfter = time.Hour
	}
	e.s = New(cfg)
	t.Cleanup(e.s.Close)
	return e
}

func (e *env) submitAll(actorID string, cs []*Call) {
	for _, c := range cs {
		e.s.Submit(actorID, c)
	}
}

// connected says whether the submitter has an open stream to the actor
// (white box: the client's live stream).
func (e *env) connected(actorID string) bool {
	e.s.mu.Lock()
	ac := e.s.clients[actorID]
	e.s.mu.Unlock()
	if ac == nil {
		return false
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.live != nil
}

// queued is the number of calls waiting in the submitter for the actor.
func (e *env) queued(actorID string) int {
	e.s.mu.Lock()
	ac := e.s.clients[actorID]
	e.s.mu.Unlock()
	if ac == nil {
		return 0
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return len(ac.pending)
}

func (e *env) waitAnswered(cs []*Call) {
	e.t.Helper()
	for _, c := range cs {
		waitFor(e.t, "call "+c.Spec.Method+" "+c.ID.String()+" to be answered", func() bool { return e.h.answered(c.ID) })
	}
}

// expectOK checks each call finished exactly once, without error, with
// the answer of the seq it was submitted with.
func (e *env) expectOK(cs []*Call) {
	e.t.Helper()
	for _, c := range cs {
		o := e.h.get(c.ID)
		if len(o.finished) != 1 || len(o.failed) != 0 {
			e.t.Fatalf("call %s (%s): finished %d, failed %d %v; want finished once", c.ID, c.Spec.Method, len(o.finished), len(o.failed), o.failed)
		}
		res := o.finished[0]
		if res.Error != nil {
			e.t.Fatalf("call %s (%s) finished with error %v", c.ID, c.Spec.Method, res.Error)
		}
		if want := strconv.FormatUint(c.Spec.Seq, 10); len(res.Returns) != 1 || string(res.Returns[0].Data) != want {
			e.t.Fatalf("call %s: returns %v, want seq %s", c.ID, res.Returns, want)
		}
	}
}

// expectFailed checks each call failed exactly once with kind, its message
// containing msg.
func (e *env) expectFailed(cs []*Call, kind pb.ErrorKind, msg string) {
	e.t.Helper()
	for _, c := range cs {
		o := e.h.get(c.ID)
		if len(o.failed) != 1 || len(o.finished) != 0 {
			e.t.Fatalf("call %s (%s): finished %d %v, failed %d %v; want failed once", c.ID, c.Spec.Method, len(o.finished), o.finished, len(o.failed), o.failed)
		}
		if f := o.failed[0]; f.Kind != kind || !strings.Contains(f.Message, msg) {
			e.t.Fatalf("call %s failed with %v %q, want %v containing %q", c.ID, f.Kind, f.Message, kind, msg)
		}
	}
}

// expectRuns checks a worker started exactly these calls, in this order, at
// these attempts, with strictly increasing seqs.
func expectRuns(t *testing.T, w *fakeWorker, cs []*Call, attempts []int32) {
	t.Helper()
	runs := w.runs()
	if len(runs) != len(cs) {
		t.Fatalf("worker %s started %d calls, want %d: %v", w.addr, len(runs), len(cs), runs)
	}
	for i, r := range runs {
		if r.id != cs[i].ID {
			t.Fatalf("worker %s: call %d is %s (seq %d), want %s (seq %d)", w.addr, i, r.id, r.seq, cs[i].ID, cs[i].Spec.Seq)
		}
		if r.attempt != attempts[i] {
			t.Fatalf("worker %s: call %d (seq %d) ran at attempt %d, want %d", w.addr, i, r.seq, r.attempt, attempts[i])
		}
		if i > 0 && r.seq <= runs[i-1].seq {
			t.Fatalf("worker %s: seq %d ran after seq %d", w.addr, r.seq, runs[i-1].seq)
		}
	}
}

func repeat(v int32, n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// pkgGoroutines lists the goroutines running code of actorsubmit.go (not
// of the tests' fakes).
func pkgGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "actorsubmit/actorsubmit.go:") {
			out = append(out, g)
		}
	}
	return out
}
