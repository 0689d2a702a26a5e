package head_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// pinned returns a client that talks to one head only.
func pinned(t *testing.T, c *tc.Cluster, i int, timeout time.Duration) *cpclient.Client {
	t.Helper()
	cl, err := cpclient.New(cpclient.Config{Addresses: []string{c.Addresses()[i]}, Token: c.Token(), Timeout: timeout, AttemptTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func TestWritesOnAnyHeadReadEverywhere(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 30*time.Second)
	for i := range 3 {
		cl := pinned(t, c, i, 5*time.Second)
		if _, err := cl.Put(ctx, "t", fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("put via head %d: %v", i+1, err)
		}
	}
	for i := range 3 {
		cl := pinned(t, c, i, 5*time.Second)
		for k := range 3 {
			v, err := cl.Get(ctx, "t", fmt.Sprintf("k%d", k))
			if err != nil || string(v) != fmt.Sprint(k) {
				t.Fatalf("linearizable get k%d via head %d = %q, %v", k, i+1, v, err)
			}
		}
		// A stale read on a follower catches up without a leader round trip.
		tc.Eventually(t, 5*time.Second, func() error {
			r, err := cl.KVGet(ctx, &pb.KVGetRequest{Namespace: "t", Key: "k2", Stale: true})
			if err != nil {
				return err
			}
			if r.Header.HeadId != c.Heads[i].ID() {
				return fmt.Errorf("stale read answered by %s, want %s", r.Header.HeadId, c.Heads[i].ID())
			}
			return nil
		})
	}
}

func TestDuplicateRequestIDAppliedOnce(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 30*time.Second)
	// Each attempt goes to a different head, as a retry across heads would.
	var ids []string
	for i, rid := range []string{"same", "same", "other"} {
		id, err := pinned(t, c, i, 5*time.Second).AddJobWithRequest(ctx, &pb.AddJobRequest{Job: &pb.JobInfo{Entrypoint: "x"}, RequestId: rid})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if ids[0] != ids[1] || ids[2] == ids[0] {
		t.Fatalf("job IDs %v: a retried request must get the first answer", ids)
	}
	jobs, err := c.Client().ListJobs(ctx, false)
	if err != nil || len(jobs) != 2 {
		t.Fatalf("jobs = %v, %v; want 2", jobs, err)
	}
}

func TestSnapshotInstallAndRestartCatchUp(t *testing.T) {
	c := tc.Start(t, 3, func(i int, cfg *head.Config) {
		cfg.SnapshotThreshold = 50
		cfg.TrailingLogs = 10
		cfg.SnapshotInterval = 100 * time.Millisecond
	})
	ctx := tc.Ctx(t, 60*time.Second)
	lagging := (c.Leader() + 1) % 3
	c.Stop(lagging)
	cl := c.Client()
	for i := range 300 {
		if _, err := cl.Put(ctx, "snap", fmt.Sprint(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.Heads[c.Leader()]
	if err := leader.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	c.Restart(lagging)
	tc.Eventually(t, 20*time.Second, func() error {
		want, wi := c.Heads[c.WaitLeader()].FSM().StateHash()
		got, gi := c.Heads[lagging].FSM().StateHash()
		if want != got {
			return fmt.Errorf("restarted head at index %d, leader at %d: states differ", gi, wi)
		}
		return nil
	})
	// The restarted head got the log's head through a snapshot: the entries
	// it missed were compacted away on the leader.
	if first, _ := c.Heads[c.Leader()].Raft().Stats()["last_snapshot_index"]; first == "0" {
		t.Fatalf("leader never snapshotted")
	}
	v, err := pinned(t, c, lagging, 5*time.Second).KVGet(ctx, &pb.KVGetRequest{Namespace: "snap", Key: "299", Stale: true})
	if err != nil || string(v.Value) != "299" {
		t.Fatalf("restarted head read = %v, %v", v, err)
	}
}

func TestLeaderFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 60*time.Second)
	cl := c.Client()
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return // not a tight loop of failing writes once the test's time is up
				default:
				}
				k := fmt.Sprintf("w%d-%d", w, i)
				if _, err := cl.Put(ctx, "fo", k, []byte(k)); err == nil {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	tc.Eventually(t, 10*time.Second, func() error {
		if count() < 200 {
			return fmt.Errorf("%d writes so far", count())
		}
		return nil
	})
	old := c.Leader()
	c.Stop(old)
	before := count()
	tc.Eventually(t, 20*time.Second, func() error {
		if count() < before+200 {
			return fmt.Errorf("%d writes after failover", count()-before)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	for k := range acked {
		v, err := cl.Get(ctx, "fo", k)
		if err != nil || string(v) != k {
			t.Fatalf("acknowledged key %s: %q, %v", k, v, err)
		}
	}
	c.Restart(old)
	tc.Eventually(t, 20*time.Second, func() error {
		want, _ := c.Heads[c.WaitLeader()].FSM().StateHash()
		if got, _ := c.Heads[old].FSM().StateHash(); got != want {
			return errors.New("old leader has not caught up")
		}
		return nil
	})
}

func TestMinorityRefusesWritesAndRecovers(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 60*time.Second)
	survivor := c.Leader()
	others := []int{(survivor + 1) % 3, (survivor + 2) % 3}
	for _, i := range others {
		c.Stop(i)
	}
	cl := pinned(t, c, survivor, 2*time.Second)
	_, err := cl.Put(ctx, "m", "k", []byte("v"))
	if err == nil || !errors.Is(err, rpcerr.ErrUnavailable) {
		t.Fatalf("write on a minority: %v; want Unavailable", err)
	}
	if _, ok := rpcerr.RetryDelay(err); !ok && !strings.Contains(err.Error(), "attempts") {
		t.Logf("no retry hint on %v", err)
	}
	tc.Eventually(t, 10*time.Second, func() error {
		st, err := cl.StatusOf(ctx, c.Addresses()[survivor])
		if err != nil {
			return err
		}
		if st.QuorumProblem == "" {
			return fmt.Errorf("status of a head without quorum says nothing (state %s)", st.RaftState)
		}
		return nil
	})
	for _, i := range others {
		c.Restart(i)
	}
	c.WaitLeader()
	full := c.Client()
	if _, err := full.Put(ctx, "m", "k", []byte("v")); err != nil {
		t.Fatalf("write after quorum returned: %v", err)
	}
	if _, err := full.Get(ctx, "m", "k"); err != nil {
		t.Fatal(err)
	}
}

func TestAuthentication(t *testing.T) {
	c := tc.Start(t, 1, nil)
	ctx := tc.Ctx(t, 20*time.Second)
	for _, tok := range []string{"", "wrong"} {
		cl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: tok, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.Put(ctx, "a", "k", []byte("v"))
		if !errors.Is(err, head.ErrBadToken) || !errors.Is(err, rpcerr.ErrUnauthenticated) {
			t.Fatalf("token %q: %v; want Unauthenticated", tok, err)
		}
		cl.Close()
	}
	if _, _, err := c.Heads[0].FSM().KVGet("a", "k"); !errors.Is(err, fsm.ErrKeyNotFound) {
		t.Fatalf("an unauthenticated write changed state: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	c := tc.Start(t, 1, func(i int, cfg *head.Config) { cfg.MaxKVValueBytes = 1024 })
	ctx := tc.Ctx(t, 20*time.Second)
	cl := c.Client()
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"value too large", func() error { _, err := cl.Put(ctx, "", "k", make([]byte, 1025)); return err }, head.ErrValueTooLarge},
		{"empty key", func() error { _, err := cl.Put(ctx, "", "", nil); return err }, rpcerr.ErrInvalidArgument},
		{"unknown key", func() error { _, err := cl.Get(ctx, "", "nope"); return err }, fsm.ErrKeyNotFound},
		{"negative resource", func() error {
			_, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "n", Address: "a", Resources: map[string]float64{"CPU": -1}})
			return err
		}, rpcerr.ErrInvalidArgument},
		{"heartbeat of unknown node", func() error {
			_, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: "ghost"})
			return err
		}, fsm.ErrNodeNotFound},
		{"remove unknown peer", func() error { return cl.RaftRemovePeer(ctx, "head-9") }, rpcerr.ErrNotFound},
		{"finish unknown job", func() error { return cl.FinishJob(ctx, "ffffffff", pb.JobState_JOB_SUCCEEDED, "") }, fsm.ErrJobNotFound},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v; want %v", err, tt.want)
			}
		})
	}
	if keys, _ := c.Heads[0].FSM().KVList("", ""); len(keys) != 0 {
		t.Fatalf("rejected writes left keys %v", keys)
	}
}

func TestNodeLivenessMarksSilentNodeDead(t *testing.T) {
	c := tc.Start(t, 3, func(i int, cfg *head.Config) { cfg.NodeTimeout = 1 * time.Second })
	ctx := tc.Ctx(t, 60*time.Second)
	cl := c.Client()
	for _, id := range []string{"live", "silent"} {
		if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: id, Address: "127.0.0.1:1", Resources: map[string]float64{"CPU": 1}}); err != nil {
			t.Fatal(err)
		}
	}
	// Watch node changes from the start, as a raylet would.
	deadSeen := make(chan string, 4)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go cl.Watch(wctx, &pb.WatchRequest{Kinds: []pb.EventKind{pb.EventKind_EVENT_NODE}}, func(r *pb.WatchResponse) error {
		for _, e := range r.Events {
			if e.Node.GetState() == pb.NodeState_NODE_DEAD {
				deadSeen <- e.Node.NodeId
			}
		}
		return nil
	})
	hbDone := make(chan struct{})
	hbCtx, hbCancel := context.WithCancel(ctx)
	go func() {
		defer close(hbDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			_, _ = cl.Heartbeat(hbCtx, &pb.HeartbeatRequest{NodeId: "live", Available: map[string]float64{"CPU": 0.5}})
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() { hbCancel(); <-hbDone }()
	select {
	case id := <-deadSeen:
		if id != "silent" {
			t.Fatalf("node %s marked dead while heartbeating", id)
		}
	case <-ctx.Done():
		t.Fatal("silent node never marked dead")
	}
	// The live node stays alive across a leader change (grace period).
	c.Stop(c.Leader())
	c.WaitLeader()
	tc.Eventually(t, 10*time.Second, func() error {
		r, err := cl.ListNodes(ctx, &pb.ListNodesRequest{})
		if err != nil {
			return err
		}
		for _, n := range r.Nodes {
			if n.NodeId == "live" && n.Available["CPU"] != 0.5 {
				return fmt.Errorf("new leader has no heartbeat from live yet")
			}
		}
		return nil
	})
	r, err := cl.ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range r.Nodes {
		if n.NodeId == "live" && n.State != pb.NodeState_NODE_ALIVE {
			t.Fatalf("heartbeating node died across failover: %v", n)
		}
	}
	_, err = cl.Heartbeat(ctx, &pb.HeartbeatRequest{NodeId: "silent"})
	if !errors.Is(err, fsm.ErrNodeDead) {
		t.Fatalf("heartbeat of a dead node: %v; want ErrNodeDead", err)
	}
}

func TestWatchResumesOnAnotherHead(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 30*time.Second)
	cl := c.Client()
	if _, err := cl.Put(ctx, "w", "before", nil); err != nil {
		t.Fatal(err)
	}
	var last uint64
	gotReset := false
	wctx, wcancel := context.WithCancel(ctx)
	err := pinned(t, c, 0, 5*time.Second).Watch(wctx, &pb.WatchRequest{Kinds: []pb.EventKind{pb.EventKind_EVENT_KV}}, func(r *pb.WatchResponse) error {
		gotReset = gotReset || r.Reset_
		last = r.Index
		for _, e := range r.Events {
			if e.KvKey == "before" {
				wcancel()
			}
		}
		return nil
	})
	if !gotReset || !errors.Is(err, context.Canceled) {
		t.Fatalf("first watch: reset=%v err=%v", gotReset, err)
	}
	for i := range 5 {
		if _, err := cl.Put(ctx, "w", fmt.Sprintf("after-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	wctx, wcancel = context.WithCancel(ctx)
	defer wcancel()
	_ = pinned(t, c, 2, 5*time.Second).Watch(wctx, &pb.WatchRequest{FromIndex: last, Kinds: []pb.EventKind{pb.EventKind_EVENT_KV}}, func(r *pb.WatchResponse) error {
		if r.Reset_ {
			return errors.New("resume within the ring must not reset")
		}
		for _, e := range r.Events {
			keys = append(keys, e.KvKey)
		}
		if len(keys) >= 5 {
			wcancel()
		}
		return nil
	})
	if fmt.Sprint(keys) != "[after-0 after-1 after-2 after-3 after-4]" {
		t.Fatalf("resumed watch saw %v", keys)
	}
}

func TestDataDirInUseIsRefused(t *testing.T) {
	c := tc.Start(t, 1, nil)
	cfg := head.Config{ID: c.Heads[0].ID(), DataDir: c.DataDir(0)}
	_, err := head.New(cfg)
	if !errors.Is(err, head.ErrDataDirInUse) {
		t.Fatalf("second head on a live data dir: %v; want ErrDataDirInUse", err)
	}
	cfg.ID = "someone-else"
	if _, err := head.New(cfg); !errors.Is(err, head.ErrWrongCluster) {
		t.Fatalf("head on another head's data dir: %v; want ErrWrongCluster", err)
	}
}
