package taskevents

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

func colEvent(i byte, parent []byte) *pb.TaskEvent {
	id := make([]byte, TaskIDSize)
	id[0] = i
	return &pb.TaskEvent{TaskId: id, Attempt: int32(i % 2), JobId: "job-1", FuncOrClassName: "f", NodeId: "n1",
		WorkerId: "w1", WorkerPid: 7, Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState_FINISHED,
		ParentTaskId: parent, StateUnixNano: []int64{0, 0, 100, 0, 200 + int64(i), 300}}
}

// TestColumnsRoundTrip: events that fit travel as columns and come back
// equal, sharing the dictionary and the parents.
func TestColumnsRoundTrip(t *testing.T) {
	parent := make([]byte, TaskIDSize)
	parent[3] = 9
	var in []*pb.TaskEvent
	var enc ColumnEncoder
	for i := range byte(5) {
		p := parent
		if i == 4 {
			p = nil
		}
		ev := colEvent(i, p)
		if !Fits(ev) {
			t.Fatalf("event %d does not fit", i)
		}
		enc.Add(ev)
		in = append(in, ev)
	}
	if Fits(&pb.TaskEvent{TaskId: parent, ErrorMessage: "boom"}) || Fits(&pb.TaskEvent{TaskId: parent, RequiredResources: map[string]float64{"GPU": 1}}) {
		t.Fatal("an event with an error or resources fits in columns")
	}
	cols := enc.Take()
	if len(cols.Strings) != 5 || len(cols.Parents) != TaskIDSize {
		t.Fatalf("dictionary %q and %d parent bytes, want each string and the parent once", cols.Strings, len(cols.Parents))
	}
	out, err := Events(&pb.ReportTaskEventsRequest{Columns: cols})
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if !proto.Equal(in[i], out[i]) {
			t.Fatalf("event %d: sent %v, got %v", i, in[i], out[i])
		}
	}
	if enc.Len() != 0 {
		t.Fatal("Take left events behind")
	}
}

// TestColumnsMalformed: a report whose columns disagree is refused whole
// with InvalidArgument naming the column, and nothing is merged.
func TestColumnsMalformed(t *testing.T) {
	for name, mangle := range map[string]func(c *pb.TaskEventColumns){
		"task_ids":  func(c *pb.TaskEventColumns) { c.TaskIds = c.TaskIds[1:] },
		"times":     func(c *pb.TaskEventColumns) { c.Times = c.Times[1:] },
		"node_id":   func(c *pb.TaskEventColumns) { c.NodeId[0] = 99 },
		"parent":    func(c *pb.TaskEventColumns) { c.Parent[0] = 5 },
		"worker_id": func(c *pb.TaskEventColumns) { c.WorkerId = nil },
	} {
		var enc ColumnEncoder
		enc.Add(colEvent(1, nil))
		enc.Add(colEvent(2, nil))
		cols := enc.Take()
		mangle(cols)
		b := New(Config{})
		b.Reset("e")
		if _, err := b.ReportColumns([]*pb.TaskEvent{colEvent(3, nil)}, cols, nil); err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s mangled: %v, want an error naming it", name, err)
		}
		if b.Len() != 0 {
			t.Fatalf("%s mangled: %d attempts merged from a refused report", name, b.Len())
		}
	}
}
