package fsm

import (
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/durable"
	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func owned(r *pb.TaskRecord, owner string) *pb.TaskRecord { r.OwnerAddress = owner; return r }

// TestOwnerDiedAdoptsUnreleasedRecords: the records a dead worker still
// had are adopted (not the released ones, not a driver's), a rebuild is
// handed to one borrower at a time, and the rebuilder's death voids it.
func TestOwnerDiedAdoptsUnreleasedRecords(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{DriverAddress: "driver"}))[0].Id
	a.apply(lineageCmd(t, "", &pb.LineageCommand{
		Records: []*pb.TaskRecord{owned(rec(job, 1, 2), "w1"), owned(rec(job, 2, 1), "w1"), owned(rec(job, 3, 1), "driver"),
			owned(rec(job, 4, 1), "w2")},
		ReleasedObjectIds: [][]byte{ret(task(1), 2)},
	}))
	res := a.apply(cmd(t, CmdOwnerDied, "", &pb.OwnerDiedCommand{OwnerAddress: "w1"}),
		cmd(t, CmdOwnerDied, "", &pb.OwnerDiedCommand{OwnerAddress: "w1"}),
		cmd(t, CmdOwnerDied, "", &pb.OwnerDiedCommand{OwnerAddress: "driver"}))
	if res[0].Count != 2 || res[1].Count != 0 || res[2].Count != 0 {
		t.Fatalf("adopted counts %d, %d (retry), %d (driver); want 2, 0, 0", res[0].Count, res[1].Count, res[2].Count)
	}
	if !a.f.OwnerDead("w1") || a.f.OwnerDead("w2") {
		t.Fatal("dead owners wrong")
	}
	objs := []ids.ObjectID{ids.ReturnID(task(1), 1), ids.ReturnID(task(1), 2), ids.ReturnID(task(2), 1),
		ids.ReturnID(task(3), 1), ids.ReturnID(task(4), 1), ids.PutID(task(1), 1)}
	got := a.f.Adopted(objs)
	if len(got) != 2 || got[0] != objs[0] || got[1] != objs[2] {
		t.Fatalf("adopted %v; want task 1's return 1 and task 2's (not the released one, the driver's, a live owner's or a Put)", got)
	}

	// One rebuild at a time: the second borrower's request is refused
	// while the first one's lease holds, granted once it expired.
	t1 := task(1)
	rebuild := func(by string, attempt int32, expired int64) bool {
		return a.apply(cmd(t, CmdAdoptedRebuild, "", &pb.AdoptedRebuildCommand{TaskId: t1[:], Attempt: attempt,
			Rebuilder: by, LeaseExpiredBefore: expired}))[0].Flag
	}
	if !rebuild("b1", 0, 0) || rebuild("b2", 0, 0) || rebuild("b2", 1, 500) {
		t.Fatal("a rebuild must be granted once while its lease holds")
	}
	r, _ := a.f.LineageTask(t1)
	if r.Rebuilder != "b1" || r.Attempts != 1 || r.State != pb.TaskState_TASK_RUNNING {
		t.Fatalf("record after grant: %v", r)
	}
	// The rebuilder dies: its rebuild is void and the next asker gets it.
	a.apply(cmd(t, CmdOwnerDied, "", &pb.OwnerDiedCommand{OwnerAddress: "b1"}))
	if r, _ := a.f.LineageTask(t1); r.Rebuilder != "" {
		t.Fatalf("rebuilder %q kept after its death", r.Rebuilder)
	}
	if !rebuild("b2", 1, 0) {
		t.Fatal("rebuild not granted after the rebuilder died")
	}
	// Its finished attempt ends the rebuild.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Updates: []*pb.TaskUpdate{{TaskId: t1[:], Attempt: 2, State: pb.TaskState_TASK_FINISHED, NodeId: "n2"}}}))
	if r, _ := a.f.LineageTask(t1); r.Rebuilder != "" || r.NodeId != "n2" || r.AdoptedUnixNano == 0 {
		t.Fatalf("record after the rebuild finished: %v", r)
	}
	// A snapshot keeps the dead owners.
	b := &applier{t: t, f: New(nil)}
	restoreFrom(t, a.f, b.f)
	if !b.f.OwnerDead("w1") || len(b.f.Adopted(objs)) != 2 {
		t.Fatal("adoption lost in a snapshot")
	}
	// A record of a dead owner that arrives late is adopted at once; the
	// job's end drops adopted records too.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{owned(rec(job, 5, 1), "w1")}}))
	if r, _ := a.f.LineageTask(task(5)); r.AdoptedUnixNano == 0 {
		t.Fatal("late record of a dead owner not adopted")
	}
	a.apply(cmd(t, CmdFinishJob, "", &pb.FinishJobRequest{JobId: job}))
	if has(a.f, 1) || has(a.f, 5) {
		t.Fatal("adopted records outlived their job")
	}
}

func restoreFrom(t *testing.T, from, to *FSM) {
	t.Helper()
	snap, err := from.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	if err := to.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAdoptionMemory measures the leader's memory for 100k lineage
// records (a typical one: an inline and a reference argument) of 100
// owners, before and after all the owners die and the records are
// adopted, and the apply time of one OwnerDied (1,000 records each).
//
//	go test ./controlplane/fsm -run '^$' -bench AdoptionMemory -benchtime 1x
func BenchmarkAdoptionMemory(b *testing.B) {
	const records, owners = 100_000, 100
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		a := &applier{t: &testing.T{}, f: New(nil)}
		job := a.apply(cmd(&testing.T{}, CmdAddJob, "", &pb.JobInfo{DriverAddress: "driver"}))[0].Id
		base := heap()
		for i := 0; i < records; i += 1000 {
			lc := &pb.LineageCommand{MaxRecords: 2 * records}
			for j := i; j < i+1000; j++ {
				r := rec(job, j, 1, ids.ReturnID(task(j+records), 1))
				r.OwnerAddress = fmt.Sprintf("10.0.0.%d:40000", j%owners)
				r.Resources = map[string]float64{"CPU": 1}
				lc.Records = append(lc.Records, r)
			}
			a.apply(cmd(&testing.T{}, CmdLineage, "", lc))
		}
		recorded := heap()
		start := time.Now()
		for o := range owners {
			a.apply(cmd(&testing.T{}, CmdOwnerDied, "", &pb.OwnerDiedCommand{OwnerAddress: fmt.Sprintf("10.0.0.%d:40000", o)}))
		}
		perDeath := time.Since(start) / owners
		adopted := heap()
		b.ReportMetric(float64(recorded-base)/records, "B/record")
		b.ReportMetric(float64(adopted-base)/records, "B/adopted-record")
		b.ReportMetric(float64(perDeath.Microseconds())/1000, "ms/OwnerDied")
		runtime.KeepAlive(a)
	}
}

// TestRecordOfAnotherOwnerSupersedes: a parent run again by another worker
// submits children with the same task IDs; the new owner's record stands
// (a retry by the same owner does not replace the first).
func TestRecordOfAnotherOwnerSupersedes(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{}))[0].Id
	first := owned(rec(job, 1, 1), "w1")
	first.Function = "first"
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{first}}))
	again := owned(rec(job, 1, 1), "w1")
	again.Function = "again"
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{again}}))
	if r, _ := a.f.LineageTask(task(1)); r.Function != "first" {
		t.Fatalf("a re-record by the same owner replaced the first: %v", r)
	}
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{owned(rec(job, 1, 1), "w2")}}))
	if r, _ := a.f.LineageTask(task(1)); r.OwnerAddress != "w2" {
		t.Fatalf("record owner %q; want the new owner w2", r.OwnerAddress)
	}
	if s := a.f.LineageStats(); s.Records != 1 {
		t.Fatalf("%d records; want 1", s.Records)
	}
}

// A job whose driver ends while its detached actors live is retained:
// its records are adopted (the driver's too), records of its detached
// actors' tasks are still taken, and all of it goes when the last
// detached actor dies. A detached job is retained by any detached actor.
func TestJobRetainedWhileDetachedActorsLive(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{DriverAddress: "driver"}))[0].Id
	plain := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{DriverAddress: "driver2"}))[0].Id
	djob := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{DriverAddress: "driver3", Detached: true}))[0].Id
	a.apply(cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: "keeper", ClassName: "K", JobId: job, Detached: true}),
		cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: "plain-actor", ClassName: "K", JobId: job}))
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{
		owned(rec(job, 1, 1), "driver"), owned(rec(job, 2, 2), "w1"), owned(rec(plain, 3, 1), "driver2"),
		owned(rec(djob, 4, 1), "driver3")},
		ReleasedObjectIds: [][]byte{ret(task(2), 2)}}))
	// Durable Put values, one per job: they end with their job.
	for _, j := range []string{job, plain, djob} {
		a.apply(cmd(t, CmdKVPut, "", &pb.KVPutRequest{Namespace: durable.Namespace, Key: durable.Key(ids.PutID(task(9), 1), 1, j), Value: []byte(j)}))
	}
	durables := func() int {
		keys, _ := a.f.KVList(durable.Namespace, "")
		return len(keys)
	}
	a.apply(cmd(t, CmdFinishJob, "", &pb.FinishJobRequest{JobId: job}),
		cmd(t, CmdFinishJob, "", &pb.FinishJobRequest{JobId: plain}),
		cmd(t, CmdFinishJob, "", &pb.FinishJobRequest{JobId: djob}))
	jobs := map[string]*pb.JobInfo{}
	for _, j := range a.f.Jobs() {
		jobs[j.JobId] = j
	}
	if !jobs[job].Retained || jobs[plain].Retained || !jobs[djob].Retained {
		t.Fatalf("retained: job %v, plain %v, detached job %v; want true, false, true", jobs[job].Retained, jobs[plain].Retained, jobs[djob].Retained)
	}
	if jobs[job].State == pb.JobState_JOB_RUNNING {
		t.Fatal("a retained job must still end")
	}
	if has(a.f, 3) || durables() != 2 {
		t.Fatalf("the plain job's lineage or durable value outlived it (%d durable values; want 2)", durables())
	}
	objs := []ids.ObjectID{ids.ReturnID(task(1), 1), ids.ReturnID(task(2), 1), ids.ReturnID(task(2), 2), ids.ReturnID(task(4), 1)}
	if got := a.f.Adopted(objs); len(got) != 3 || got[0] != objs[0] || got[1] != objs[1] || got[2] != objs[3] {
		t.Fatalf("adopted %v; want the driver's, the worker's unreleased one and the detached job's", got)
	}
	if a.f.actors["plain-actor"].State != pb.ActorState_DEAD || a.f.actors["keeper"].State == pb.ActorState_DEAD {
		t.Fatal("only the non-detached actor dies with its job")
	}
	// The detached actor's own tasks still record lineage, adopted at once.
	a.apply(lineageCmd(t, "", &pb.LineageCommand{Records: []*pb.TaskRecord{owned(rec(job, 5, 1), "keeper-worker")}}))
	if r, err := a.f.LineageTask(task(5)); err != nil || r.AdoptedUnixNano == 0 {
		t.Fatalf("record of a retained job: %v, %v; want it kept and adopted", r, err)
	}
	b := &applier{t: t, f: New(nil)}
	restoreFrom(t, a.f, b.f)
	if len(b.f.Adopted(objs)) != 3 {
		t.Fatal("retention lost in a snapshot")
	}
	// The last detached actor dies: both retentions end (it was the only
	// detached actor, so it held the detached job too).
	a.apply(cmd(t, CmdActorFailed, "", &pb.ActorFailedCommand{ActorId: "keeper", Cause: "killed", NoRestart: true}))
	for _, j := range a.f.Jobs() {
		if j.Retained {
			t.Fatalf("job %s still retained after its last holder died", j.JobId)
		}
	}
	if has(a.f, 1) || has(a.f, 2) || has(a.f, 4) || has(a.f, 5) || durables() != 0 {
		t.Fatal("lineage or durable values of a job whose retention ended were kept")
	}
}
