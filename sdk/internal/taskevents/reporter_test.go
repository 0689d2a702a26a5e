package taskevents

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	cpte "github.com/manta-ray/manta/controlplane/taskevents"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// fakeLeader is the control plane in these unit tests: a store of merged
// events per epoch, which can fail, block or change epoch (a new leader
// starts empty).
type fakeLeader struct {
	mu      sync.Mutex
	epoch   string
	tasks   map[key]*pb.TaskEvent
	dropped map[string]uint64
	calls   int
	fail    error
	block   chan struct{}
}

func newFake() *fakeLeader {
	return &fakeLeader{epoch: "e1", tasks: map[key]*pb.TaskEvent{}, dropped: map[string]uint64{}}
}

func (f *fakeLeader) ReportTaskEvents(ctx context.Context, req *pb.ReportTaskEventsRequest) (*pb.ReportTaskEventsResponse, error) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return nil, f.fail
	}
	evs, err := cpte.Events(req)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		k := keyOf(ev)
		if f.tasks[k] == nil {
			f.tasks[k] = &pb.TaskEvent{}
		}
		Merge(f.tasks[k], ev)
	}
	for j, n := range req.DroppedByJob {
		f.dropped[j] += n
	}
	return &pb.ReportTaskEventsResponse{Epoch: f.epoch}, nil
}

func (f *fakeLeader) newLeader(epoch string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch, f.tasks, f.dropped = epoch, map[key]*pb.TaskEvent{}, map[string]uint64{}
}

func (f *fakeLeader) snapshot() (map[key]*pb.TaskEvent, map[string]uint64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := map[key]*pb.TaskEvent{}
	for k, v := range f.tasks {
		t[k] = v
	}
	d := map[string]uint64{}
	for k, v := range f.dropped {
		d[k] = v
	}
	return t, d, f.calls
}

func tid(n int) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b[8:], uint64(n))
	return b
}

func state(n int, s pb.TaskEventState) *pb.TaskEvent {
	return &pb.TaskEvent{TaskId: tid(n), JobId: "job1", FuncOrClassName: "f", State: s}
}

// manual returns a reporter whose background flushes are too rare to
// matter: the test flushes.
func manual(t *testing.T, f *fakeLeader, tune func(*Config)) *Reporter {
	cfg := Config{Sender: f, FlushInterval: time.Hour}
	if tune != nil {
		tune(&cfg)
	}
	r := New(cfg)
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func flush(t *testing.T, r *Reporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBatchesAndStampsTimes(t *testing.T) {
	f := newFake()
	r := manual(t, f, nil)
	for i := range 5 {
		r.Add(state(i, pb.TaskEventState_PENDING_NODE_ASSIGNMENT))
	}
	r.State(tid(0), 0, pb.TaskEventState_FINISHED)
	flush(t, r)
	tasks, _, calls := f.snapshot()
	if calls != 1 || len(tasks) != 5 {
		t.Fatalf("%d calls, %d tasks", calls, len(tasks))
	}
	first := tasks[keyOf(&pb.TaskEvent{TaskId: tid(0)})]
	if first.State != pb.TaskEventState_FINISHED || first.StateUnixNano[int32(pb.TaskEventState_PENDING_NODE_ASSIGNMENT)] == 0 ||
		first.StateUnixNano[int32(pb.TaskEventState_FINISHED)] == 0 {
		t.Fatalf("task 0: %v", first)
	}
	if st := r.Stats(); st.Added != 6 || st.Sent != 5 || st.Epoch != "e1" || st.Recent != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewLeaderGetsRecentTasksAgain(t *testing.T) {
	f := newFake()
	r := manual(t, f, nil)
	for i := range 20 {
		r.Add(state(i, pb.TaskEventState_FINISHED))
	}
	flush(t, r)
	f.newLeader("e2")
	r.Add(state(100, pb.TaskEventState_RUNNING))
	flush(t, r)
	tasks, _, _ := f.snapshot()
	if len(tasks) != 21 {
		t.Fatalf("the new leader has %d tasks, want 21", len(tasks))
	}
	if got := tasks[keyOf(&pb.TaskEvent{TaskId: tid(3)})]; got.State != pb.TaskEventState_FINISHED {
		t.Fatalf("re-sent task: %v", got)
	}
	if st := r.Stats(); st.Resent < 20 || st.Epoch != "e2" {
		t.Fatalf("stats %+v", st)
	}
}

func TestFailedSendIsResentOnTheNextFlush(t *testing.T) {
	f := newFake()
	r := manual(t, f, nil)
	r.Add(state(1, pb.TaskEventState_RUNNING))
	f.mu.Lock()
	f.fail = errors.New("leader gone")
	f.mu.Unlock()
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("flush succeeded against a failing leader")
	}
	f.mu.Lock()
	f.fail = nil
	f.mu.Unlock()
	f.newLeader("e2")
	r.Add(state(2, pb.TaskEventState_RUNNING))
	flush(t, r)
	tasks, _, _ := f.snapshot()
	if len(tasks) != 2 {
		t.Fatalf("tasks after the failed send: %d", len(tasks))
	}
}

func TestBoundsDropOldestAndReportIt(t *testing.T) {
	f := newFake()
	r := manual(t, f, func(c *Config) { c.MaxPending = 3; c.MaxRecent = 4; c.BatchSize = 100; c.FlushAt = 1000 })
	for i := range 5 {
		r.Add(state(i, pb.TaskEventState_FINISHED))
	}
	flush(t, r)
	tasks, dropped, _ := f.snapshot()
	if len(tasks) != 3 || dropped["job1"] != 2 {
		t.Fatalf("%d tasks, dropped %v", len(tasks), dropped)
	}
	for i := 10; i < 14; i++ {
		r.Add(state(i, pb.TaskEventState_FINISHED))
		flush(t, r)
	}
	// Recent now holds 10..13; 2, 3, 4 were forgotten. A new leader
	// gets the four again and hears that three are gone.
	f.newLeader("e2")
	r.Add(state(20, pb.TaskEventState_FINISHED))
	flush(t, r)
	tasks, dropped, _ = f.snapshot()
	if len(tasks) != 4 || dropped["job1"] != 4 {
		t.Fatalf("new leader: %d tasks, dropped %v", len(tasks), dropped)
	}
}

func TestAddDoesNotWaitForASlowLeader(t *testing.T) {
	f := newFake()
	block := make(chan struct{})
	f.block = block
	r := manual(t, f, func(c *Config) { c.BatchSize = 10 })
	defer close(block)
	r.Add(state(0, pb.TaskEventState_RUNNING))
	go r.Flush(context.Background()) // stuck in the fake until the test ends
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			r.Add(state(i, pb.TaskEventState_FINISHED))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Add blocked behind a send")
	}
}

func TestBackgroundFlush(t *testing.T) {
	f := newFake()
	r := New(Config{Sender: f, FlushInterval: 10 * time.Millisecond})
	defer r.Close(context.Background())
	r.Add(state(1, pb.TaskEventState_RUNNING))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tasks, _, _ := f.snapshot(); len(tasks) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the background flush never sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkAdd is the cost on the task path: one state change.
func BenchmarkAdd(b *testing.B) {
	f := newFake()
	r := New(Config{Sender: f, FlushInterval: 50 * time.Millisecond})
	defer r.Close(context.Background())
	b.RunParallel(func(pb_ *testing.PB) {
		id := tid(1)
		for pb_.Next() {
			r.Add(&pb.TaskEvent{TaskId: id, JobId: "job1", State: pb.TaskEventState_RUNNING})
		}
	})
}

// marshalOnly is a control plane that costs nothing but the marshalling a
// real send does on the owner's side.
type marshalOnly struct{}

func (marshalOnly) ReportTaskEvents(_ context.Context, req *pb.ReportTaskEventsRequest) (*pb.ReportTaskEventsResponse, error) {
	if _, err := proto.Marshal(req); err != nil {
		return nil, err
	}
	return &pb.ReportTaskEventsResponse{Epoch: "e"}, nil
}

// BenchmarkOwnerCPU is the owner's CPU per event (Add, the flusher's
// stamping and merging, marshalling), as process CPU time: four events
// make a task.
func BenchmarkOwnerCPU(b *testing.B) {
	r := New(Config{Sender: marshalOnly{}, FlushInterval: 100 * time.Millisecond})
	defer r.Close(context.Background())
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	b.ResetTimer()
	// As the task path would report: the first event in full, the next
	// three as bare state changes.
	var id []byte
	for i := range b.N {
		if i%4 == 0 {
			id = tid(i / 4)
			r.Add(&pb.TaskEvent{TaskId: id, JobId: "job1", FuncOrClassName: "square",
				Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState_PENDING_NODE_ASSIGNMENT})
		} else {
			r.State(id, 0, pb.TaskEventState(2+i%4))
		}
	}
	if err := r.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/event")
}

// TestMoreTasksInAFlushThanRecentHolds: a flush with more new tasks than
// the recent ring holds sends them all (in parts) and loses none.
func TestMoreTasksInAFlushThanRecentHolds(t *testing.T) {
	f := newFake()
	r := manual(t, f, func(c *Config) { c.MaxRecent = 4; c.FlushAt = 1000 })
	for i := range 10 {
		r.Add(state(i, pb.TaskEventState_RUNNING))
		r.State(tid(i), 0, pb.TaskEventState_FINISHED)
	}
	flush(t, r)
	tasks, dropped, _ := f.snapshot()
	if len(tasks) != 10 || len(dropped) != 0 {
		t.Fatalf("%d tasks, dropped %v", len(tasks), dropped)
	}
	for _, ev := range tasks {
		if ev.State != pb.TaskEventState_FINISHED || ev.FuncOrClassName != "f" {
			t.Fatalf("task %v", ev)
		}
	}
	if st := r.Stats(); st.Recent != 4 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}
