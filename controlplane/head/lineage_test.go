package head_test

import (
	"errors"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/fsm"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestLineageThroughFollowerSurvivesFullRestart writes lineage through a
// follower, reads it back on every head, stops all heads, starts them
// again on their data dirs, and reads the same lineage.
func TestLineageThroughFollowerSurvivesFullRestart(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 2*time.Minute)
	follower := (c.WaitLeader() + 1) % 3
	cl := pinned(t, c, follower, 10*time.Second)

	parent := ids.NewTaskID("job", ids.TaskID{}, 1)
	child := ids.NewTaskID("job", ids.TaskID{}, 2)
	out := ids.ReturnID(parent, 1)
	req := &pb.RecordLineageRequest{Records: []*pb.TaskRecord{
		{TaskId: parent[:], JobId: "job", Function: "make", NumReturns: 1, Args: []*pb.LineageArg{{Value: []byte{1, 2}}}},
		{TaskId: child[:], JobId: "job", Function: "use", NumReturns: 1, Args: []*pb.LineageArg{{ObjectId: out[:], OwnerAddress: "o"}}},
	}, Updates: []*pb.TaskUpdate{{TaskId: parent[:], Attempt: 1, State: pb.TaskState_TASK_FINISHED, NodeId: "n1"}}}
	r, err := cl.RecordLineage(ctx, req)
	if err != nil || r.Recorded != 2 {
		t.Fatalf("record through follower: %v, %v", r, err)
	}
	// A retry of the same request (same ID) answers the same, applies nothing.
	if r2, err := cl.RecordLineage(ctx, req); err != nil || r2.Recorded != 2 || r2.Header.Index != r.Header.Index {
		t.Fatalf("retry: %v, %v; want the first answer at index %d", r2, err, r.Header.Index)
	}
	check := func(stage string) {
		t.Helper()
		for i := range c.Heads {
			hc := pinned(t, c, i, 10*time.Second)
			tc.Eventually(t, 10*time.Second, func() error {
				g, err := hc.GetLineage(ctx, ids.ReturnID(child, 1), 0, true)
				if err != nil {
					return err
				}
				if len(g.Records) != 2 || g.Records[0].Function != "use" || g.Records[1].Function != "make" ||
					g.Records[1].State != pb.TaskState_TASK_FINISHED || g.Records[1].NodeId != "n1" {
					return errors.New("wrong lineage: " + g.String())
				}
				return nil
			})
		}
		if rec, err := cl.GetLineageTask(ctx, parent, false); err != nil || rec.Attempts != 1 {
			t.Fatalf("%s: task read: %v, %v", stage, rec, err)
		}
	}
	check("before restart")

	for i := range c.Heads {
		c.Stop(i)
	}
	for i := range c.Heads {
		c.Restart(i)
	}
	c.WaitLeader()
	check("after a full restart")

	s, err := cl.LineageStats(ctx, false)
	if err != nil || s.Records != 2 || len(s.Jobs) != 1 || s.OldestSubmittedUnixNano == 0 {
		t.Fatalf("stats %v, %v", s, err)
	}
}

func TestLineageBadInput(t *testing.T) {
	c := tc.Start(t, 1, nil)
	ctx := tc.Ctx(t, time.Minute)
	cl := c.Client()
	unknown := ids.NewTaskID("j", ids.TaskID{}, 7)
	if _, err := cl.GetLineageTask(ctx, unknown, false); !errors.Is(err, fsm.ErrLineageNotFound) || !errors.Is(err, rpcerr.ErrNotFound) {
		t.Fatalf("unknown task: %v; want NotFound", err)
	}
	if _, err := cl.GetLineage(ctx, ids.ReturnID(unknown, 1), 0, false); !errors.Is(err, rpcerr.ErrNotFound) {
		t.Fatalf("unknown object: %v; want NotFound", err)
	}
	if _, err := cl.GetLineage(ctx, ids.PutID(unknown, 1), 0, false); !errors.Is(err, fsm.ErrMadeByPut) {
		t.Fatalf("Put object: %v; want ErrMadeByPut", err)
	}
	bad := []*pb.RecordLineageRequest{
		{},
		{Records: []*pb.TaskRecord{{TaskId: []byte{1, 2, 3}, JobId: "j", Function: "f"}}},
		{Records: []*pb.TaskRecord{{TaskId: unknown[:], JobId: "j", Function: "f", Args: []*pb.LineageArg{{ObjectId: []byte{1}}}}}},
		{Records: []*pb.TaskRecord{{TaskId: unknown[:], JobId: "j", Function: ""}}},
		{Updates: []*pb.TaskUpdate{{TaskId: unknown[:], State: 99}}},
		{ReleasedObjectIds: [][]byte{unknown[:]}},
	}
	for i, req := range bad {
		if _, err := cl.RecordLineage(ctx, req); !errors.Is(err, rpcerr.ErrInvalidArgument) {
			t.Errorf("bad request %d: %v; want InvalidArgument", i, err)
		}
	}
}
