package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

type applier struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func (a *applier) apply(cmds ...*pb.Command) []*pb.CommandResult {
	a.t.Helper()
	data, err := EncodeBatch(cmds)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	r := a.f.Apply(&raft.Log{Index: a.index, Data: data})
	res, ok := r.([]*pb.CommandResult)
	if !ok {
		a.t.Fatalf("apply returned %T: %v", r, r)
	}
	return res
}

func cmd(t *testing.T, typ CommandType, reqID string, body proto.Message) *pb.Command {
	t.Helper()
	c, err := NewCommand(typ, reqID, body)
	if err != nil {
		t.Fatal(err)
	}
	c.TimeUnixNano = 1000
	return c
}

func TestKVPutGetDeleteList(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	res := a.apply(
		cmd(t, CmdKVPut, "", &pb.KVPutRequest{Namespace: "ns", Key: "a/1", Value: []byte("x"), Overwrite: true}),
		cmd(t, CmdKVPut, "", &pb.KVPutRequest{Namespace: "ns", Key: "a/2", Value: []byte("y"), Overwrite: true}),
		cmd(t, CmdKVPut, "", &pb.KVPutRequest{Namespace: "ns", Key: "a/1", Value: []byte("z")}), // no overwrite
		cmd(t, CmdKVPut, "", &pb.KVPutRequest{Namespace: "ns", Key: "b", Value: []byte("w"), Overwrite: true}),
	)
	if !res[0].Flag || !res[1].Flag || res[2].Flag || !res[3].Flag {
		t.Fatalf("added flags: %v", res)
	}
	if v, _, err := a.f.KVGet("ns", "a/1"); err != nil || string(v) != "x" {
		t.Fatalf("a/1 = %q, %v; want x (no-overwrite put must not replace)", v, err)
	}
	if keys, _ := a.f.KVList("ns", "a/"); fmt.Sprint(keys) != "[a/1 a/2]" {
		t.Fatalf("list = %v", keys)
	}
	res = a.apply(cmd(t, CmdKVDelete, "", &pb.KVDeleteRequest{Namespace: "ns", Key: "a/", Prefix: true}))
	if res[0].Count != 2 {
		t.Fatalf("deleted %d, want 2", res[0].Count)
	}
	_, _, err := a.f.KVGet("ns", "a/2")
	if !errors.Is(err, ErrKeyNotFound) || !errors.Is(err, rpcerr.ErrNotFound) {
		t.Fatalf("get deleted key: %v; want ErrKeyNotFound", err)
	}
}

func TestDuplicateRequestAppliedOnce(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	first := a.apply(cmd(t, CmdAddJob, "req-1", &pb.JobInfo{Entrypoint: "a"}))[0]
	again := a.apply(cmd(t, CmdAddJob, "req-1", &pb.JobInfo{Entrypoint: "a"}))[0]
	next := a.apply(cmd(t, CmdAddJob, "req-2", &pb.JobInfo{Entrypoint: "b"}))[0]
	if first.Id != again.Id || again.Index != first.Index {
		t.Fatalf("retry got %v, first %v: want the first answer", again, first)
	}
	if next.Id == first.Id || len(a.f.Jobs()) != 2 {
		t.Fatalf("jobs = %v; want 2 distinct", a.f.Jobs())
	}
}

func TestDedupEvictsOldestFirst(t *testing.T) {
	d := newDedupTable(3)
	for i := range 5 {
		d.put(fmt.Sprint(i), &pb.CommandResult{Count: uint64(i)})
	}
	for i := range 5 {
		_, ok := d.get(fmt.Sprint(i))
		if ok != (i >= 2) {
			t.Fatalf("id %d present=%v", i, ok)
		}
	}
	var ids []string
	for _, e := range d.entries() {
		ids = append(ids, e.RequestId)
	}
	if fmt.Sprint(ids) != "[2 3 4]" {
		t.Fatalf("entries = %v", ids)
	}
}

func TestNodeLifecycle(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	a.apply(cmd(t, CmdRegisterNode, "", &pb.NodeInfo{NodeId: "n1", Address: "x", Resources: map[string]float64{"CPU": 2}}))
	r := a.apply(cmd(t, CmdMarkNodeDead, "", &pb.MarkNodeDeadCommand{NodeId: "n1", Reason: "missed heartbeats"}))[0]
	if !r.Flag || a.f.Node("n1").State != pb.NodeState_NODE_DEAD {
		t.Fatalf("node not dead: %v", a.f.Node("n1"))
	}
	r = a.apply(cmd(t, CmdRegisterNode, "", &pb.NodeInfo{NodeId: "n1", Address: "x"}))[0]
	if err := ResultError(r); !errors.Is(err, ErrNodeDead) {
		t.Fatalf("re-register of a dead node: %v; want ErrNodeDead", err)
	}
	r = a.apply(cmd(t, CmdMarkNodeDead, "", &pb.MarkNodeDeadCommand{NodeId: "nope"}))[0]
	if err := ResultError(r); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("unknown node: %v", err)
	}
}

func TestUnknownCommandIsDeterministicError(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	r := a.apply(&pb.Command{Type: 250})[0]
	if err := ResultError(r); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("unknown command: %v", err)
	}
	if got := a.f.Apply(&raft.Log{Index: 9, Data: []byte{0xff}}); got == nil {
		t.Fatal("undecodable entry must return an error")
	}
}

type sink struct {
	bytes.Buffer
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { return nil }
func (s *sink) Close() error  { return nil }

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	a.apply(cmd(t, CmdInitCluster, "", &pb.ClusterInfo{ClusterId: "c1", Token: "tok"}))
	a.apply(cmd(t, CmdUpsertHead, "", &pb.HeadInfo{Id: "head-1", GrpcAddress: "g", RaftAddress: "r"}))
	a.apply(cmd(t, CmdRegisterNode, "r1", &pb.NodeInfo{NodeId: "n1", Address: "x", Resources: map[string]float64{"CPU": 4, "GPU": 1}}))
	a.apply(cmd(t, CmdAddJob, "r2", &pb.JobInfo{Entrypoint: "e"}))
	for i := range 50 {
		a.apply(cmd(t, CmdKVPut, fmt.Sprintf("kv-%d", i), &pb.KVPutRequest{Namespace: fmt.Sprint(i % 3), Key: fmt.Sprint(i), Value: []byte{byte(i)}, Overwrite: true}))
	}
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot must not leak into it.
	a.apply(cmd(t, CmdKVPut, "late", &pb.KVPutRequest{Key: "late", Value: []byte("1"), Overwrite: true}))
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	b := New(nil)
	if err := b.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.KVGet("", "late"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("snapshot holds a later write: %v", err)
	}
	// Apply the same later write to the restored store: states must match.
	ab := &applier{t: t, f: b, index: a.index - 1}
	ab.apply(cmd(t, CmdKVPut, "late", &pb.KVPutRequest{Key: "late", Value: []byte("1"), Overwrite: true}))
	ha, _ := a.f.StateHash()
	hb, _ := b.StateHash()
	if ha != hb {
		t.Fatalf("state hash differs after restore: %s vs %s", ha, hb)
	}
	// The duplicate table survived: a retried write gets its first answer.
	r := ab.apply(cmd(t, CmdAddJob, "r2", &pb.JobInfo{Entrypoint: "e"}))[0]
	if r.Id != "00000001" || len(b.Jobs()) != 1 {
		t.Fatalf("retried AddJob after restore = %v, jobs %d", r, len(b.Jobs()))
	}
	if b.Cluster().GetToken() != "tok" {
		t.Fatal("cluster identity lost")
	}
}

func TestEventsResumeAndReset(t *testing.T) {
	f := New(nil)
	f.events = newEventRing(4)
	a := &applier{t: t, f: f}
	for i := range 6 {
		a.apply(cmd(t, CmdKVPut, "", &pb.KVPutRequest{Key: fmt.Sprint(i), Overwrite: true}))
	}
	all := func(pb.EventKind) bool { return true }
	ev, _, ok := f.EventsSince(4, all)
	if !ok || len(ev) != 2 || ev[0].Index != 5 {
		t.Fatalf("since 4: %v %v", ev, ok)
	}
	if _, _, ok := f.EventsSince(1, all); ok {
		t.Fatal("events older than the ring must ask for a reset")
	}
}
