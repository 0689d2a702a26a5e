package main

import (
	"testing"
)

// TestBenchWritesOnWAL runs the write benchmarks through the binary on a
// local cluster of head processes on the wal log store: the flags reach
// the heads, every write is answered, and the lineage records commit.
func TestBenchWritesOnWAL(t *testing.T) {
	r := mantaCmd(t, nil, "", "bench", "kv", "--raft-log-store", "wal", "--clients", "4", "--duration", "300ms", "--json")
	if r.code != 0 {
		t.Fatalf("bench kv: %v", r)
	}
	kv := decodeJSON[struct {
		Writes int `json:"writes"`
		Errors int `json:"errors"`
	}](t, r)
	if kv.Writes == 0 || kv.Errors != 0 {
		t.Fatalf("bench kv on wal: %d writes, %d errors", kv.Writes, kv.Errors)
	}
	r = mantaCmd(t, nil, "", "bench", "lineage", "--raft-log-store", "wal", "--owners", "2", "--records", "300", "--rounds", "1", "--json")
	if r.code != 0 {
		t.Fatalf("bench lineage: %v", r)
	}
	if l := decodeJSON[struct {
		Records int `json:"records"`
	}](t, r); l.Records != 600 {
		t.Fatalf("bench lineage on wal committed %d records; want 600", l.Records)
	}
	if r := mantaCmd(t, nil, "", "bench", "kv", "--raft-log-store", "leveldb", "--duration", "100ms"); r.code == 0 {
		t.Fatalf("bench kv with an unknown log store succeeded: %v", r)
	}
}
