package state

import (
	"errors"
	"testing"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestTaskRowTimesAndError(t *testing.T) {
	ev := &pb.TaskEvent{TaskId: make([]byte, 16), FuncOrClassName: "f", State: pb.TaskEventState_FAILED,
		ErrorType: "TASK_EXECUTION_EXCEPTION", ErrorMessage: "panic: x", Stack: "main.f()\n\tf.go:3",
		StateUnixNano: []int64{2: 1_000_000_000, 4: 2_000_000_000, 6: 3_500_000_000}}
	r := TaskRow(ev)
	if r["creation_time_ms"] != int64(1000) || r["start_time_ms"] != int64(2000) || r["end_time_ms"] != int64(3500) {
		t.Fatalf("times: %v %v %v", r["creation_time_ms"], r["start_time_ms"], r["end_time_ms"])
	}
	if r["error_message"] != "panic: x\nmain.f()\n\tf.go:3" || r["name"] != "f" || r["actor_id"] != nil {
		t.Fatalf("row: %v", r)
	}
	evs := r["events"].([]map[string]any)
	if len(evs) != 3 || evs[0]["state"] != "PENDING_NODE_ASSIGNMENT" || evs[2]["state"] != "FAILED" {
		t.Fatalf("events: %v", evs)
	}
	if b := brief(Tasks, r); b["events"] != nil || b["error_message"] == nil {
		t.Fatalf("brief: %v", b)
	}
}

func TestNormalizeKind(t *testing.T) {
	for in, want := range map[string]string{"task": Tasks, "tasks": Tasks, "placement-groups": PlacementGroups,
		"placement_group": PlacementGroups, "Actors": Actors} {
		if got, err := NormalizeKind(in); err != nil || got != want {
			t.Errorf("%s: %s %v", in, got, err)
		}
	}
	if _, err := NormalizeKind("runtime_envs"); !errors.Is(err, ErrUnknownKind) || !errors.Is(err, rpcerr.ErrInvalidArgument) {
		t.Errorf("unknown kind: %v", err)
	}
}

func TestPageCapsAndFilters(t *testing.T) {
	rows := make([]Row, 0, MaxLimit+5)
	for i := range MaxLimit + 5 {
		rows = append(rows, Row{"node_id": "n", "state": []string{"ALIVE", "DEAD"}[i%2]})
	}
	o, err := options([]Option{WithLimit(MaxLimit + 100), WithFilter("state!=dead")})
	if err != nil {
		t.Fatal(err)
	}
	l := page(Nodes, rows, o, nil)
	if l.Limit != MaxLimit || l.NumFiltered != (MaxLimit+5+1)/2 || len(l.Rows) != min(MaxLimit, l.NumFiltered) || len(l.Warnings) != 1 {
		t.Fatalf("limit %d, filtered %d, rows %d, warnings %v", l.Limit, l.NumFiltered, len(l.Rows), l.Warnings)
	}
}
