package head_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/statefilter"
	"github.com/manta-ray/manta/controlplane/taskevents"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func taskID(n int) []byte {
	b := make([]byte, taskevents.TaskIDSize)
	b[15] = byte(n)
	return b
}

// TestTaskEventsBadInput: unknown task IDs are NotFound, bad filters are
// InvalidArgument naming the field, a limit above the maximum is capped
// and the reply says so.
func TestTaskEventsBadInput(t *testing.T) {
	c := tc.Start(t, 1, nil)
	ctx := tc.Ctx(t, 30*time.Second)
	cl := c.Client()
	if _, err := cl.ReportTaskEvents(ctx, &pb.ReportTaskEventsRequest{Events: []*pb.TaskEvent{{TaskId: taskID(1), State: pb.TaskEventState_RUNNING}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.GetTask(ctx, hex.EncodeToString(taskID(2))); !errors.Is(err, rpcerr.ErrNotFound) {
		t.Fatalf("unknown task: %v", err)
	}
	if _, err := cl.GetTask(ctx, "xyz"); !errors.Is(err, rpcerr.ErrInvalidArgument) {
		t.Fatalf("bad task id: %v", err)
	}
	for _, f := range []string{"colour=red", "worker_pid=abc"} {
		ff, _ := statefilter.Parse(f)
		_, err := cl.ListTasks(ctx, &pb.ListTasksRequest{Filters: []*pb.StateFilter{ff}})
		if !errors.Is(err, rpcerr.ErrInvalidArgument) || !strings.Contains(err.Error(), ff.Key) {
			t.Fatalf("filter %s: %v", f, err)
		}
	}
	r, err := cl.ListTasks(ctx, &pb.ListTasksRequest{Limit: 1 << 30})
	if err != nil || r.Limit != taskevents.DefaultMaxLimit || !strings.Contains(strings.Join(r.Warnings, ";"), "capped") {
		t.Fatalf("capped: %v %v", r, err)
	}
}

// BenchmarkReportTaskEvents measures ReportTaskEvents over gRPC on real
// heads, in batches of 1000 events (a reporter's batch), straight to the
// leader and through a follower that forwards.
func BenchmarkReportTaskEvents(b *testing.B) {
	c := tc.Start(b, 3, nil)
	ctx := tc.Ctx(b, 10*time.Minute)
	leader := c.WaitLeader()
	for _, via := range []struct {
		name string
		head int
	}{{"leader", leader}, {"follower", (leader + 1) % 3}} {
		b.Run(via.name, func(b *testing.B) {
			cl, err := cpclient.New(cpclient.Config{Addresses: []string{c.Addresses()[via.head]}, Token: c.Token()})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			batch := make([]*pb.TaskEvent, 1000)
			n := 0
			b.ResetTimer()
			for range b.N {
				for j := range batch {
					id := make([]byte, taskevents.TaskIDSize)
					binary.BigEndian.PutUint64(id[8:], uint64(n/3))
					batch[j] = &pb.TaskEvent{TaskId: id, JobId: "job1", FuncOrClassName: "square", NodeId: "node-1",
						Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState(3 + n%3),
						StateUnixNano: make([]int64, 6)}
					batch[j].StateUnixNano[3+n%3] = int64(n)
					n++
				}
				if _, err := cl.ReportTaskEvents(ctx, &pb.ReportTaskEventsRequest{Events: batch}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
		})
	}
}
