package fsm

import (
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// randomBatch draws a batch of commands of every type from rng, with
// request IDs that sometimes repeat (retries) and keys that collide.
func randomBatch(t *testing.T, rng *rand.Rand) []*pb.Command {
	n := 1 + rng.IntN(8)
	out := make([]*pb.Command, 0, n)
	for range n {
		var typ CommandType
		var body proto.Message
		switch rng.IntN(33) {
		case 0:
			typ, body = CmdRegisterNode, &pb.NodeInfo{NodeId: fmt.Sprint("n", rng.IntN(5)), Address: "a", Resources: map[string]float64{"CPU": float64(rng.IntN(4)), "x": 1}}
		case 1:
			typ, body = CmdMarkNodeDead, &pb.MarkNodeDeadCommand{NodeId: fmt.Sprint("n", rng.IntN(6)), Reason: "r"}
		case 2:
			typ, body = CmdAddJob, &pb.JobInfo{Entrypoint: "e", Metadata: map[string]string{"a": "1", "b": "2"}}
		case 3:
			typ, body = CmdFinishJob, &pb.FinishJobRequest{JobId: JobID(uint32(1 + rng.IntN(4))), State: pb.JobState_JOB_FAILED}
		case 4:
			typ, body = CmdKVDelete, &pb.KVDeleteRequest{Namespace: fmt.Sprint(rng.IntN(2)), Key: fmt.Sprint(rng.IntN(3)), Prefix: rng.IntN(2) == 0}
		case 5:
			typ, body = CmdUpsertHead, &pb.HeadInfo{Id: fmt.Sprint("h", rng.IntN(3)), GrpcAddress: fmt.Sprint(rng.IntN(2))}
		case 8:
			typ, body = CmdRegisterActor, &pb.ActorInfo{ActorId: fmt.Sprint("a", rng.IntN(6)), ClassName: "C", JobId: JobID(uint32(1 + rng.IntN(4))),
				Name: []string{"", "x", "y"}[rng.IntN(3)], Namespace: fmt.Sprint(rng.IntN(2)), MaxRestarts: int32(rng.IntN(3)) - 1, Detached: rng.IntN(2) == 0,
				State:    []pb.ActorState{pb.ActorState_ACTOR_STATE_UNSPECIFIED, pb.ActorState_DEPENDENCIES_UNREADY}[rng.IntN(2)],
				Strategy: &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_PLACEMENT_GROUP, PlacementGroupId: fmt.Sprint("g", rng.IntN(8))}}
		case 9:
			typ, body = CmdActorAlive, &pb.ActorAliveCommand{ActorId: fmt.Sprint("a", rng.IntN(6)), NumRestarts: int32(rng.IntN(2)), NodeId: "n1", WorkerId: fmt.Sprint("w", rng.IntN(3))}
		case 10:
			typ, body = CmdActorFailed, &pb.ActorFailedCommand{ActorId: fmt.Sprint("a", rng.IntN(6)), WorkerId: []string{"", "w0", "w1"}[rng.IntN(3)], Cause: "c", NoRestart: rng.IntN(4) == 0}
		case 11:
			typ, body = CmdActorPending, &pb.ActorPendingCommand{ActorId: fmt.Sprint("a", rng.IntN(6)), Reason: fmt.Sprint(rng.IntN(2))}
		case 12, 13, 14:
			typ, body = CmdLineage, randomLineage(rng)
		case 15:
			typ, body = CmdActorDepsResolved, &pb.ActorDepsResolvedCommand{ActorId: fmt.Sprint("a", rng.IntN(6)), InitArgs: []byte{byte(rng.IntN(3))}}
		case 16:
			typ, body = CmdSubmitJob, &pb.JobSubmission{SubmissionId: fmt.Sprint("s", rng.IntN(4)), Entrypoint: fmt.Sprint("e", rng.IntN(2)),
				RuntimeEnv: &pb.RuntimeEnv{EnvVars: map[string]string{"A": "1", "B": "2"}}, Metadata: map[string]string{"m": "1", "n": "2"}}
		case 17:
			typ, body = CmdJobAssign, &pb.JobAssignCommand{SubmissionId: fmt.Sprint("s", rng.IntN(4)), NodeId: fmt.Sprint("n", rng.IntN(5))}
		case 18:
			typ, body = CmdJobReport, &pb.ReportSubmissionRequest{SubmissionId: fmt.Sprint("s", rng.IntN(4)), NodeId: fmt.Sprint("n", rng.IntN(5)),
				State: pb.JobSubmissionState(rng.IntN(6)), ExitCode: int32(rng.IntN(3)), HasExitCode: rng.IntN(2) == 0}
		case 19:
			typ, body = CmdJobStop, &pb.JobStopCommand{SubmissionId: fmt.Sprint("s", rng.IntN(4))}
		case 20:
			typ, body = CmdJobDelete, &pb.JobDeleteCommand{SubmissionId: fmt.Sprint("s", rng.IntN(4))}
		case 21:
			typ, body = CmdAddJob, &pb.JobInfo{Entrypoint: "e", Metadata: map[string]string{SubmissionDriverKey: fmt.Sprint("s", rng.IntN(4))}}
		case 22:
			typ, body = CmdCreatePlacementGroup, &pb.PlacementGroupInfo{PlacementGroupId: fmt.Sprint("g", rng.IntN(6)), JobId: JobID(uint32(1 + rng.IntN(4))),
				Name: []string{"", "x", "y"}[rng.IntN(3)], Detached: rng.IntN(2) == 0, Strategy: pb.PlacementStrategy(1 + rng.IntN(4)),
				Bundles: []*pb.Bundle{{Resources: map[string]float64{"CPU": 1, "x": 1}}, {Resources: map[string]float64{"CPU": 2}}}}
		case 23:
			typ, body = CmdPlacementGroupPlaced, &pb.PlacementGroupPlacedCommand{PlacementGroupId: fmt.Sprint("g", rng.IntN(6)),
				NodeIds: []string{fmt.Sprint("n", rng.IntN(5)), fmt.Sprint("n", rng.IntN(5))}}
		case 24:
			typ, body = CmdPlacementGroupPending, &pb.PlacementGroupPendingCommand{PlacementGroupId: fmt.Sprint("g", rng.IntN(6)), Reason: fmt.Sprint(rng.IntN(2)), Infeasible: rng.IntN(2) == 0}
		case 25:
			typ, body = CmdRemovePlacementGroup, &pb.RemovePlacementGroupCommand{PlacementGroupId: fmt.Sprint("g", rng.IntN(6)), Reason: "r"}
		case 26:
			id := fmt.Sprint("t", rng.IntN(4))
			typ, body = CmdCreateToken, &pb.TokenInfo{Id: id, Hash: auth.Hash(id + fmt.Sprint(rng.IntN(2))),
				Scope: []string{"read", "submit", "admin", "bogus"}[rng.IntN(4)], ExpiresUnixNano: int64(rng.IntN(3))}
		case 27:
			typ, body = CmdRevokeToken, &pb.RevokeTokenCommand{Id: fmt.Sprint("t", rng.IntN(5))}
		case 28:
			typ, body = CmdOwnerDied, &pb.OwnerDiedCommand{OwnerAddress: fmt.Sprint("w", rng.IntN(4))}
		case 29:
			id := ids.NewTaskID("j", ids.TaskID{}, uint64(rng.IntN(10)))
			typ, body = CmdAdoptedRebuild, &pb.AdoptedRebuildCommand{TaskId: id[:], Attempt: int32(rng.IntN(3)),
				Rebuilder: fmt.Sprint("w", rng.IntN(4)), LeaseExpiredBefore: int64(rng.IntN(1000))}
		case 30:
			typ, body = CmdAutoscalerLaunch, &pb.AutoscalerLaunchCommand{InstanceId: fmt.Sprint("i", rng.IntN(80)), NodeType: fmt.Sprint("type", rng.IntN(2)), Reason: "r"}
		case 31:
			typ, body = CmdAutoscalerInstance, &pb.AutoscalerInstanceCommand{InstanceId: fmt.Sprint("i", rng.IntN(80)),
				State: pb.InstanceState(1 + rng.IntN(5)), NodeId: fmt.Sprint("n", rng.IntN(5)), Reason: fmt.Sprint(rng.IntN(2))}
		case 32:
			typ, body = CmdRequestResources, &pb.RequestResourcesCommand{Bundles: []*pb.Bundle{{Resources: map[string]float64{"CPU": float64(rng.IntN(3)), "x": 1}}}[:rng.IntN(2)]}
		default:
			typ, body = CmdKVPut, &pb.KVPutRequest{Namespace: fmt.Sprint(rng.IntN(2)), Key: fmt.Sprint(rng.IntN(20)), Value: []byte{byte(rng.IntN(256))}, Overwrite: rng.IntN(3) > 0}
		}
		reqID := ""
		if rng.IntN(2) == 0 {
			reqID = fmt.Sprint("req-", rng.IntN(30))
		}
		c := cmd(t, typ, reqID, body)
		c.TimeUnixNano = int64(rng.IntN(1000))
		out = append(out, c)
	}
	return out
}

// randomLineage draws a lineage write over a few tasks of a few jobs, with
// references between them and a bound small enough to evict.
func randomLineage(rng *rand.Rand) *pb.LineageCommand {
	tid := func() ids.TaskID { return ids.NewTaskID("j", ids.TaskID{}, uint64(rng.IntN(10))) }
	lc := &pb.LineageCommand{MaxRecords: uint64(3 + rng.IntN(4))}
	if rng.IntN(3) == 0 {
		lc.MaxBytes = uint64(200 + rng.IntN(400))
	}
	for range rng.IntN(4) {
		id := tid()
		r := &pb.TaskRecord{TaskId: id[:], JobId: JobID(uint32(1 + rng.IntN(8))), Function: "f", NumReturns: int32(rng.IntN(3)),
			Resources: map[string]float64{"CPU": 1, "x": float64(rng.IntN(2))}, Options: map[string]string{"a": "1", "b": "2"},
			State: pb.TaskState(rng.IntN(5)), OwnerAddress: fmt.Sprint("w", rng.IntN(4))}
		for range rng.IntN(3) {
			o := ids.ReturnID(tid(), uint32(1+rng.IntN(2)))
			if rng.IntN(5) == 0 {
				o = ids.PutID(tid(), 1)
			}
			r.Args = append(r.Args, &pb.LineageArg{ObjectId: o[:]}, &pb.LineageArg{Value: make([]byte, rng.IntN(64))})
		}
		lc.Records = append(lc.Records, r)
	}
	for range rng.IntN(3) {
		id := tid()
		lc.Updates = append(lc.Updates, &pb.TaskUpdate{TaskId: id[:], Attempt: int32(rng.IntN(3)), State: pb.TaskState(rng.IntN(5)), NodeId: fmt.Sprint("n", rng.IntN(2))})
	}
	for range rng.IntN(3) {
		o := ids.ReturnID(tid(), uint32(1+rng.IntN(2)))
		lc.ReleasedObjectIds = append(lc.ReleasedObjectIds, o[:])
	}
	if rng.IntN(4) == 0 {
		id := tid()
		lc.ReleasedTaskIds = append(lc.ReleasedTaskIds, id[:])
	}
	return lc
}

// TestApplyIsDeterministic applies the same random log to three stores —
// one straight through, one restored from a snapshot taken midway, one
// restored from a snapshot of the restored one — and requires the same
// state hash and the same answers everywhere.
func TestApplyIsDeterministic(t *testing.T) {
	var evictions, lineageLeft uint64
	placed, adopted := 0, 0
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var log [][]*pb.Command
		for range 200 {
			log = append(log, randomBatch(t, rng))
		}
		a := &applier{t: t, f: New(nil)}
		a.f.maxDeadActors = 2 // so dropping DEAD actors happens on both paths
		a.f.maxRemovedGroups = 2
		mid := len(log) / 2
		var snap raft.FSMSnapshot
		var answers []string
		for i, b := range log {
			if i == mid {
				var err error
				if snap, err = a.f.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range a.apply(b...) {
				answers = append(answers, r.String())
			}
		}
		var s sink
		if err := snap.Persist(&s); err != nil {
			t.Fatal(err)
		}
		restored := New(nil)
		restored.maxDeadActors = 2
		restored.maxRemovedGroups = 2
		if err := restored.Restore(io.NopCloser(&s)); err != nil {
			t.Fatal(err)
		}
		b := &applier{t: t, f: restored, index: uint64(mid)}
		var answersB []string
		for _, batch := range log[mid:] {
			for _, r := range b.apply(batch...) {
				answersB = append(answersB, r.String())
			}
		}
		ha, _ := a.f.StateHash()
		hb, _ := b.f.StateHash()
		if ha != hb {
			t.Fatalf("seed %d: state differs after restore and replay", seed)
		}
		for _, g := range b.f.PlacementGroups() {
			if g.State == pb.PlacementGroupState_PG_CREATED || g.State == pb.PlacementGroupState_PG_RESCHEDULING {
				placed++
			}
		}
		for _, r := range b.f.lineage.records {
			if r.AdoptedUnixNano != 0 {
				adopted++
			}
		}
		st := b.f.LineageStats()
		evictions += st.Evictions
		lineageLeft += st.Records
		tail := answers[len(answers)-len(answersB):]
		for i := range answersB {
			if answersB[i] != tail[i] {
				t.Fatalf("seed %d: answer %d differs: %s vs %s", seed, i, answersB[i], tail[i])
			}
		}
	}
	// The random logs must reach the lineage bound and keep some records,
	// or the comparison above proves little about lineage.
	if placed == 0 {
		t.Fatal("no placement group was placed: the comparison proves little about them")
	}
	if adopted == 0 {
		t.Fatal("no lineage record was adopted: the comparison proves little about adoption")
	}
	if evictions == 0 || lineageLeft == 0 {
		t.Fatalf("lineage not exercised: %d evictions, %d records left", evictions, lineageLeft)
	}
}

// FuzzApplyNeverPanics feeds arbitrary log entries to Apply: a corrupt
// entry must come back as an error, never a crash of the head.
func FuzzApplyNeverPanics(f *testing.F) {
	good, _ := EncodeBatch([]*pb.Command{{Type: uint32(CmdKVPut), Body: []byte{0x12, 0x01, 'k'}}})
	f.Add(good)
	f.Add([]byte{1})
	f.Add([]byte{0})
	lin, _ := EncodeBatch([]*pb.Command{{Type: uint32(CmdLineage), Body: []byte{0x0a, 0x02, 0x0a, 0x00}}})
	f.Add(lin)
	t1 := ids.NewTaskID("j", ids.TaskID{}, 1)
	o1 := ids.ReturnID(t1, 1)
	lc, _ := proto.Marshal(&pb.LineageCommand{Records: []*pb.TaskRecord{{TaskId: t1[:], NumReturns: 1, Args: []*pb.LineageArg{{ObjectId: o1[:]}}}},
		ReleasedObjectIds: [][]byte{o1[:], {1, 2}}, MaxRecords: 1})
	lin2, _ := EncodeBatch([]*pb.Command{{Type: uint32(CmdLineage), Body: lc}})
	f.Add(lin2)
	f.Fuzz(func(t *testing.T, data []byte) {
		New(nil).Apply(&raft.Log{Index: 1, Data: data})
	})
}
