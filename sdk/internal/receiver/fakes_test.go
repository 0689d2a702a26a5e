package receiver

// A fake Executor and a real PushTasks stream over bufconn: a small
// CoreWorker server whose PushTasks is Serve, and an owner-side client
// that records every answer it receives.

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
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

// waitChan waits for ch to close, failing the test after 5 s.
func waitChan(t testing.TB, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

var taskCounter atomic.Uint64

// newSpec makes a task spec of function fn (see fakeExec.Execute).
func newSpec(fn string) *pb.TaskSpec {
	tid := ids.NewTaskID(testJob, ids.DriverTaskID(testJob), taskCounter.Add(1))
	return &pb.TaskSpec{TaskId: tid[:], JobId: testJob, Function: fn}
}

func taskID(spec *pb.TaskSpec) ids.TaskID {
	id, _ := ids.TaskFromBytes(spec.TaskId)
	return id
}

// ---- the executor ---------------------------------------------------------------

// fakeExec runs tasks by their function's name: "block:<gate>" waits for
// the gate or its context, "stubborn:<gate>" waits for the gate only
// (a task that ignores cancellation); anything else returns at once. Each
// result carries the function's name as its one return value.
type fakeExec struct {
	concurrentActor string // the actor Concurrent says yes for

	mu        sync.Mutex
	gates     map[string]chan struct{}
	started   map[ids.TaskID]chan struct{}
	cancelled map[ids.TaskID]chan struct{} // closed when the task's ctx is
	order     []ids.TaskID                 // tasks in the order they started
	running   int
	peak      int
	ended     []ids.TaskID
	children  []childCancel
}

type childCancel struct {
	task  ids.TaskID
	force bool
}

func newFakeExec() *fakeExec {
	return &fakeExec{gates: map[string]chan struct{}{}, started: map[ids.TaskID]chan struct{}{},
		cancelled: map[ids.TaskID]chan struct{}{}}
}

func chanFor(m map[ids.TaskID]chan struct{}, id ids.TaskID) chan struct{} {
	ch := m[id]
	if ch == nil {
		ch = make(chan struct{})
		m[id] = ch
	}
	return ch
}

func (f *fakeExec) gate(name string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.gates[name]
	if g == nil {
		g = make(chan struct{})
		f.gates[name] = g
	}
	return g
}

// release lets the tasks waiting on gate name finish.
func (f *fakeExec) release(name string) { close(f.gate(name)) }

func (f *fakeExec) startedCh(id ids.TaskID) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return chanFor(f.started, id)
}

func (f *fakeExec) cancelledCh(id ids.TaskID) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return chanFor(f.cancelled, id)
}

func (f *fakeExec) ran(id ids.TaskID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.order {
		if o == id {
			return true
		}
	}
	return false
}

func (f *fakeExec) snapshot() (order []ids.TaskID, running, peak int, ended []ids.TaskID, children []childCancel) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ids.TaskID(nil), f.order...), f.running, f.peak,
		append([]ids.TaskID(nil), f.ended...), append([]childCancel(nil), f.children...)
}

func (f *fakeExec) Execute(ctx context.Context, spec *pb.TaskSpec) *pb.TaskResult {
	id := taskID(spec)
	f.mu.Lock()
	f.order = append(f.order, id)
	f.running++
	f.peak = max(f.peak, f.running)
	close(chanFor(f.started, id))
	cancelled := chanFor(f.cancelled, id)
	f.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { close(cancelled) })
	defer func() {
		// A task that returns because its context was cancelled may get
		// here before the AfterFunc started: stop then keeps it from ever
		// running, and the cancel is recorded here instead.
		if stop() && ctx.Err() != nil {
			close(cancelled)
		}
	}()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	switch kind, name, _ := strings.Cut(spec.Function, ":"); kind {
	case "block":
		select {
		case <-f.gate(name):
		case <-ctx.Done():
		}
	case "stubborn":
		<-f.gate(name)
	}
	return &pb.TaskResult{Returns: []*pb.ObjectValue{{Data: []byte(spec.Function)}}}
}

func (f *fakeExec) Concurrent(actorID string) bool {
	return f.concurrentActor != "" && actorID == f.concurrentActor
}

func (f *fakeExec) CancelChildren(task ids.TaskID, force bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.children = append(f.children, childCancel{task, force})
}

func (f *fakeExec) TaskEnded(task ids.TaskID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = append(f.ended, task)
}

// ---- the stream -----------------------------------------------------------------

// worker serves PushTasks with Serve over ex.
type worker struct {
	pb.UnimplementedCoreWorkerServer
	ex     Executor
	served chan error // Serve's return, one per stream
}

func (w *worker) PushTasks(stream pb.CoreWorker_PushTasksServer) error {
	err := Serve(stream, w.ex)
	w.served <- err
	return err
}

// owner is the client end of one PushTasks stream and what came back on it.
type owner struct {
	t      *testing.T
	stream pb.CoreWorker_PushTasksClient
	cancel context.CancelFunc
	served chan error

	mu       sync.Mutex
	replies  []*pb.PushTasksReply
	results  map[ids.TaskID][]*pb.TaskResult
	recvErr  error
	recvDone chan struct{}
}

// startStream serves a worker over ex on bufconn and opens one stream to it.
func startStream(t *testing.T, ex Executor) *owner {
	lis := bufconn.Listen(1 << 20)
	w := &worker{ex: ex, served: make(chan error, 1)}
	s := grpc.NewServer()
	pb.RegisterCoreWorkerServer(s, w)
	go func() { _ = s.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///worker",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewCoreWorkerClient(cc).PushTasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := &owner{t: t, stream: stream, cancel: cancel, served: w.served,
		results: map[ids.TaskID][]*pb.TaskResult{}, recvDone: make(chan struct{})}
	go o.recv()
	t.Cleanup(func() {
		cancel()
		<-o.recvDone
		_ = cc.Close()
		s.Stop()
	})
	return o
}

func (o *owner) recv() {
	defer close(o.recvDone)
	for {
		rep, err := o.stream.Recv()
		o.mu.Lock()
		if err != nil {
			o.recvErr = err
			o.mu.Unlock()
			return
		}
		o.replies = append(o.replies, rep)
		for _, r := range rep.Results {
			id, _ := ids.TaskFromBytes(r.TaskId)
			o.results[id] = append(o.results[id], r)
		}
		o.mu.Unlock()
	}
}

func (o *owner) send(req *pb.PushTasksRequest) {
	o.t.Helper()
	if err := o.stream.Send(req); err != nil {
		o.t.Fatalf("send: %v", err)
	}
}

func (o *owner) push(specs ...*pb.TaskSpec) { o.send(&pb.PushTasksRequest{Tasks: specs}) }

func (o *owner) cancelTask(spec *pb.TaskSpec, force, recursive bool) {
	o.send(&pb.PushTasksRequest{Cancel: []*pb.CancelTask{{TaskId: spec.TaskId, Force: force, Recursive: recursive}}})
}

// result waits for the one answer of a task.
func (o *owner) result(spec *pb.TaskSpec) *pb.TaskResult {
	o.t.Helper()
	id := taskID(spec)
	var r *pb.TaskResult
	waitFor(o.t, "the result of "+spec.Function, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		if rs := o.results[id]; len(rs) > 0 {
			r = rs[0]
			return true
		}
		return false
	})
	return r
}

// steals waits for n steal answers and returns what they gave back, in order.
func (o *owner) steals(n int) [][]byte {
	o.t.Helper()
	var stolen [][]byte
	waitFor(o.t, "the steal answers", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		stolen = nil
		got := 0
		for _, rep := range o.replies {
			if rep.StealAnswered {
				got++
			}
			stolen = append(stolen, rep.Stolen...)
		}
		return got >= n
	})
	return stolen
}

// finish closes the owner's side and waits for Serve to return and the
// stream to end; it returns Serve's error.
func (o *owner) finish() error {
	o.t.Helper()
	o.closeSend()
	return o.wait()
}

// closeSend closes the owner's side: it is done with the lease.
func (o *owner) closeSend() {
	o.t.Helper()
	if err := o.stream.CloseSend(); err != nil {
		o.t.Fatalf("close send: %v", err)
	}
}

// wait waits for Serve to return and the stream to end cleanly; it
// returns Serve's error.
func (o *owner) wait() error {
	o.t.Helper()
	var err error
	select {
	case err = <-o.served:
	case <-time.After(5 * time.Second):
		o.t.Fatal("Serve did not return after CloseSend")
	}
	waitChan(o.t, "the end of the stream", o.recvDone)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.recvErr != io.EOF {
		o.t.Fatalf("stream ended with %v, want io.EOF", o.recvErr)
	}
	return err
}

// resultCount is how many answers a task got.
func (o *owner) resultCount(spec *pb.TaskSpec) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.results[taskID(spec)])
}
