package fsm

import (
	"errors"
	"testing"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestPlacementGroupLifecycle(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{}))[0].Id
	for _, n := range []string{"n1", "n2", "n3"} {
		a.apply(cmd(t, CmdRegisterNode, "", &pb.NodeInfo{NodeId: n, Address: n, Resources: map[string]float64{"CPU": 4}}))
	}
	two := []*pb.Bundle{{Resources: map[string]float64{"CPU": 1}}, {Resources: map[string]float64{"CPU": 1}}}
	create := func(id, name string) *pb.CommandResult {
		return a.apply(cmd(t, CmdCreatePlacementGroup, "", &pb.PlacementGroupInfo{PlacementGroupId: id, JobId: job, Name: name,
			Strategy: pb.PlacementStrategy_STRICT_SPREAD, Bundles: two}))[0]
	}
	placed := func(id string, nodes ...string) bool {
		return a.apply(cmd(t, CmdPlacementGroupPlaced, "", &pb.PlacementGroupPlacedCommand{PlacementGroupId: id, NodeIds: nodes}))[0].Flag
	}
	if r := create("g1", "x"); ResultError(r) != nil || a.f.PlacementGroup("g1").State != pb.PlacementGroupState_PG_PENDING {
		t.Fatalf("create: %v, %v", ResultError(r), a.f.PlacementGroup("g1"))
	}
	if err := ResultError(create("g2", "x")); !errors.Is(err, ErrPlacementGroupNameTaken) {
		t.Fatalf("a taken name: %v; want ErrPlacementGroupNameTaken", err)
	}
	if placed("g1", "n1", "nX") || placed("g1", "n1") {
		t.Fatal("a placement on an unknown node, or of the wrong bundle count, counted")
	}
	if !placed("g1", "n1", "n2") || placed("g1", "n2", "n3") {
		t.Fatal("the first placement must count, a second not")
	}
	a.apply(cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: "a1", ClassName: "C", JobId: job, MaxRestarts: 3,
		Strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_PLACEMENT_GROUP, PlacementGroupId: "g1"}}))

	// The node of bundle 1 dies: only that bundle is placed again, and a
	// placement that moves bundle 0 is refused.
	a.apply(cmd(t, CmdMarkNodeDead, "", &pb.MarkNodeDeadCommand{NodeId: "n2", Reason: "gone"}))
	g := a.f.PlacementGroup("g1")
	if g.State != pb.PlacementGroupState_PG_RESCHEDULING || g.Bundles[0].NodeId != "n1" || g.Bundles[1].NodeId != "" || g.Reschedules != 1 {
		t.Fatalf("after its node died: %v", g)
	}
	if placed("g1", "n3", "n1") || placed("g1", "n1", "n2") || !placed("g1", "n1", "n3") {
		t.Fatal("a reschedule must keep bundle 0 and avoid the dead node")
	}

	a.apply(cmd(t, CmdRemovePlacementGroup, "", &pb.RemovePlacementGroupCommand{PlacementGroupId: "g1", Reason: "bye"}))
	if g := a.f.PlacementGroup("g1"); g.State != pb.PlacementGroupState_PG_REMOVED {
		t.Fatalf("after remove: %v", g)
	}
	if act := a.f.Actor("a1"); act.State != pb.ActorState_DEAD {
		t.Fatalf("an actor of a removed group: %v; want DEAD (no restart)", act)
	}
	if _, err := a.f.NamedPlacementGroup("", "x"); !errors.Is(err, ErrPlacementGroupNotFound) {
		t.Fatalf("a removed group's name: %v; want it free", err)
	}
	if r := create("g3", "x"); ResultError(r) != nil {
		t.Fatalf("reuse of a freed name: %v", ResultError(r))
	}
	// A group of an ended job goes with it.
	a.apply(cmd(t, CmdFinishJob, "", &pb.FinishJobRequest{JobId: job}))
	if g := a.f.PlacementGroup("g3"); g.State != pb.PlacementGroupState_PG_REMOVED {
		t.Fatalf("a group of an ended job: %v; want REMOVED", g)
	}
}
