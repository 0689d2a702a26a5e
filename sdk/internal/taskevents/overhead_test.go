package taskevents_test

import (
	"context"
	"encoding/binary"
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/manta-ray/manta/proto/controlpb"
	reporter "github.com/manta-ray/manta/sdk/internal/taskevents"
	"github.com/manta-ray/manta/sdk/ray"
)

func TestMain(m *testing.M) {
	if ray.IsWorker() {
		ray.Main(func(context.Context) error { return nil })
	}
	os.Exit(m.Run())
}

var noop = ray.Func1("taskevents.noop", func(_ context.Context, x int) (int, error) { return x, nil })

// marshalSender costs what a send costs the owner before the network:
// encoding the batch.
type marshalSender struct{}

func (marshalSender) ReportTaskEvents(_ context.Context, req *pb.ReportTaskEventsRequest) (*pb.ReportTaskEventsResponse, error) {
	if _, err := proto.Marshal(req); err != nil {
		return nil, err
	}
	return &pb.ReportTaskEventsResponse{Epoch: "e"}, nil
}

// BenchmarkTasksAsyncEvents is Ray's single_client_tasks_async (batches
// of 1000 trivial tasks on an embedded cluster) with task events off and
// on. The SDK does not report yet, so "on" makes the calls the owner's
// task manager will make, from the driver: a full event at submission,
// bare state changes when the task is pushed to a worker, runs and ends
// (the running one is the worker's in the real thing, so this overstates
// the driver's share). Compare the tasks/s, and the driver's CPU per task
// (steadier on a loaded machine), of the two.
func BenchmarkTasksAsyncEvents(b *testing.B) {
	ctx := context.Background()
	if err := ray.Init(ctx); err != nil {
		b.Fatal(err)
	}
	defer ray.Shutdown(ctx)
	cpu1 := map[string]float64{"CPU": 1} // the spec's, shared as the SDK would
	batch := func(rep *reporter.Reporter, base int) {
		refs := make([]ray.ObjectRef[int], 1000)
		ids := make([][]byte, len(refs))
		for i := range refs {
			if rep != nil {
				id := make([]byte, 16)
				binary.BigEndian.PutUint64(id[8:], uint64(base+i))
				ids[i] = id
				rep.Add(&pb.TaskEvent{TaskId: id, JobId: "job1", FuncOrClassName: "taskevents.noop",
					Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState_PENDING_NODE_ASSIGNMENT,
					RequiredResources: cpu1})
			}
			refs[i] = noop.Remote(ctx, ray.Val(i))
			if rep != nil {
				rep.State(ids[i], 0, pb.TaskEventState_SUBMITTED_TO_WORKER)
			}
		}
		if _, err := ray.GetAll(ctx, refs); err != nil {
			b.Fatal(err)
		}
		if rep != nil {
			for _, id := range ids {
				rep.State(id, 0, pb.TaskEventState_RUNNING)
				rep.State(id, 0, pb.TaskEventState_FINISHED)
			}
		}
	}
	batch(nil, 0) // workers warm
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, mode := range []string{"off", "on", "off", "on", "off", "on"} {
		b.Run(mode, func(b *testing.B) {
			var rep *reporter.Reporter
			if mode == "on" {
				rep = reporter.New(reporter.Config{Sender: marshalSender{}})
				defer rep.Close(ctx)
			}
			start, c0 := time.Now(), cpu()
			for i := range b.N {
				batch(rep, i*1000)
			}
			if rep != nil {
				rep.Flush(ctx)
			}
			b.ReportMetric(float64(b.N*1000)/time.Since(start).Seconds(), "tasks/s")
			// The driver process's CPU per task (the embedded head and
			// raylet included; workers are other processes).
			b.ReportMetric(float64(cpu()-c0)/float64(b.N*1000)/1e3, "driver-cpu-us/task")
		})
	}
}
