package head_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/controlplane/head"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/metrics"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func startWithMetrics(t *testing.T, n int) *tc.Cluster {
	return tc.Start(t, n, func(_ int, c *head.Config) { c.MetricsAddr = "127.0.0.1:0" })
}

func scrape(t *testing.T, ctx context.Context, h *head.Head, token string) metrics.Families {
	t.Helper()
	f, err := metrics.Scrape(ctx, "http://"+h.MetricsAddress()+metrics.Path, token)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func value(t *testing.T, f metrics.Families, name string, match ...string) float64 {
	t.Helper()
	v, ok := f.Value(name, match...)
	if !ok {
		t.Fatalf("no series %s%v", name, match)
	}
	return v
}

// TestHeadMetricsMove scrapes a real head's /metrics with Prometheus'
// parser and checks the Raft, RPC and store series move with writes.
func TestHeadMetricsMove(t *testing.T) {
	c := startWithMetrics(t, 3)
	ctx := tc.Ctx(t, time.Minute)
	li := c.WaitLeader()
	leader := c.Heads[li]
	cl := pinned(t, c, li, 10*time.Second)

	before := scrape(t, ctx, leader, c.Token())
	if v := value(t, before, "manta_raft_state", "state", "Leader"); v != 1 {
		t.Fatalf("leader's manta_raft_state{state=Leader} = %v", v)
	}
	if v := value(t, before, "manta_raft_voters"); v != 3 {
		t.Fatalf("voters = %v, want 3", v)
	}
	if v := value(t, before, "manta_raft_leader_changes_total"); v < 1 {
		t.Fatalf("leader changes = %v, want the election seen", v)
	}
	for _, name := range []string{"manta_raft_term", "manta_raft_commit_index", "manta_raft_last_contact_seconds",
		"manta_fsm_entries", "manta_lineage_records", "manta_lineage_bytes", "go_goroutines", "process_resident_memory_bytes"} {
		value(t, before, name)
	}
	puts0, _ := before.Value("grpc_server_handled_total", "grpc_method", "KVPutBatch", "grpc_code", "OK")
	applied0 := value(t, before, "manta_raft_applied_index")
	applies0 := value(t, before, "manta_raft_apply_duration_seconds")

	const n = 5
	for i := range n {
		if _, err := cl.Put(ctx, "m", fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "n1", Address: "127.0.0.1:1", MetricsAddress: "127.0.0.1:2",
		Resources: map[string]float64{"CPU": 1}}); err != nil {
		t.Fatal(err)
	}
	task := ids.NewTaskID("job", ids.TaskID{}, 1)
	if _, err := cl.RecordLineage(ctx, &pb.RecordLineageRequest{Records: []*pb.TaskRecord{
		{TaskId: task[:], JobId: "job", Function: "f", NumReturns: 1, Args: []*pb.LineageArg{{Value: []byte{1, 2, 3}}}}}}); err != nil {
		t.Fatal(err)
	}
	// Task events: two finished and one failed attempt, counted by state
	// from the leader's soft-state buffer.
	var evs []*pb.TaskEvent
	for i, st := range []pb.TaskEventState{pb.TaskEventState_FINISHED, pb.TaskEventState_FINISHED, pb.TaskEventState_FAILED} {
		id := ids.NewTaskID("job", ids.TaskID{}, uint64(10+i))
		evs = append(evs, &pb.TaskEvent{TaskId: id[:], JobId: "job", FuncOrClassName: "f", State: st})
	}
	tc.Eventually(t, 10*time.Second, func() error {
		_, err := cl.ReportTaskEvents(ctx, &pb.ReportTaskEventsRequest{Events: evs})
		return err
	})

	after := scrape(t, ctx, leader, c.Token())
	if v := value(t, after, "manta_tasks", "state", "FINISHED"); v != 2 {
		t.Fatalf("finished tasks %v, want 2", v)
	}
	if v := value(t, after, "manta_tasks", "state", "FAILED"); v != 1 {
		t.Fatalf("failed tasks %v, want 1", v)
	}
	if v := value(t, after, "grpc_server_handled_total", "grpc_method", "KVPutBatch", "grpc_code", "OK"); v != puts0+n {
		t.Fatalf("KVPutBatch OK calls (sequential puts: one each) %v → %v, want +%d", puts0, v, n)
	}
	value(t, after, "grpc_server_handling_seconds", "grpc_method", "KVPutBatch")
	if v := value(t, after, "manta_raft_applied_index"); v < applied0+n {
		t.Fatalf("applied index %v → %v after %d writes", applied0, v, n)
	}
	if v := value(t, after, "manta_raft_apply_duration_seconds"); v <= applies0 {
		t.Fatalf("apply latency observations %v → %v", applies0, v)
	}
	if v := value(t, after, "manta_fsm_entries", "table", "kv"); v < n {
		t.Fatalf("kv entries %v", v)
	}
	if v := value(t, after, "manta_nodes", "state", "ALIVE"); v != 1 {
		t.Fatalf("alive nodes %v", v)
	}
	if v := value(t, after, "manta_lineage_records"); v != 1 {
		t.Fatalf("lineage records %v", v)
	}
	if v := value(t, after, "manta_lineage_bytes"); v <= 0 {
		t.Fatalf("lineage bytes %v", v)
	}
	value(t, after, "manta_actors", "state", "ALIVE")

	// A follower reports itself as one, with a recent contact.
	fi := (li + 1) % 3
	tc.Eventually(t, 10*time.Second, func() error {
		f := scrape(t, ctx, c.Heads[fi], c.Token())
		if v, _ := f.Value("manta_raft_state", "state", "Follower"); v != 1 {
			return fmt.Errorf("follower state %v", v)
		}
		if v, _ := f.Value("manta_fsm_entries", "table", "kv"); v < n {
			return fmt.Errorf("follower kv entries %v", v)
		}
		if _, ok := f.Value("manta_tasks", "state", "FINISHED"); ok {
			return fmt.Errorf("a follower reports the leader's task events")
		}
		return nil
	})

	// A call with a wrong token is counted as refused.
	cc, err := grpc.NewClient(leader.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return "wrong" })))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := pb.NewControlPlaneClient(cc).KVGet(ctx, &pb.KVGetRequest{Namespace: "m", Key: "k0"}); err == nil {
		t.Fatal("a wrong token was accepted")
	}
	if v := value(t, scrape(t, ctx, leader, c.Token()), "grpc_server_handled_total", "grpc_method", "KVGet", "grpc_code", "Unauthenticated"); v != 1 {
		t.Fatalf("refused KVGet counted %v times", v)
	}

	// Snapshots are counted with their size.
	if err := leader.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	f := scrape(t, ctx, leader, c.Token())
	if v := value(t, f, "manta_raft_snapshots_total"); v != 1 {
		t.Fatalf("snapshots %v", v)
	}
	if v := value(t, f, "manta_raft_last_snapshot_size_bytes"); v <= 0 {
		t.Fatalf("snapshot size %v", v)
	}
}

func TestHeadMetricsNeedTheToken(t *testing.T) {
	c := startWithMetrics(t, 1)
	url := "http://" + c.Heads[0].MetricsAddress() + metrics.Path
	for _, tok := range []string{"", "wrong"} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q: %s, want 401", tok, resp.Status)
		}
	}
}

// TestServiceDiscoveryFileFollowsNodes checks every head's file_sd file
// lists every head, and a node while it is alive.
func TestServiceDiscoveryFileFollowsNodes(t *testing.T) {
	c := startWithMetrics(t, 3)
	ctx := tc.Ctx(t, time.Minute)
	cl := c.Client()
	want := func(withNode bool) []metrics.Target {
		var ts []metrics.Target
		for _, h := range c.Heads {
			ts = append(ts, metrics.Target{Address: h.MetricsAddress(), Node: h.ID(), Role: "head"})
		}
		if withNode {
			ts = append(ts, metrics.Target{Address: "127.0.0.1:9", Node: "n1", Role: "raylet"})
		}
		return ts
	}
	check := func(withNode bool) {
		t.Helper()
		for i := range c.Heads {
			path := filepath.Join(c.DataDir(i), metrics.SDFileName)
			tc.Eventually(t, 15*time.Second, func() error {
				got, err := metrics.ReadSD(path)
				if err != nil {
					return err
				}
				if w := want(withNode); !slices.Equal(sortTargets(got), sortTargets(w)) {
					return fmt.Errorf("%s lists %v, want %v", path, got, w)
				}
				return nil
			})
		}
	}
	check(false)
	if _, err := cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: "n1", Address: "127.0.0.1:8", MetricsAddress: "127.0.0.1:9",
		Resources: map[string]float64{"CPU": 1}}); err != nil {
		t.Fatal(err)
	}
	check(true)
	if err := cl.UnregisterNode(ctx, "n1", "test"); err != nil {
		t.Fatal(err)
	}
	check(false)
}

func sortTargets(ts []metrics.Target) []metrics.Target {
	out := slices.Clone(ts)
	slices.SortFunc(out, func(a, b metrics.Target) int {
		if a.Node != b.Node {
			if a.Node < b.Node {
				return -1
			}
			return 1
		}
		return 0
	})
	return out
}
