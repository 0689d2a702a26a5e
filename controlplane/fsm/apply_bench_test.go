package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// The per-command cost of Apply on one head, decode included, in the
// shapes the write benchmarks send (figures: go test -run NONE -bench Apply
// -benchmem ./controlplane/fsm):
//   - KV: entries of 32 KVPuts of 100 B values (bench kv's group commit);
//   - lineage: entries of one LineageCommand of 2048 ~200 B records.

func BenchmarkApplyKVPut(b *testing.B) {
	f := New(nil)
	const per = 32
	value := make([]byte, 100)
	var entries [][]byte
	for e := range 64 {
		cmds := make([]*pb.Command, per)
		for i := range cmds {
			c, err := NewCommand(CmdKVPut, fmt.Sprintf("req-%d-%d", e, i), &pb.KVPutRequest{Namespace: "bench",
				Key: fmt.Sprintf("c%d-%d", e, i), Value: value, Overwrite: true})
			if err != nil {
				b.Fatal(err)
			}
			c.TimeUnixNano = 1
			cmds[i] = c
		}
		data, err := EncodeBatch(cmds)
		if err != nil {
			b.Fatal(err)
		}
		entries = append(entries, data)
	}
	b.ReportAllocs()
	index := uint64(0)
	for b.Loop() {
		// Request IDs repeat after a lap of the entries: a fresh store
		// then, so every command is applied, not answered from dedup.
		if index%uint64(len(entries)) == 0 {
			b.StopTimer()
			f = New(nil)
			b.StartTimer()
		}
		index++
		f.Apply(&raft.Log{Index: index, Data: entries[(index-1)%uint64(len(entries))]})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/cmd")
}

func BenchmarkApplyLineage(b *testing.B) {
	const per = 2048
	var entries [][]byte
	for e := range 16 {
		job := fmt.Sprintf("job-%d", e)
		cmd := &pb.LineageCommand{}
		prev := ids.NewTaskID(job, ids.TaskID{}, 0)
		for i := range per {
			id := ids.NewTaskID(job, ids.TaskID{}, uint64(i+1))
			out := ids.ReturnID(prev, 1)
			cmd.Records = append(cmd.Records, &pb.TaskRecord{TaskId: id[:], JobId: job, Function: "square", NumReturns: 1,
				OwnerAddress: "owner:1",
				Args: []*pb.LineageArg{{Value: []byte("hello lineage"), Format: 1},
					{ObjectId: append([]byte(nil), out[:]...), OwnerAddress: "owner:1"}},
				Resources: map[string]float64{"CPU": 1}})
			prev = id
		}
		c, err := NewCommand(CmdLineage, fmt.Sprintf("req-%d", e), cmd)
		if err != nil {
			b.Fatal(err)
		}
		data, err := EncodeBatch([]*pb.Command{c})
		if err != nil {
			b.Fatal(err)
		}
		entries = append(entries, data)
	}
	b.ReportAllocs()
	f := New(nil)
	index := uint64(0)
	for b.Loop() {
		if index%uint64(len(entries)) == 0 {
			b.StopTimer()
			f = New(nil)
			b.StartTimer()
		}
		index++
		f.Apply(&raft.Log{Index: index, Data: entries[(index-1)%uint64(len(entries))]})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/record")
}
