package taskevents_test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/taskevents"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
	reporter "github.com/manta-ray/manta/sdk/internal/taskevents"
)

func taskID(n int) []byte {
	b := make([]byte, taskevents.TaskIDSize)
	binary.BigEndian.PutUint64(b[8:], uint64(n))
	return b
}

// TestTaskEventsSurviveLeaderFailover reports task events through a
// follower, stops the leader, and checks that the new leader starts a new
// epoch empty and that the reporter's re-send rebuilds its view: every
// task, with its final state and error, is listed by any head.
func TestTaskEventsSurviveLeaderFailover(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 60*time.Second)
	leader := c.WaitLeader()
	follower := (leader + 1) % 3
	// The reporter goes through a follower first: it forwards.
	rep := reporter.New(reporter.Config{Sender: c.Client(), FlushInterval: 50 * time.Millisecond})
	t.Cleanup(func() { rep.Close(ctx) })
	for i := range 30 {
		rep.Add(&pb.TaskEvent{TaskId: taskID(i), JobId: "job1", FuncOrClassName: "square", Type: pb.TaskType_NORMAL_TASK,
			State: pb.TaskEventState_RUNNING, NodeId: "node-1"})
	}
	for i := range 30 {
		ev := &pb.TaskEvent{TaskId: taskID(i), State: pb.TaskEventState_FINISHED}
		if i%10 == 0 {
			ev.State, ev.ErrorType, ev.ErrorMessage = pb.TaskEventState_FAILED, "TASK_EXECUTION_EXCEPTION", fmt.Sprintf("panic: boom %d", i)
		}
		rep.Add(ev)
	}
	viaFollower := pinned(t, c, follower, 10*time.Second)
	var firstEpoch string
	tc.Eventually(t, 20*time.Second, func() error {
		r, err := viaFollower.ListTasks(ctx, &pb.ListTasksRequest{Filters: []*pb.StateFilter{{Key: "state", Predicate: "=", Value: "FAILED"}}})
		if err != nil {
			return err
		}
		if r.NumFiltered != 3 || r.Total != 30 {
			return fmt.Errorf("%d failed of %d", r.NumFiltered, r.Total)
		}
		firstEpoch = r.Epoch
		return nil
	})

	c.Stop(leader)
	newLeader := c.WaitLeader()
	other := 3 - leader - newLeader
	viaOther := pinned(t, c, other, 10*time.Second)
	// The reporter sees the new epoch on its next flush (a new task's
	// event) and re-sends everything it holds.
	rep.Add(&pb.TaskEvent{TaskId: taskID(99), JobId: "job1", FuncOrClassName: "cube", State: pb.TaskEventState_RUNNING})
	tc.Eventually(t, 30*time.Second, func() error {
		r, err := viaOther.ListTasks(ctx, &pb.ListTasksRequest{Limit: 1000})
		if err != nil {
			return err
		}
		if r.Epoch == firstEpoch {
			return fmt.Errorf("epoch did not change")
		}
		if r.Total != 31 {
			return fmt.Errorf("new leader lists %d tasks", r.Total)
		}
		return nil
	})
	g, err := viaOther.GetTask(ctx, hex.EncodeToString(taskID(10)))
	if err != nil {
		t.Fatal(err)
	}
	if a := g.Attempts[0]; a.State != pb.TaskEventState_FAILED || a.ErrorMessage != "panic: boom 10" || a.NodeId != "node-1" || a.FuncOrClassName != "square" {
		t.Fatalf("task 10 on the new leader: %v", a)
	}
	s, err := viaOther.SummarizeTasks(ctx, &pb.SummarizeTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Summaries) != 2 || s.Summaries[1].FuncOrClassName != "square" ||
		s.Summaries[1].StateCounts["FINISHED"] != 27 || s.Summaries[1].StateCounts["FAILED"] != 3 {
		t.Fatalf("summary: %v", s.Summaries)
	}
	if st := rep.Stats(); st.Resent < 30 {
		t.Fatalf("reporter stats %+v", st)
	}
}

// pinned returns a client that talks to one head only.
func pinned(t *testing.T, c *tc.Cluster, i int, timeout time.Duration) *cpclient.Client {
	t.Helper()
	cl, err := cpclient.New(cpclient.Config{Addresses: []string{c.Addresses()[i]}, Token: c.Token(), Timeout: timeout, AttemptTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// BenchmarkReporterCPU is the reporter's whole cost per event, against a
// real head: Add on the caller's goroutine plus the flusher's stamping,
// merging into the recent set, marshalling and sending, as process CPU
// time (user+system) per event. A task makes about four events (pending,
// submitted to a worker, running, finished); compare 4× this with a task's
// cost in tasks_async.
func BenchmarkReporterCPU(b *testing.B) {
	c := tc.Start(b, 1, nil)
	rep := reporter.New(reporter.Config{Sender: c.Client(), FlushInterval: 100 * time.Millisecond})
	defer rep.Close(tc.Ctx(b, time.Minute))
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// The head runs in this process too; its share is measured apart by
	// BenchmarkReportTaskEvents, so this figure is an upper bound.
	start := cpu()
	b.ResetTimer()
	for i := range b.N {
		rep.Add(&pb.TaskEvent{TaskId: taskID(i / 4), JobId: "job1", FuncOrClassName: "square",
			Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState(2 + i%4)})
	}
	if err := rep.Flush(tc.Ctx(b, time.Minute)); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/event")
}

// TestTaskEventsSurviveLeadershipTransfer: a transfer (no head dies) also
// starts the new leader's buffer empty in a new epoch; the reporter's
// re-send rebuilds it.
func TestTaskEventsSurviveLeadershipTransfer(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 60*time.Second)
	old := c.WaitLeader()
	cl := c.Client()
	rep := reporter.New(reporter.Config{Sender: cl, FlushInterval: 50 * time.Millisecond})
	t.Cleanup(func() { rep.Close(ctx) })
	for i := range 10 {
		rep.Add(&pb.TaskEvent{TaskId: taskID(i), JobId: "job1", FuncOrClassName: "f", State: pb.TaskEventState_FINISHED})
	}
	var epoch string
	tc.Eventually(t, 20*time.Second, func() error {
		r, err := cl.ListTasks(ctx, &pb.ListTasksRequest{})
		if err != nil || r.Total != 10 {
			return fmt.Errorf("%v %v", r.GetTotal(), err)
		}
		epoch = r.Epoch
		return nil
	})
	if err := cl.RaftTransferLeader(ctx, ""); err != nil {
		t.Fatal(err)
	}
	tc.Eventually(t, 20*time.Second, func() error {
		if l := c.Leader(); l == old || l < 0 {
			return fmt.Errorf("leader %d", l)
		}
		return nil
	})
	c.WaitLeader()
	rep.Add(&pb.TaskEvent{TaskId: taskID(10), JobId: "job1", FuncOrClassName: "f", State: pb.TaskEventState_RUNNING})
	tc.Eventually(t, 20*time.Second, func() error {
		r, err := cl.ListTasks(ctx, &pb.ListTasksRequest{})
		if err != nil {
			return err
		}
		if r.Epoch == epoch || r.Total != 11 {
			return fmt.Errorf("epoch %s (was %s), %d tasks", r.Epoch, epoch, r.Total)
		}
		return nil
	})
}
