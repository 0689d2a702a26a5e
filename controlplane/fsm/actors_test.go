package fsm

import (
	"errors"
	"io"
	"testing"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestActorLifecycle(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{}))[0].Id
	reg := func(id, name string, maxRestarts int32) *pb.CommandResult {
		return a.apply(cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: id, ClassName: "C", JobId: job,
			Name: name, Namespace: "ns", MaxRestarts: maxRestarts}))[0]
	}
	if r := reg("a1", "x", 1); r.Id != "a1" || a.f.Actor("a1").State != pb.ActorState_PENDING_CREATION {
		t.Fatalf("register: %v, %v", r, a.f.Actor("a1"))
	}
	if err := ResultError(reg("a2", "x", 0)); !errors.Is(err, ErrActorNameTaken) || !errors.Is(err, rpcerr.ErrAlreadyExists) {
		t.Fatalf("a taken name: %v; want ErrActorNameTaken (AlreadyExists)", err)
	}
	alive := func(id string, incarnation int32, worker string) bool {
		return a.apply(cmd(t, CmdActorAlive, "", &pb.ActorAliveCommand{ActorId: id, NumRestarts: incarnation, NodeId: "n1", WorkerId: worker, WorkerAddress: "w"}))[0].Flag
	}
	if !alive("a1", 0, "w1") || alive("a1", 0, "w2") {
		t.Fatal("the first placement must count, a second one of the same incarnation not")
	}
	if got := a.f.Actor("a1"); got.State != pb.ActorState_ALIVE || got.WorkerId != "w1" {
		t.Fatalf("after alive: %v", got)
	}
	fail := func(id, worker string, noRestart bool) bool {
		return a.apply(cmd(t, CmdActorFailed, "", &pb.ActorFailedCommand{ActorId: id, WorkerId: worker, Cause: "boom", NoRestart: noRestart}))[0].Flag
	}
	if fail("a1", "w-old", false) {
		t.Fatal("a failure of another worker counted")
	}
	if !fail("a1", "w1", false) {
		t.Fatal("the worker's failure did not count")
	}
	if got := a.f.Actor("a1"); got.State != pb.ActorState_RESTARTING || got.NumRestarts != 1 || got.WorkerAddress != "" {
		t.Fatalf("after the first failure: %v; want RESTARTING, 1 restart", got)
	}
	if alive("a1", 0, "w3") || !alive("a1", 1, "w3") {
		t.Fatal("only the current incarnation's placement counts")
	}
	fail("a1", "w3", false)
	if got := a.f.Actor("a1"); got.State != pb.ActorState_DEAD || got.DeathCause != "boom" {
		t.Fatalf("past MaxRestarts: %v; want DEAD with the cause", got)
	}
	if _, err := a.f.NamedActor("ns", "x"); !errors.Is(err, ErrActorNotFound) {
		t.Fatalf("a dead actor's name: %v; want it free", err)
	}
	if r := reg("a3", "x", 0); ResultError(r) != nil {
		t.Fatalf("reuse of a freed name: %v", ResultError(r))
	}
	// A failure before the first placement costs no restart.
	reg("a4", "", 0)
	fail("a4", "", false)
	if got := a.f.Actor("a4"); got.State != pb.ActorState_PENDING_CREATION {
		t.Fatalf("failed placement: %v; want still PENDING_CREATION", got)
	}
	// A kill buries it whatever its restarts.
	reg("a5", "", -1)
	alive("a5", 0, "w5")
	fail("a5", "", true)
	if got := a.f.Actor("a5"); got.State != pb.ActorState_DEAD {
		t.Fatalf("killed: %v", got)
	}
}

func TestActorsDieWithTheirJob(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{}))[0].Id
	a.apply(
		cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: "plain", ClassName: "C", JobId: job, MaxRestarts: -1}),
		cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: "kept", ClassName: "C", JobId: job, Detached: true, Name: "k"}),
		cmd(t, CmdFinishJob, "", &pb.FinishJobRequest{JobId: job, State: pb.JobState_JOB_SUCCEEDED}),
	)
	if got := a.f.Actor("plain"); got.State != pb.ActorState_DEAD {
		t.Fatalf("non-detached actor of an ended job: %v", got)
	}
	if got := a.f.Actor("kept"); got.State != pb.ActorState_PENDING_CREATION {
		t.Fatalf("detached actor of an ended job: %v", got)
	}
	// The name index is rebuilt on restore.
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	restored := New(nil)
	if err := restored.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	if got, err := restored.NamedActor("", "k"); err != nil || got.ActorId != "kept" {
		t.Fatalf("named actor after restore: %v, %v", got, err)
	}
}

// TestDeadActorsAreBounded checks that only the most recent DEAD actors are
// kept, and that a store restored from a snapshot drops the same ones as
// the store that applied the whole log.
func TestDeadActorsAreBounded(t *testing.T) {
	newStore := func() *FSM { f := New(nil); f.maxDeadActors = 3; return f }
	a := &applier{t: t, f: newStore()}
	job := a.apply(cmd(t, CmdAddJob, "", &pb.JobInfo{}))[0].Id
	kill := func(ap *applier, ids ...string) {
		var cmds []*pb.Command
		for _, id := range ids {
			cmds = append(cmds, cmd(t, CmdActorFailed, "", &pb.ActorFailedCommand{ActorId: id, Cause: "killed", NoRestart: true}))
		}
		ap.apply(cmds...)
	}
	for i := range 8 {
		id := string(rune('a' + i))
		a.apply(cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: id, ClassName: "C", JobId: job, Name: id, Namespace: "ns"}))
	}
	kill(a, "a", "b")
	kill(a, "d", "c") // one entry: dropped in ID order
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	restored := newStore()
	if err := restored.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	b := &applier{t: t, f: restored, index: a.index}
	kill(a, "e")
	kill(b, "e")
	var kept []string
	for _, x := range a.f.Actors() {
		if x.State == pb.ActorState_DEAD {
			kept = append(kept, x.ActorId)
		}
	}
	if len(kept) != 3 || kept[0] != "c" || kept[1] != "d" || kept[2] != "e" {
		t.Fatalf("DEAD actors kept: %v; want the 3 most recent [c d e]", kept)
	}
	if a.f.Actor("a") != nil || a.f.Actor("f") == nil {
		t.Fatal("the oldest DEAD actor must go, live ones stay")
	}
	ha, _ := a.f.StateHash()
	hb, _ := b.f.StateHash()
	if ha != hb {
		t.Fatal("a restored store dropped other DEAD actors than the original")
	}
	// A dropped actor's name was already free: it can be taken again.
	r := a.apply(cmd(t, CmdRegisterActor, "", &pb.ActorInfo{ActorId: "a2", ClassName: "C", JobId: job, Name: "a", Namespace: "ns"}))[0]
	if err := ResultError(r); err != nil {
		t.Fatalf("reuse of a dead actor's name: %v", err)
	}
}
