package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestLineageCommands records a two-task lineage on a cluster of heads
// (no raylets, so object locations are unknown) and reads it back with
// `manta lineage show/task/stats`, then checks the answers to bad input.
func TestLineageCommands(t *testing.T) {
	c := startCluster(t, 1)
	env := clusterEnv(c)
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	parent := ids.NewTaskID("cli", ids.TaskID{}, 1)
	child := ids.NewTaskID("cli", ids.TaskID{}, 2)
	out := ids.ReturnID(parent, 1)
	if _, err := cl.RecordLineage(ctx, &pb.RecordLineageRequest{Records: []*pb.TaskRecord{
		{TaskId: parent[:], JobId: "cli", Function: "load", NumReturns: 1, Args: []*pb.LineageArg{{Value: []byte("data.csv"), Format: 1}}},
		{TaskId: child[:], JobId: "cli", Function: "train", NumReturns: 1, Args: []*pb.LineageArg{{ObjectId: out[:], OwnerAddress: "o:1"}}},
	}, Updates: []*pb.TaskUpdate{{TaskId: child[:], Attempt: 2, State: pb.TaskState_TASK_RUNNING, NodeId: "node-a"}}}); err != nil {
		t.Fatal(err)
	}
	final := ids.ReturnID(child, 1)

	r := mantaCmd(t, env, "", "lineage", "show", final.String())
	for _, want := range []string{"train  TASK_RUNNING  node=node-a  attempts=2", "load  TASK_SUBMITTED", `value 8 B raw "data.csv"`, "[unknown", out.String()} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("show lacks %q: %v", want, r)
		}
	}
	if r := mantaCmd(t, env, "", "lineage", "show", final.String(), "--depth", "1"); r.code != 0 || strings.Contains(r.stdout, "load") {
		t.Fatalf("--depth 1 shows the parent: %v", r)
	}
	if r := mantaCmd(t, env, "", "lineage", "show", final.String(), "--dot"); r.code != 0 || !strings.HasPrefix(r.stdout, "digraph lineage {") {
		t.Fatalf("--dot: %v", r)
	}
	if r := mantaCmd(t, env, "", "lineage", "task", parent.String()); r.code != 0 || !strings.Contains(r.stdout, "function:  load") {
		t.Fatalf("task: %v", r)
	}
	r = mantaCmd(t, env, "", "lineage", "stats", "--json")
	st := decodeJSON[lineageStatsReport](t, r)
	// Both records came in one write: the oldest is the lower task ID.
	oldest := parent
	if bytes.Compare(child[:], parent[:]) < 0 {
		oldest = child
	}
	if st.Records != 2 || st.Bytes == 0 || len(st.Jobs) != 1 || st.Jobs[0].Job != "cli" || st.Oldest != oldest.String() {
		t.Fatalf("stats: %+v", st)
	}

	unknown := ids.NewTaskID("cli", ids.TaskID{}, 9)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"lineage", "task", unknown.String()}, exitFailure, "(NotFound)"},
		{[]string{"lineage", "show", ids.ReturnID(unknown, 1).String()}, exitFailure, "(NotFound)"},
		{[]string{"lineage", "show", ids.PutID(parent, 1).String()}, exitFailure, "made by Put"},
		{[]string{"lineage", "show", "xyz"}, exitUsage, "(InvalidArgument)"},
		{[]string{"lineage", "task", out.String()}, exitUsage, "(InvalidArgument)"},
	} {
		if r := mantaCmd(t, env, "", tc.args...); r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %v; want exit %d and %q", tc.args, r, tc.code, tc.want)
		}
	}
}
