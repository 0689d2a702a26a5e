package taskevents

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/statefilter"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func tid(n int) []byte {
	b := make([]byte, TaskIDSize)
	binary.BigEndian.PutUint64(b[8:], uint64(n))
	return b
}

func ev(n int, state pb.TaskEventState, fn string) *pb.TaskEvent {
	return &pb.TaskEvent{TaskId: tid(n), JobId: "job1", FuncOrClassName: fn, Type: pb.TaskType_NORMAL_TASK,
		State: state, StateUnixNano: stamp(state, int64(1000+n))}
}

func list(t *testing.T, b *Buffer, req *pb.ListTasksRequest) *pb.ListTasksResponse {
	t.Helper()
	r, err := b.List(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func filters(t *testing.T, ss ...string) []*pb.StateFilter {
	fs, err := statefilter.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestMergeKeepsFurthestStateAndAllTimestamps(t *testing.T) {
	b := New(Config{})
	b.Reset("e1")
	running := ev(1, pb.TaskEventState_RUNNING, "f")
	running.NodeId, running.WorkerPid = "node-2", 42
	finished := ev(1, pb.TaskEventState_FINISHED, "")
	// The finish arrives before the running event (a re-send).
	if _, err := b.Report([]*pb.TaskEvent{finished, running}, nil); err != nil {
		t.Fatal(err)
	}
	r := list(t, b, &pb.ListTasksRequest{})
	if len(r.Tasks) != 1 {
		t.Fatalf("tasks: %v", r.Tasks)
	}
	got := r.Tasks[0]
	if got.State != pb.TaskEventState_FINISHED || got.NodeId != "node-2" || got.WorkerPid != 42 || got.FuncOrClassName != "f" {
		t.Fatalf("merged: %v", got)
	}
	if got.StateUnixNano[pb.TaskEventState_RUNNING] == 0 || got.StateUnixNano[pb.TaskEventState_FINISHED] == 0 {
		t.Fatalf("timestamps: %v", got.StateUnixNano)
	}
	// Another attempt is another row.
	retry := ev(1, pb.TaskEventState_FAILED, "f")
	retry.Attempt = 1
	b.Report([]*pb.TaskEvent{retry}, nil)
	g, err := b.Get(fmt.Sprintf("%x", tid(1)))
	if err != nil || len(g.Attempts) != 2 || g.Attempts[1].State != pb.TaskEventState_FAILED {
		t.Fatalf("get: %v %v", g, err)
	}
}

func TestBoundEvictsFinishedFirstAndCounts(t *testing.T) {
	b := New(Config{MaxTasks: 3})
	b.Reset("e1")
	b.Report([]*pb.TaskEvent{ev(1, pb.TaskEventState_RUNNING, "f"), ev(2, pb.TaskEventState_FINISHED, "f"),
		ev(3, pb.TaskEventState_RUNNING, "f")}, nil)
	dropped, _ := b.Report([]*pb.TaskEvent{ev(4, pb.TaskEventState_RUNNING, "f")}, map[string]uint64{"job9": 5})
	if dropped != 1 {
		t.Fatalf("dropped %d", dropped)
	}
	if _, err := b.Get(fmt.Sprintf("%x", tid(2))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the finished task should be gone: %v", err)
	}
	// With nothing finished, the oldest goes.
	b.Report([]*pb.TaskEvent{ev(5, pb.TaskEventState_RUNNING, "f")}, nil)
	if _, err := b.Get(fmt.Sprintf("%x", tid(1))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the oldest task should be gone: %v", err)
	}
	r := list(t, b, &pb.ListTasksRequest{})
	if r.Total != 3 || r.NumDropped != 7 || len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], "7 task attempts are missing") {
		t.Fatalf("list: total %d dropped %d warnings %v", r.Total, r.NumDropped, r.Warnings)
	}
}

func TestListFiltersPagesAndCaps(t *testing.T) {
	b := New(Config{MaxLimit: 4})
	b.Reset("e1")
	var evs []*pb.TaskEvent
	for i := range 10 {
		s := pb.TaskEventState_FINISHED
		if i%2 == 1 {
			s = pb.TaskEventState_FAILED
		}
		evs = append(evs, ev(i, s, "f"))
	}
	b.Report(evs, nil)
	r := list(t, b, &pb.ListTasksRequest{Filters: filters(t, "state=FAILED"), Limit: 3})
	if len(r.Tasks) != 3 || r.NumFiltered != 5 || r.NextPageToken == "" {
		t.Fatalf("page 1: %d tasks, %d filtered, token %q", len(r.Tasks), r.NumFiltered, r.NextPageToken)
	}
	r2 := list(t, b, &pb.ListTasksRequest{Filters: filters(t, "state=FAILED"), Limit: 3, PageToken: r.NextPageToken})
	if len(r2.Tasks) != 2 || r2.NextPageToken != "" {
		t.Fatalf("page 2: %d tasks, token %q", len(r2.Tasks), r2.NextPageToken)
	}
	for _, x := range append(r.Tasks, r2.Tasks...) {
		if x.State != pb.TaskEventState_FAILED {
			t.Fatalf("filtered in %v", x)
		}
	}
	r3 := list(t, b, &pb.ListTasksRequest{Filters: filters(t, "state!=FAILED"), Limit: 100})
	if len(r3.Tasks) != 4 || r3.Limit != 4 || !strings.Contains(strings.Join(r3.Warnings, ";"), "capped") {
		t.Fatalf("capped: %d tasks, limit %d, warnings %v", len(r3.Tasks), r3.Limit, r3.Warnings)
	}
	for _, bad := range [][]*pb.StateFilter{filters(t, "colour=red"), filters(t, "attempt_number=x")} {
		if _, err := b.List(&pb.ListTasksRequest{Filters: bad}); !errors.Is(err, statefilter.ErrBadFilter) || !strings.Contains(err.Error(), bad[0].Key) {
			t.Fatalf("bad filter %v: %v", bad[0], err)
		}
	}
	if _, err := b.List(&pb.ListTasksRequest{PageToken: "zz"}); !errors.Is(err, ErrBadToken) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestSummarizeCountsByFunctionAndState(t *testing.T) {
	b := New(Config{})
	b.Reset("e1")
	b.Report([]*pb.TaskEvent{ev(1, pb.TaskEventState_FINISHED, "a"), ev(2, pb.TaskEventState_FINISHED, "a"),
		ev(3, pb.TaskEventState_FAILED, "a"), ev(4, pb.TaskEventState_RUNNING, "b")}, nil)
	s, err := b.Summarize(&pb.SummarizeTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Total != 4 || len(s.Summaries) != 2 || s.Summaries[0].FuncOrClassName != "a" ||
		s.Summaries[0].StateCounts["FINISHED"] != 2 || s.Summaries[0].StateCounts["FAILED"] != 1 ||
		s.Summaries[1].StateCounts["RUNNING"] != 1 {
		t.Fatalf("summary: %v", s)
	}
}

func TestResetStartsANewEpochEmptyAndWarnsWhileRebuilding(t *testing.T) {
	now := time.Unix(100, 0)
	b := New(Config{Now: func() time.Time { return now }})
	b.Reset("e1")
	b.Report([]*pb.TaskEvent{ev(1, pb.TaskEventState_FINISHED, "a")}, nil)
	b.Reset("e2")
	r := list(t, b, &pb.ListTasksRequest{})
	if b.Epoch() != "e2" || r.Total != 0 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "re-sending") {
		t.Fatalf("after reset: epoch %s, %v", b.Epoch(), r)
	}
	now = now.Add(time.Minute)
	if r := list(t, b, &pb.ListTasksRequest{}); len(r.Warnings) != 0 {
		t.Fatalf("warnings: %v", r.Warnings)
	}
	if _, err := b.Report([]*pb.TaskEvent{{TaskId: []byte{1}}}, nil); !errors.Is(err, ErrBadTaskID) {
		t.Fatalf("short id: %v", err)
	}
}

// realistic is a task event as an owner sends it when a task finishes.
func realistic(i int) *pb.TaskEvent {
	return &pb.TaskEvent{TaskId: tid(i), JobId: "0100000001", FuncOrClassName: "main.square", Type: pb.TaskType_NORMAL_TASK,
		ParentTaskId: tid(0), State: pb.TaskEventState_FINISHED, NodeId: "node-1",
		WorkerId: fmt.Sprintf("w-%08x", i%64), WorkerPid: 1000 + int32(i%64), RequiredResources: map[string]float64{"CPU": 1},
		StateUnixNano: []int64{0, 1, 2, 3, 4, 5}}
}

// BenchmarkMemoryPer100kTasks reports the leader's heap per 100k task
// attempts kept (each with five state timestamps, resources, node and
// worker).
func BenchmarkMemoryPer100kTasks(b *testing.B) {
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		buf := New(Config{})
		buf.Reset("e")
		batch := make([]*pb.TaskEvent, 0, 1000)
		for i := range 100_000 {
			batch = append(batch, realistic(i))
			if len(batch) == cap(batch) {
				buf.Report(batch, nil)
				batch = batch[:0]
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/100k-tasks")
		runtime.KeepAlive(buf)
	}
}

// BenchmarkReport measures merging batches of 1000 events (three per task:
// submitted, running, finished).
func BenchmarkReport(b *testing.B) {
	buf := New(Config{})
	buf.Reset("e")
	batch := make([]*pb.TaskEvent, 1000)
	b.ResetTimer()
	n := 0
	for range b.N {
		for j := range batch {
			e := realistic(n / 3)
			e.State = pb.TaskEventState(3 + n%3)
			batch[j] = e
			n++
		}
		buf.Report(batch, nil)
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}

func stamp(s pb.TaskEventState, t int64) []int64 {
	ts := make([]int64, s+1)
	ts[s] = t
	return ts
}
