package lineage_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/lineage"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func taskRec(job string, id ids.TaskID, refs ...ids.ObjectID) *pb.TaskRecord {
	r := &pb.TaskRecord{TaskId: id[:], JobId: job, Function: "square", NumReturns: 1,
		Args: []*pb.LineageArg{{Value: []byte("hello lineage"), Format: 1}}, Resources: map[string]float64{"CPU": 1}}
	for _, o := range refs {
		r.Args = append(r.Args, &pb.LineageArg{ObjectId: append([]byte(nil), o[:]...), OwnerAddress: "owner:1"})
	}
	return r
}

// TestRecorderBatchesAndReportsCommit records 2000 tasks through a real
// 3-head cluster: they travel in far fewer RPCs and Raft entries than
// records, every one is committed when WaitCommitted returns, and any head
// can read them back.
func TestRecorderBatchesAndReportsCommit(t *testing.T) {
	var entries atomic.Int64
	c := tc.Start(t, 3, func(_ int, cfg *head.Config) {
		cfg.Knobs.BeforeApply = func(int) { entries.Add(1) }
	})
	cl := c.Client()
	ctx := tc.Ctx(t, time.Minute)
	rec := lineage.NewRecorder(cl, lineage.Options{})
	defer rec.Close()
	before := entries.Load()
	const n = 2000
	var tasks []ids.TaskID
	for i := range n {
		id := ids.NewTaskID("job1", ids.TaskID{}, uint64(i+1))
		tasks = append(tasks, id)
		if err := rec.Record(ctx, taskRec("job1", id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.WaitCommitted(ctx, tasks...); err != nil {
		t.Fatal(err)
	}
	for _, id := range tasks {
		if !rec.Committed(id) {
			t.Fatalf("task %s not committed after WaitCommitted", id)
		}
	}
	st := rec.Stats()
	if st.Records != n || st.Batches == 0 || st.Batches > n/10 {
		t.Fatalf("stats %+v: want %d records in at most %d batches", st, n, n/10)
	}
	if e := entries.Load() - before; e > n/10 {
		t.Fatalf("%d Raft entries for %d records; want batching", e, n)
	}
	// Committed means on a quorum; every head gets it from the log.
	for i := range c.Heads {
		tc.Eventually(t, 10*time.Second, func() error {
			_, err := c.Heads[i].FSM().LineageTask(tasks[n-1])
			return err
		})
	}
	s, err := cl.LineageStats(ctx, false)
	if err != nil || s.Records != n {
		t.Fatalf("stats %v, %v", s, err)
	}
	// Releasing every output garbage-collects every record.
	for _, id := range tasks {
		if err := rec.Release(ctx, ids.ReturnID(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := cl.LineageStats(ctx, false); err != nil || s.Records != 0 {
		t.Fatalf("after releases: %v, %v", s, err)
	}
}

// flakyWriter answers Unavailable to the first calls and remembers the
// request IDs it saw.
type flakyWriter struct {
	mu    sync.Mutex
	fails int
	seen  []string
	calls int
}

func (w *flakyWriter) RecordLineage(_ context.Context, req *pb.RecordLineageRequest) (*pb.RecordLineageResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	w.seen = append(w.seen, req.RequestId)
	if w.fails > 0 {
		w.fails--
		return nil, rpcerr.ErrUnavailable
	}
	return &pb.RecordLineageResponse{}, nil
}

func TestRecorderRetriesWithTheSameRequestID(t *testing.T) {
	w := &flakyWriter{fails: 2}
	rec := lineage.NewRecorder(w, lineage.Options{})
	ctx := tc.Ctx(t, 30*time.Second)
	id := ids.NewTaskID("j", ids.TaskID{}, 1)
	if err := rec.Record(ctx, taskRec("j", id)); err != nil {
		t.Fatal(err)
	}
	if err := rec.WaitCommitted(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if w.calls != 3 || w.seen[0] == "" || w.seen[0] != w.seen[1] || w.seen[1] != w.seen[2] {
		t.Fatalf("calls %d, request IDs %v: want 3 calls with one request ID", w.calls, w.seen)
	}
	if err := rec.Record(ctx, taskRec("j", id)); err != lineage.ErrClosed {
		t.Fatalf("record after close: %v", err)
	}
}

// TestRecorderBlocksWhenQueueIsFull: with the writer stuck, Record waits
// (bounded memory) until its context ends.
func TestRecorderBlocksWhenQueueIsFull(t *testing.T) {
	stuck := make(chan struct{})
	w := writerFunc(func(ctx context.Context, _ *pb.RecordLineageRequest) (*pb.RecordLineageResponse, error) {
		select {
		case <-stuck:
		case <-ctx.Done():
		}
		return nil, rpcerr.ErrUnavailable
	})
	rec := lineage.NewRecorder(w, lineage.Options{MaxBatch: 2, MaxQueue: 4, CloseTimeout: 100 * time.Millisecond})
	defer close(stuck)
	ctx := tc.Ctx(t, 30*time.Second)
	// At most MaxQueue items wait plus one batch in flight: some Record
	// among the first 7 must block until its deadline.
	accepted := 0
	for i := range 100 {
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := rec.Record(short, taskRec("j", ids.NewTaskID("j", ids.TaskID{}, uint64(i+1))))
		cancel()
		if err == context.DeadlineExceeded {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	if accepted < 4 || accepted > 6 {
		t.Fatalf("accepted %d records before blocking; want 4..6 (queue 4 + batch 2)", accepted)
	}
	if err := rec.Close(); err == nil {
		t.Fatal("close with unsent records reported success")
	}
}

type writerFunc func(context.Context, *pb.RecordLineageRequest) (*pb.RecordLineageResponse, error)

func (f writerFunc) RecordLineage(ctx context.Context, r *pb.RecordLineageRequest) (*pb.RecordLineageResponse, error) {
	return f(ctx, r)
}

func TestRenderTextAndDot(t *testing.T) {
	a := ids.NewTaskID("j", ids.TaskID{}, 1)
	b := ids.NewTaskID("j", ids.TaskID{}, 2)
	gone := ids.NewTaskID("j", ids.TaskID{}, 3)
	rb := taskRec("j", b, ids.ReturnID(a, 1), ids.ReturnID(gone, 1), ids.PutID(a, 1))
	rb.State, rb.NodeId, rb.Attempts = pb.TaskState_TASK_FINISHED, "node-7", 2
	rb.OwnerAddress, rb.AdoptedUnixNano = "10.0.0.9:4000", 1
	resp := &pb.GetLineageResponse{Records: []*pb.TaskRecord{rb, taskRec("j", a)}, EvictedTaskIds: [][]byte{gone[:]}}
	g := lineage.NewGraph(ids.ReturnID(b, 1), resp)
	var text, dot bytes.Buffer
	loc := func(o ids.ObjectID) string { return "lost" }
	if err := g.WriteText(&text, loc); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"square  TASK_FINISHED  node=node-7  attempts=2  owner=control-plane (adopted from 10.0.0.9:4000)", `value 13 B raw "hello lineage"`, "lineage evicted", "made by Put", "[lost]", a.String()} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	if err := g.WriteDot(&dot, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dot.String(), "digraph lineage {") || !strings.Contains(dot.String(), `"t`+b.String()+`" -> "o`+ids.ReturnID(b, 1).String()+`"`) {
		t.Errorf("dot:\n%s", dot.String())
	}
}
