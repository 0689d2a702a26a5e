package cpbench

import (
	"fmt"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
)

// BenchmarkKVWrites64Clients runs the KV benchmark on an in-process
// 3-head cluster: go test -run NONE -bench KV ./controlplane/cpbench
func BenchmarkKVWrites64Clients(b *testing.B) {
	c := tc.Start(b, 3, nil)
	for b.Loop() {
		reg := c.Heads[c.WaitLeader()].Registry()
		before := gatherApplyStats(reg)
		r, err := KV(tc.Ctx(b, time.Minute), KVOptions{Addresses: c.Addresses(), Token: c.Token(), Duration: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.PerSec, "writes/s")
		b.ReportMetric(float64(r.P50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
		b.Log(r, " leader: ", gatherApplyStats(reg).sub(before))
	}
}

// TestKVBenchmarkRuns keeps the benchmark code working (tiny run, no
// figures asserted).
func TestKVBenchmarkRuns(t *testing.T) {
	c := tc.Start(t, 1, nil)
	r, err := KV(tc.Ctx(t, 30*time.Second), KVOptions{Addresses: c.Addresses(), Token: c.Token(), Clients: 4, Duration: 200 * time.Millisecond})
	if err != nil || r.Writes == 0 || r.Errors != 0 {
		t.Fatalf("%v, %v", r, err)
	}
}

// BenchmarkKVWritesInflight compares the leader's Raft entries in flight
// (head.Config.MaxInflight) under 64 writers:
// go test -run NONE -bench KVWritesInflight ./controlplane/cpbench
func BenchmarkKVWritesInflight(b *testing.B) {
	for _, n := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) {
			c := tc.Start(b, 3, func(_ int, cfg *head.Config) { cfg.MaxInflight = n })
			for b.Loop() {
				reg := c.Heads[c.WaitLeader()].Registry()
				before := gatherApplyStats(reg)
				r, err := KV(tc.Ctx(b, time.Minute), KVOptions{Addresses: c.Addresses(), Token: c.Token(), Duration: 5 * time.Second})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(r.PerSec, "writes/s")
				b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
				b.Log(r, " leader: ", gatherApplyStats(reg).sub(before))
			}
		})
	}
}

// TestKVPacedRuns keeps the user-shaped (paced, open-loop) load working:
// every write due in the window is sent and answered.
func TestKVPacedRuns(t *testing.T) {
	c := tc.Start(t, 1, nil)
	r, err := KV(tc.Ctx(t, 30*time.Second), KVOptions{Addresses: c.Addresses(), Token: c.Token(), Clients: 8,
		Rate: 400, Duration: 300 * time.Millisecond})
	if err != nil || r.Writes == 0 || r.Errors != 0 || r.Offered != 400 {
		t.Fatalf("%v, %v", r, err)
	}
}

// TestLineageBenchmarkRuns keeps the lineage benchmark working and checks
// its records are committed (readable from the store).
func TestLineageBenchmarkRuns(t *testing.T) {
	c := tc.Start(t, 1, nil)
	r, err := Lineage(tc.Ctx(t, 30*time.Second), LineageOptions{Addresses: c.Addresses(), Token: c.Token(),
		Owners: 2, Records: 300}, 0)
	if err != nil || r.Records != 600 || r.Batches == 0 {
		t.Fatalf("%v, %v", r, err)
	}
	if s := c.Heads[0].FSM().LineageStats(); s.Records != 600 {
		t.Fatalf("store holds %d records; want 600", s.Records)
	}
}

// BenchmarkLineageInflight compares group commit with one Raft entry in
// flight against pipelined entries (MaxInflight 4; an entry goes early
// once it carries PipelineMinBatch writes, here 1: a lineage write is
// already a batch of ~2000 records):
// go test -run NONE -bench LineageInflight -benchtime 3x ./controlplane/cpbench
func BenchmarkLineageInflight(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) {
			c := tc.Start(b, 3, func(_ int, cfg *head.Config) { cfg.MaxInflight, cfg.PipelineMinBatch = n, 1 })
			round := 0
			for b.Loop() {
				reg := c.Heads[c.WaitLeader()].Registry()
				before := gatherApplyStats(reg)
				r, err := Lineage(tc.Ctx(b, 5*time.Minute), LineageOptions{Addresses: c.Addresses(), Token: c.Token()}, round)
				if err != nil {
					b.Fatal(err)
				}
				round++
				b.ReportMetric(r.PerSec, "records/s")
				b.Log(r, " leader: ", gatherApplyStats(reg).sub(before))
			}
		})
	}
}

// BenchmarkKVWritesSharedClient: 64 writers of one process sharing its
// client, whose concurrent puts are coalesced into KVPutBatch calls.
//
//	go test ./controlplane/cpbench -run '^$' -bench KVWritesSharedClient -benchtime 1x
func BenchmarkKVWritesSharedClient(b *testing.B) {
	for _, store := range []string{"boltdb", "wal"} {
		b.Run(store, func(b *testing.B) { benchKVShared(b, store) })
	}
}

func benchKVShared(b *testing.B, store string) {
	c := tc.Start(b, 3, func(_ int, cfg *head.Config) { cfg.RaftLogStore = store })
	for b.Loop() {
		reg := c.Heads[c.WaitLeader()].Registry()
		before := gatherApplyStats(reg)
		r, err := KV(tc.Ctx(b, time.Minute), KVOptions{Addresses: c.Addresses(), Token: c.Token(), Conns: 1, Duration: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.PerSec, "writes/s")
		b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
		b.Log(r, " leader: ", gatherApplyStats(reg).sub(before))
	}
}
