package head_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
)

func onWAL(_ int, c *head.Config) { c.RaftLogStore = head.LogStoreWAL }

// TestWALHeadsRestartWithTheirState: a cluster on raft-wal serves writes;
// every head closed without a snapshot (so the state lives only in the
// log) comes back with every acknowledged write, and the cluster goes on.
func TestWALHeadsRestartWithTheirState(t *testing.T) {
	c := tc.Start(t, 3, onWAL)
	ctx := tc.Ctx(t, time.Minute)
	cl := c.Client()
	const n = 50
	for i := range n {
		if _, err := cl.Put(ctx, "wal", fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.Heads {
		if _, err := os.Stat(filepath.Join(c.DataDir(i), "raft.db")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("head %d on wal has a raft.db (%v)", i+1, err)
		}
		if _, err := os.Stat(filepath.Join(c.DataDir(i), "raft-wal")); err != nil {
			t.Fatalf("head %d: %v", i+1, err)
		}
	}
	for i := range c.Heads {
		c.Stop(i)
	}
	for i := range c.Heads {
		snaps, _ := filepath.Glob(filepath.Join(c.DataDir(i), "snapshots", "*"))
		if len(snaps) != 0 {
			t.Fatalf("head %d took a snapshot %v; the test wants the state from the log alone", i+1, snaps)
		}
	}
	for i := range c.Heads {
		c.Restart(i)
	}
	c.WaitLeader()
	for i := range n {
		v, err := cl.Get(ctx, "wal", fmt.Sprintf("k%d", i))
		if err != nil || string(v) != fmt.Sprint(i) {
			t.Fatalf("k%d after restart: %q, %v", i, v, err)
		}
	}
	if _, err := cl.Put(ctx, "wal", "after", []byte("x")); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	// Followers apply asynchronously: every head gets there, bounded.
	for i, h := range c.Heads {
		tc.Eventually(t, 10*time.Second, func() error {
			if keys, _ := h.FSM().KVList("wal", ""); len(keys) != n+1 {
				return fmt.Errorf("head %d has %d keys; want %d", i+1, len(keys), n+1)
			}
			return nil
		})
	}
}

// TestLogStoreKindIsKept: a data dir created on one log store refuses the
// other (starting on an empty log would lose the head's state), and a
// second head on a live wal dir is refused, not left hanging.
func TestLogStoreKindIsKept(t *testing.T) {
	c := tc.Start(t, 1, nil)
	cfg := head.Config{ID: c.Heads[0].ID(), DataDir: c.DataDir(0), RaftLogStore: head.LogStoreWAL}
	c.Stop(0)
	if _, err := head.New(cfg); !errors.Is(err, head.ErrLogStoreMismatch) {
		t.Fatalf("wal head on a boltdb dir: %v; want ErrLogStoreMismatch", err)
	}

	w := tc.Start(t, 1, onWAL)
	cfg = head.Config{ID: w.Heads[0].ID(), DataDir: w.DataDir(0), RaftLogStore: head.LogStoreWAL}
	if _, err := head.New(cfg); !errors.Is(err, head.ErrDataDirInUse) {
		t.Fatalf("second head on a live wal dir: %v; want ErrDataDirInUse", err)
	}
	w.Stop(0)
	cfg.RaftLogStore = head.LogStoreBoltDB
	if _, err := head.New(cfg); !errors.Is(err, head.ErrLogStoreMismatch) {
		t.Fatalf("boltdb head on a wal dir: %v; want ErrLogStoreMismatch", err)
	}
	cfg.RaftLogStore = "leveldb"
	if _, err := head.New(cfg); !errors.Is(err, head.ErrBadConfig) {
		t.Fatalf("unknown log store: %v; want ErrBadConfig", err)
	}
}

// TestPipelinedGroupCommitLosesNothing: with several Raft entries in flight
// (MaxInflight 4, entries of 4 writes may go early), concurrent writers'
// acknowledged writes are all in every head's store.
func TestPipelinedGroupCommitLosesNothing(t *testing.T) {
	c := tc.Start(t, 3, func(_ int, cfg *head.Config) {
		cfg.MaxInflight, cfg.PipelineMinBatch = 4, 4
	})
	ctx := tc.Ctx(t, time.Minute)
	const writers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		cl := c.Client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := cl.Put(ctx, "pipe", fmt.Sprintf("w%d-%d", w, i), []byte("v")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, h := range c.Heads {
		tc.Eventually(t, 10*time.Second, func() error {
			if keys, _ := h.FSM().KVList("pipe", ""); len(keys) != writers*each {
				return fmt.Errorf("head %d has %d keys; want %d", i+1, len(keys), writers*each)
			}
			return nil
		})
	}
}
