package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

func stateTaskID(n int) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b[8:], uint64(n))
	return b
}

// TestStateCommands reports a known set of task events to a cluster of
// real head processes and checks what `manta list/get/summary` say about
// them: the failed task's error, exact counts, NotFound and bad filters.
func TestStateCommands(t *testing.T) {
	c := startCluster(t, 1)
	env := clusterEnv(c)
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// 7 of square finish, 2 fail with a panic, 1 runs; 3 of Counter.incr
	// finish.
	var evs []*pb.TaskEvent
	for i := range 10 {
		ev := &pb.TaskEvent{TaskId: stateTaskID(i), JobId: "job1", FuncOrClassName: "square", Type: pb.TaskType_NORMAL_TASK,
			State: pb.TaskEventState_FINISHED, NodeId: "node-1", StateUnixNano: []int64{5: time.Now().UnixNano()}}
		switch {
		case i < 2:
			ev.State, ev.ErrorType, ev.ErrorMessage = pb.TaskEventState_FAILED, "TASK_EXECUTION_EXCEPTION", fmt.Sprintf("panic: square %d exploded", i)
		case i == 9:
			ev.State = pb.TaskEventState_RUNNING
		}
		evs = append(evs, ev)
	}
	for i := 10; i < 13; i++ {
		evs = append(evs, &pb.TaskEvent{TaskId: stateTaskID(i), JobId: "job1", FuncOrClassName: "Counter.incr",
			Type: pb.TaskType_ACTOR_TASK, ActorId: "a1", State: pb.TaskEventState_FINISHED})
	}
	if _, err := cl.ReportTaskEvents(ctx, &pb.ReportTaskEventsRequest{Events: evs}); err != nil {
		t.Fatal(err)
	}

	r := mantaCmd(t, env, "", "list", "tasks", "--filter", "state=FAILED")
	if r.code != 0 || !strings.Contains(r.stdout, "panic: square 0 exploded") || !strings.Contains(r.stdout, "panic: square 1 exploded") ||
		!strings.Contains(r.stdout, "2 of 2 shown") {
		t.Fatalf("list failed tasks: %v", r)
	}
	rows := decodeJSON[[]map[string]any](t, mantaCmd(t, env, "", "list", "tasks", "--filter", "state!=FINISHED", "--json"))
	if len(rows) != 3 {
		t.Fatalf("not finished: %v", rows)
	}
	if r := mantaCmd(t, env, "", "list", "tasks", "--limit", "5"); r.code != 0 || !strings.Contains(r.stderr, "next page: --page-token") ||
		!strings.Contains(r.stderr, "showing 5 of 13") {
		t.Fatalf("limit: %v", r)
	}
	if r := mantaCmd(t, env, "", "list", "tasks", "--limit", "50000"); r.code != 0 || !strings.Contains(r.stderr, "capped") {
		t.Fatalf("capped: %v", r)
	}
	if r := mantaCmd(t, env, "", "list", "tasks", "--filter", "colour=red"); r.code != 1 || !strings.Contains(r.stderr, `"colour"`) ||
		!strings.Contains(r.stderr, "InvalidArgument") {
		t.Fatalf("unknown field: %v", r)
	}
	if r := mantaCmd(t, env, "", "list", "tasks", "--filter", "worker_pid=abc"); r.code == 0 || !strings.Contains(r.stderr, "worker_pid") {
		t.Fatalf("wrong type: %v", r)
	}
	if r := mantaCmd(t, env, "", "list", "actors", "--filter", "num_restarts=x"); r.code == 0 || !strings.Contains(r.stderr, "num_restarts") {
		t.Fatalf("actors wrong type: %v", r)
	}

	s := decodeJSON[struct {
		Stats   map[string]int `json:"stats"`
		Summary []struct {
			Name   string         `json:"func_or_class_name"`
			Type   string         `json:"type"`
			Counts map[string]int `json:"state_counts"`
		} `json:"summary"`
	}](t, mantaCmd(t, env, "", "summary", "tasks", "--format", "json"))
	if s.Stats["total_tasks"] != 10 || s.Stats["total_actor_tasks"] != 3 || len(s.Summary) != 2 ||
		s.Summary[0].Name != "Counter.incr" || s.Summary[0].Counts["FINISHED"] != 3 ||
		s.Summary[1].Name != "square" || s.Summary[1].Counts["FINISHED"] != 7 || s.Summary[1].Counts["FAILED"] != 2 ||
		s.Summary[1].Counts["RUNNING"] != 1 {
		t.Fatalf("summary: %+v", s)
	}
	if r := mantaCmd(t, env, "", "summary", "tasks"); r.code != 0 || !strings.Contains(r.stdout, "FAILED: 2, FINISHED: 7, RUNNING: 1") {
		t.Fatalf("summary table: %v", r)
	}

	id := hex.EncodeToString(stateTaskID(1))
	if r := mantaCmd(t, env, "", "get", "task", id); r.code != 0 || !strings.Contains(r.stdout, "panic: square 1 exploded") {
		t.Fatalf("get task: %v", r)
	}
	for _, args := range [][]string{
		{"get", "task", hex.EncodeToString(stateTaskID(999))},
		{"get", "actor", "nosuchactor"},
		{"get", "node", "nosuchnode"},
	} {
		if r := mantaCmd(t, env, "", args...); r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "not found") {
			t.Fatalf("%v: %v", args, r)
		}
	}
	// A group no node could hold is listed as INFEASIBLE, with why, by
	// `manta list placement-groups` and `manta status`.
	pgID, err := cl.CreatePlacementGroup(ctx, &pb.PlacementGroupInfo{JobId: "00000001", Name: "too-big",
		Strategy: pb.PlacementStrategy_PACK, Bundles: []*pb.Bundle{{Resources: map[string]float64{"CPU": 1000}}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := mantaCmd(t, env, "", "list", "placement-groups")
		if r.code == 0 && strings.Contains(r.stdout, pgID) && strings.Contains(r.stdout, "INFEASIBLE") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("placement groups: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := mantaCmd(t, env, "", "status"); r.code != 0 || !strings.Contains(r.stdout, "placement groups not placed") ||
		!strings.Contains(r.stdout, pgID) || !strings.Contains(r.stdout, "infeasible") {
		t.Fatalf("status: %v", r)
	}
	if r := mantaCmd(t, env, "", "list", "nodes", "--format", "yaml"); r.code != 0 {
		t.Fatalf("nodes: %v", r)
	}
	if r := mantaCmd(t, env, "", "list", "workers"); r.code != 0 {
		t.Fatalf("workers: %v", r)
	}
	if r := mantaCmd(t, env, "", "list", "objects"); r.code != 0 {
		t.Fatalf("objects: %v", r)
	}
}
