package taskevents

// The columnar form of task events (pb.TaskEventColumns). Reporters send
// every task they run or own, so at tens of thousands of tasks a second a
// protobuf message per task was most of what events cost: encoding it in
// the owner, decoding and allocating it on the leader. Most events are
// alike (same job, function, node and worker; no error, no resources
// beyond the default): as packed columns with a string dictionary they
// encode and decode in a fraction of the time. Events that do not fit
// (errors, resources, names) travel as messages beside them.

import (
	"fmt"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// timesPerEvent is the width of an event's state_unix_nano in columns.
const timesPerEvent = 8

// ColumnEncoder builds a pb.TaskEventColumns. The zero value is ready.
type ColumnEncoder struct {
	c    *pb.TaskEventColumns
	strs map[string]uint32
	pars map[[TaskIDSize]byte]uint32
}

// Fits says whether ev can travel as columns.
func Fits(ev *pb.TaskEvent) bool {
	return len(ev.TaskId) == TaskIDSize && (len(ev.ParentTaskId) == 0 || len(ev.ParentTaskId) == TaskIDSize) &&
		len(ev.RequiredResources) == 0 && ev.ErrorType == "" && ev.ErrorMessage == "" && ev.Stack == "" &&
		ev.CallSite == "" && ev.Name == "" && len(ev.StateUnixNano) <= timesPerEvent
}

// Len is the number of events added since the last Take.
func (e *ColumnEncoder) Len() int {
	if e.c == nil {
		return 0
	}
	return len(e.c.Attempt)
}

func (e *ColumnEncoder) str(s string) uint32 {
	if s == "" {
		return 0
	}
	if i, ok := e.strs[s]; ok {
		return i
	}
	i := uint32(len(e.c.Strings))
	e.c.Strings = append(e.c.Strings, s)
	e.strs[s] = i
	return i
}

// Add appends ev, which must Fit.
func (e *ColumnEncoder) Add(ev *pb.TaskEvent) {
	if e.c == nil {
		e.c = &pb.TaskEventColumns{Strings: []string{""}}
		e.strs = map[string]uint32{}
		e.pars = map[[TaskIDSize]byte]uint32{}
	}
	c := e.c
	c.TaskIds = append(c.TaskIds, ev.TaskId...)
	c.Attempt = append(c.Attempt, ev.Attempt)
	c.JobId = append(c.JobId, e.str(ev.JobId))
	c.FuncOrClassName = append(c.FuncOrClassName, e.str(ev.FuncOrClassName))
	c.ActorId = append(c.ActorId, e.str(ev.ActorId))
	c.NodeId = append(c.NodeId, e.str(ev.NodeId))
	c.WorkerId = append(c.WorkerId, e.str(ev.WorkerId))
	c.WorkerPid = append(c.WorkerPid, ev.WorkerPid)
	c.Type = append(c.Type, int32(ev.Type))
	c.State = append(c.State, int32(ev.State))
	parent := uint32(0)
	if len(ev.ParentTaskId) == TaskIDSize {
		var k [TaskIDSize]byte
		copy(k[:], ev.ParentTaskId)
		i, ok := e.pars[k]
		if !ok {
			i = uint32(len(c.Parents)/TaskIDSize) + 1
			c.Parents = append(c.Parents, k[:]...)
			e.pars[k] = i
		}
		parent = i
	}
	c.Parent = append(c.Parent, parent)
	var ts [timesPerEvent]int64
	copy(ts[:], ev.StateUnixNano)
	c.Times = append(c.Times, ts[:]...)
}

// Take returns the columns built so far (nil if none) and starts anew.
func (e *ColumnEncoder) Take() *pb.TaskEventColumns {
	c := e.c
	e.c, e.strs, e.pars = nil, nil, nil
	return c
}

// columnsLen checks that c is well formed and returns its event count.
func columnsLen(c *pb.TaskEventColumns) (int, error) {
	if c == nil {
		return 0, nil
	}
	n := len(c.Attempt)
	bad := func(field string, format string, args ...any) (int, error) {
		return 0, rpcerr.Wrapf(ErrBadColumns, "columns.%s: %s", field, fmt.Sprintf(format, args...))
	}
	if len(c.TaskIds) != n*TaskIDSize {
		return bad("task_ids", "%d bytes for %d events, want %d each", len(c.TaskIds), n, TaskIDSize)
	}
	if len(c.Times) != n*timesPerEvent {
		return bad("times", "%d for %d events, want %d each", len(c.Times), n, timesPerEvent)
	}
	if len(c.Parents)%TaskIDSize != 0 {
		return bad("parents", "%d bytes, not a multiple of %d", len(c.Parents), TaskIDSize)
	}
	for name, l := range map[string]int{"job_id": len(c.JobId), "func_or_class_name": len(c.FuncOrClassName),
		"actor_id": len(c.ActorId), "node_id": len(c.NodeId), "worker_id": len(c.WorkerId),
		"worker_pid": len(c.WorkerPid), "type": len(c.Type), "state": len(c.State), "parent": len(c.Parent)} {
		if l != n {
			return bad(name, "%d entries for %d events", l, n)
		}
	}
	ns, np := uint32(len(c.Strings)), uint32(len(c.Parents)/TaskIDSize)
	for _, col := range []struct {
		name string
		idx  []uint32
	}{{"job_id", c.JobId}, {"func_or_class_name", c.FuncOrClassName}, {"actor_id", c.ActorId},
		{"node_id", c.NodeId}, {"worker_id", c.WorkerId}} {
		for _, i := range col.idx {
			if i >= ns {
				return bad(col.name, "string index %d, the dictionary has %d", i, ns)
			}
		}
	}
	for _, i := range c.Parent {
		if i > np {
			return bad("parent", "index %d, there are %d parents", i, np)
		}
	}
	return n, nil
}

// eachColumn calls fn with each event of c, in one scratch event that fn
// must not keep (the buffer copies what it keeps). c must be well formed
// (columnsLen).
func eachColumn(c *pb.TaskEventColumns, n int, fn func(*pb.TaskEvent)) {
	var ev pb.TaskEvent
	for i := range n {
		ev.TaskId = c.TaskIds[i*TaskIDSize : (i+1)*TaskIDSize]
		ev.Attempt = c.Attempt[i]
		ev.JobId = c.Strings[c.JobId[i]]
		ev.FuncOrClassName = c.Strings[c.FuncOrClassName[i]]
		ev.ActorId = c.Strings[c.ActorId[i]]
		ev.NodeId = c.Strings[c.NodeId[i]]
		ev.WorkerId = c.Strings[c.WorkerId[i]]
		ev.WorkerPid = c.WorkerPid[i]
		ev.Type = pb.TaskType(c.Type[i])
		ev.State = pb.TaskEventState(c.State[i])
		ev.ParentTaskId = nil
		if p := c.Parent[i]; p > 0 {
			ev.ParentTaskId = c.Parents[(p-1)*TaskIDSize : p*TaskIDSize]
		}
		ev.StateUnixNano = c.Times[i*timesPerEvent : (i+1)*timesPerEvent]
		fn(&ev)
	}
}

// Events returns every event of a report, its columns decoded into
// messages of their own (for tests and tools; the buffer merges columns
// without making messages).
func Events(req *pb.ReportTaskEventsRequest) ([]*pb.TaskEvent, error) {
	n, err := columnsLen(req.Columns)
	if err != nil {
		return nil, err
	}
	out := append([]*pb.TaskEvent(nil), req.Events...)
	eachColumn(req.Columns, n, func(ev *pb.TaskEvent) {
		cp := &pb.TaskEvent{TaskId: append([]byte(nil), ev.TaskId...), Attempt: ev.Attempt, JobId: ev.JobId,
			FuncOrClassName: ev.FuncOrClassName, ActorId: ev.ActorId, NodeId: ev.NodeId, WorkerId: ev.WorkerId,
			WorkerPid: ev.WorkerPid, Type: ev.Type, State: ev.State,
			ParentTaskId: append([]byte(nil), ev.ParentTaskId...), StateUnixNano: append([]int64(nil), ev.StateUnixNano...)}
		if len(cp.ParentTaskId) == 0 {
			cp.ParentTaskId = nil
		}
		for len(cp.StateUnixNano) > 0 && cp.StateUnixNano[len(cp.StateUnixNano)-1] == 0 {
			cp.StateUnixNano = cp.StateUnixNano[:len(cp.StateUnixNano)-1]
		}
		out = append(out, cp)
	})
	return out, nil
}
