package fsm

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// task returns a distinct task ID for tests.
func task(n int) ids.TaskID { return ids.NewTaskID("job", ids.TaskID{}, uint64(n)) }

func ret(t ids.TaskID, i uint32) []byte { o := ids.ReturnID(t, i); return o[:] }

// rec is a record of task n with returns results taking refs as arguments.
func rec(job string, n int, returns int32, refs ...ids.ObjectID) *pb.TaskRecord {
	id := task(n)
	r := &pb.TaskRecord{TaskId: id[:], JobId: job, Function: fmt.Sprint("f", n), NumReturns: returns,
		Args: []*pb.LineageArg{{Value: []byte("inline"), Format: 1}}}
	for _, o := range refs {
		r.Args = append(r.Args, &pb.LineageArg{ObjectId: append([]byte(nil), o[:]...), OwnerAddress: "owner"})
	}
	return r
}

func lineageCmd(t *testing.T, reqID string, lc *pb.LineageCommand) *pb.Command {
	return cmd(t, CmdLineage, reqID, lc)
}

func has(f *FSM, n int) bool {
	_, err := f.LineageTask(task(n))
	return err == nil
}

func TestLineageRecordIsIdempotentAndStamped(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	r := rec("j", 1, 1)
	r.SubmittedUnixNano, r.Released, r.RecordIndex = 42, []uint32{1}, 99 // a client's values are ignored
	res := a.apply(lineageCmd(t, "r1", &pb.LineageCommand{Records: []*pb.TaskRecord{r}}))
	if res[0].Count != 1 {
		t.Fatalf("recorded %d; want 1", res[0].Count)
	}
	got, err := a.f.LineageTask(task(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.SubmittedUnixNano != 1000 || got.RecordIndex != 1 || len(got.Released) != 0 || got.State != pb.TaskState_TASK_SUBMITTED {
		t.Fatalf("record not stamped by the leader: %v", got)
	}
	// The same request again answers as the first time (dedup table); a
	// new request re-recording the task leaves the record as it is.
	if res := a.apply(lineageCmd(t, "r1", &pb.LineageCommand{Records: []*pb.TaskRecord{r}})); res[0].Count != 1 || res[0].Index != 1 {
		t.Fatalf("retry answered %v; want the first answer", res[0])
	}
	r2 := rec("j", 1, 1)
	r2.Function = "other"
	if res := a.apply(lineageCmd(t, "r2", &pb.LineageCommand{Records: []*pb.TaskRecord{r2}})); res[0].Count != 0 {
		t.Fatalf("re-record counted as new: %v", res[0])
	}
	if got, _ := a.f.LineageTask(task(1)); got.Function != "f1" || got.RecordIndex != 1 {
		t.Fatalf("re-record replaced the record: %v", got)
	}
	if s := a.f.LineageStats(); s.Records != 1 || s.Bytes == 0 || len(s.Jobs) != 1 || s.Jobs[0].JobId != "j" {
		t.Fatalf("stats %v", s)
	}
}

func TestLineageUpdatesFollowAttempts(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	id := task(1)
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{rec("j", 1, 1)}}))
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Updates: []*pb.TaskUpdate{
		{TaskId: id[:], Attempt: 1, State: pb.TaskState_TASK_RUNNING, NodeId: "n1"},
		{TaskId: id[:], Attempt: 2, State: pb.TaskState_TASK_FINISHED, NodeId: "n2"},
		{TaskId: id[:], Attempt: 1, State: pb.TaskState_TASK_FAILED, Error: "late"}, // older attempt
	}}))
	got, _ := a.f.LineageTask(id)
	if got.Attempts != 2 || got.State != pb.TaskState_TASK_FINISHED || got.NodeId != "n2" || got.LastError != "" || got.FinishedIndex != 2 {
		t.Fatalf("after updates: %v", got)
	}
	// An update of an unknown task is no error: it may have been released.
	other := task(9)
	if res := a.apply(lineageCmd(t, "", &pb.LineageCommand{Updates: []*pb.TaskUpdate{{TaskId: other[:], Attempt: 1}}})); res[0].Code != 0 {
		t.Fatalf("update of unknown task: %v", res[0])
	}
}

// TestLineageGCCascades: a chain 1 <- 2 <- 3 (3 takes 2's output, 2 takes
// 1's). Releasing 1's and 2's outputs drops nothing while 3 lives;
// releasing 3's output drops 3, then 2, then 1.
func TestLineageGCCascades(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{
		rec("j", 1, 2), rec("j", 2, 1, ids.ReturnID(task(1), 1), ids.PutID(task(1), 1)), rec("j", 3, 1, ids.ReturnID(task(2), 1)),
	}}))
	a.apply(lineageCmd(t, "", &pb.LineageCommand{ReleasedObjectIds: [][]byte{ret(task(1), 1), ret(task(1), 2), ret(task(2), 1)}}))
	if !has(a.f, 1) || !has(a.f, 2) || !has(a.f, 3) {
		t.Fatal("records with a live dependent were dropped")
	}
	// Releasing one of two returns keeps a record.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{rec("j", 4, 2)}, ReleasedObjectIds: [][]byte{ret(task(4), 2)}}))
	if !has(a.f, 4) {
		t.Fatal("record dropped with one return still referenced")
	}
	a.apply(lineageCmd(t, "", &pb.LineageCommand{ReleasedObjectIds: [][]byte{ret(task(3), 1)}}))
	for n := 1; n <= 3; n++ {
		if _, err := a.f.LineageTask(task(n)); !errors.Is(err, ErrLineageNotFound) {
			t.Fatalf("task %d after cascade: %v; want ErrLineageNotFound", n, err)
		}
	}
	a.apply(lineageCmd(t, "", &pb.LineageCommand{ReleasedTaskIds: [][]byte{func() []byte { x := task(4); return x[:] }()}}))
	if s := a.f.LineageStats(); s.Records != 0 || s.Bytes != 0 || len(s.Jobs) != 0 {
		t.Fatalf("table not empty after every release: %v", s)
	}
}

func TestLineageJobEndDropsItsRecords(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{}))[0].Id
	other := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{}))[0].Id
	// Task 3 of the other job takes task 1's output: job end drops 1 anyway.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{
		rec(job, 1, 1), rec(job, 2, 1, ids.ReturnID(task(1), 1)), rec(other, 3, 1, ids.ReturnID(task(1), 1)),
	}}))
	a.apply(cmd(t, CmdFinishJob, "", &pb.FinishJobRequest{JobId: job}))
	if has(a.f, 1) || has(a.f, 2) || !has(a.f, 3) {
		t.Fatal("job end must drop exactly the job's records")
	}
	// Records of an ended job are not stored.
	if res := a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{rec(job, 5, 1)}})); res[0].Count != 0 || has(a.f, 5) {
		t.Fatal("stored a record of an ended job")
	}
	if s := a.f.LineageStats(); s.Records != 1 || len(s.Jobs) != 1 || s.Jobs[0].JobId != other {
		t.Fatalf("stats %v", s)
	}
}

// TestLineageBoundEvictsFinishedFirst: with room for 3 records, the 4th
// evicts the oldest finished record, not the older unfinished ones, and the
// evicted task answers ErrLineageEvicted.
func TestLineageBoundEvictsFinishedFirst(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	bound := func(lc *pb.LineageCommand) *pb.LineageCommand { lc.MaxRecords = 3; return lc }
	a.apply(lineageCmd(t, "", bound(&pb.LineageCommand{Records: []*pb.TaskRecord{rec("j", 1, 1), rec("j", 2, 1), rec("j", 3, 1)}})))
	t3, t2 := task(3), task(2)
	a.apply(lineageCmd(t, "", bound(&pb.LineageCommand{Updates: []*pb.TaskUpdate{
		{TaskId: t3[:], Attempt: 1, State: pb.TaskState_TASK_FINISHED}, {TaskId: t2[:], Attempt: 1, State: pb.TaskState_TASK_FINISHED}}})))
	a.apply(lineageCmd(t, "", bound(&pb.LineageCommand{Records: []*pb.TaskRecord{rec("j", 4, 1)}})))
	if !has(a.f, 1) || has(a.f, 2) || !has(a.f, 3) || !has(a.f, 4) {
		t.Fatal("want task 2 (the oldest finished; ties by ID) evicted, the rest kept")
	}
	if _, err := a.f.LineageTask(task(2)); !errors.Is(err, ErrLineageEvicted) {
		t.Fatalf("evicted task: %v; want ErrLineageEvicted", err)
	}
	// Then by bytes: a bound below one record's size evicts all but none.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{rec("j", 5, 1)}, MaxBytes: 1}))
	s := a.f.LineageStats()
	if s.Records != 0 || s.Evictions != 5 {
		t.Fatalf("stats after a 1-byte bound: %v", s)
	}
	// An object whose producer's input was evicted says so.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{rec("j", 6, 1, ids.ReturnID(task(2), 1), ids.ReturnID(task(7), 1))}}))
	g, err := a.f.Lineage(ids.ReturnID(task(6), 1), 0)
	if err != nil || len(g.Records) != 1 || len(g.Evicted) != 1 || g.Evicted[0] != task(2) || len(g.Missing) != 1 || g.Missing[0] != task(7) {
		t.Fatalf("lineage %+v, %v", g, err)
	}
}

func TestLineageWalkDedupsAndBoundsDepth(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	// Diamond: 4 takes 2 and 3, both take 1.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{
		rec("j", 1, 1), rec("j", 2, 1, ids.ReturnID(task(1), 1)), rec("j", 3, 1, ids.ReturnID(task(1), 1)),
		rec("j", 4, 1, ids.ReturnID(task(2), 1), ids.ReturnID(task(3), 1)),
	}}))
	g, err := a.f.Lineage(ids.ReturnID(task(4), 1), 0)
	if err != nil || len(g.Records) != 4 || string(g.Records[0].TaskId) != string(ret(task(4), 1)[:16]) {
		t.Fatalf("diamond: %d records, %v", len(g.Records), err)
	}
	if g, _ := a.f.Lineage(ids.ReturnID(task(4), 1), 2); len(g.Records) != 3 {
		t.Fatalf("depth 2: %d records; want 3", len(g.Records))
	}
	if _, err := a.f.Lineage(ids.PutID(task(4), 1), 0); !errors.Is(err, ErrMadeByPut) {
		t.Fatalf("Put object: %v", err)
	}
	if _, err := a.f.Lineage(ids.ReturnID(task(8), 1), 0); !errors.Is(err, ErrLineageNotFound) {
		t.Fatalf("unknown: %v", err)
	}
}

// TestLineageSurvivesSnapshot: records, the evicted memory and the
// eviction order come back from a snapshot.
func TestLineageSurvivesSnapshot(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{rec("j", 1, 1), rec("j", 2, 1, ids.ReturnID(task(1), 1))}, MaxRecords: 1}))
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	b := New(nil)
	if err := b.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	ha, _ := a.f.StateHash()
	hb, _ := b.StateHash()
	if ha != hb {
		t.Fatal("state differs after restore")
	}
	if _, err := b.LineageTask(task(1)); !errors.Is(err, ErrLineageEvicted) {
		t.Fatalf("evicted memory lost: %v", err)
	}
	if r, err := b.LineageTask(task(2)); err != nil || r.Function != "f2" {
		t.Fatalf("record lost: %v %v", r, err)
	}
}
