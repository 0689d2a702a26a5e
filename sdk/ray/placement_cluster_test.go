package ray_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/internal/rpcerr"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// nodeOf is a task that says where it ran, after holding its worker for a
// while (so concurrent ones need distinct workers).
var nodeOf = ray.Func1("test.pg.NodeOf", func(ctx context.Context, hold time.Duration) (string, error) {
	time.Sleep(hold)
	info, err := ray.RuntimeContext(ctx)
	return info.NodeID, err
})

// Where is an actor that says where it runs.
type where struct{}

var (
	Where     = ray.Actor0("test.pg.Where", func(context.Context) (*where, error) { return &where{}, nil })
	whereNode = ray.Method0(Where, "Node", func(_ *where, ctx context.Context) (string, error) {
		info, err := ray.RuntimeContext(ctx)
		return info.NodeID, err
	})
	zoneLabels = []string{"a", "b", "c", "d"}
)

// TestPlacementCluster runs scheduling strategies and placement groups on
// 3 heads + 3 raylets (2 CPUs each, labelled zone=a, b, c), all separate
// processes, and kills the leader and a node under them.
func TestPlacementCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 3, Nodes: 3, DataDir: t.TempDir(),
		ExtraHeadArgs: []string{"--node-timeout", "2s", "--testing-pg-prepare-delay", "20ms"},
		NodeArgs:      func(i int) []string { return []string{"--num-cpus", "2", "--labels", "zone=" + zoneLabels[i]} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	cp, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	raylets := &rayletConns{token: c.Token(), conns: map[string]*grpc.ClientConn{}}
	t.Cleanup(raylets.close)
	nodeIDs := func() []string {
		var ids []string
		for _, n := range c.Nodes() {
			if n.Running {
				ids = append(ids, n.ID)
			}
		}
		return ids
	}

	t.Run("strategies place where they say", func(t *testing.T) {
		ids := nodeIDs()
		// SPREAD goes round-robin over the nodes with the CPU free: with
		// every node idle, three tasks that each hold a worker land on
		// three nodes.
		waitAllFree(ctx, t, cp, raylets)
		var refs []ray.ObjectRef[string]
		for range 3 {
			refs = append(refs, nodeOf.Remote(ctx, ray.Val(time.Second), ray.Spread()))
		}
		seen := map[string]bool{}
		for _, r := range refs {
			n, err := ray.Get(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			seen[n] = true
		}
		if len(seen) != 3 {
			t.Fatalf("spread tasks ran on %v; want 3 nodes", seen)
		}
		for _, id := range ids {
			got, err := ray.Get(ctx, nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.NodeAffinity(id, false)))
			if err != nil || got != id {
				t.Fatalf("hard affinity to %s ran on %q, %v", id, got, err)
			}
		}
		got, err := ray.Get(ctx, nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.NodeLabels(map[string]string{"zone": "b"}, false)))
		if err != nil || got != ids[1] {
			t.Fatalf("zone=b ran on %q, %v; want %s", got, err, ids[1])
		}
		// Soft labels no node has: it runs anyway.
		if _, err := ray.Get(ctx, nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.NodeLabels(map[string]string{"zone": "z"}, true))); err != nil {
			t.Fatalf("soft labels no node has: %v", err)
		}
		// Hard affinity to a node that does not exist fails, clearly.
		_, err = ray.Get(ctx, nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.NodeAffinity("node-nosuch", false)))
		if !errors.Is(err, ray.ErrTaskUnschedulable) || !strings.Contains(err.Error(), "node-nosuch") {
			t.Fatalf("hard affinity to an unknown node: %v; want ErrTaskUnschedulable naming it", err)
		}
		// Soft affinity to it runs elsewhere.
		if _, err := ray.Get(ctx, nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.NodeAffinity("node-nosuch", true))); err != nil {
			t.Fatalf("soft affinity to an unknown node: %v", err)
		}
		// An actor pinned to the third node lives there.
		h, err := Where.Remote(ctx, ray.NodeAffinity(ids[2], false))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := ray.Get(ctx, whereNode.Remote(ctx, h)); err != nil || n != ids[2] {
			t.Fatalf("actor with affinity to %s lives on %q, %v", ids[2], n, err)
		}
		_ = ray.Kill(ctx, h, true)
	})

	t.Run("bad placement groups are refused before anything is reserved", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			bundles []ray.Bundle
			s       ray.PlacementStrategy
		}{
			{"no bundles", nil, ray.Pack},
			{"an empty bundle", []ray.Bundle{{}}, ray.Pack},
			{"a zero quantity", []ray.Bundle{{"CPU": 0}}, ray.Pack},
			{"a negative quantity", []ray.Bundle{{"CPU": -1}}, ray.Pack},
			{"an unknown strategy", []ray.Bundle{{"CPU": 1}}, ray.PlacementStrategy(9)},
		} {
			if _, err := ray.NewPlacementGroup(ctx, tc.bundles, tc.s); !errors.Is(err, ray.ErrInvalidOption) {
				t.Errorf("%s: %v; want ErrInvalidOption", tc.name, err)
			}
		}
		// The control plane refuses them too (a client that skips the SDK).
		_, err := cp.CreatePlacementGroup(ctx, &cpb.PlacementGroupInfo{JobId: "00000001", Strategy: cpb.PlacementStrategy_PACK,
			Bundles: []*cpb.Bundle{{Resources: map[string]float64{"CPU": 0}}}})
		if !errors.Is(err, rpcerr.ErrInvalidArgument) {
			t.Fatalf("a zero bundle at the control plane: %v; want InvalidArgument", err)
		}
		pg, err := ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 0.1}}, ray.Pack, ray.Name("taken"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 0.1}}, ray.Pack, ray.Name("taken")); !errors.Is(err, rpcerr.ErrAlreadyExists) {
			t.Fatalf("a taken name: %v; want AlreadyExists", err)
		}
		if got, err := ray.GetPlacementGroup(ctx, "taken"); err != nil || got.ID() != pg.ID() {
			t.Fatalf("get by name: %v, %v", got, err)
		}
		if _, err := ray.Get(ctx, nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.InPlacementGroup(pg, 1))); !errors.Is(err, ray.ErrInvalidOption) {
			t.Fatalf("bundle index out of range: %v; want ErrInvalidOption", err)
		}
		if err := pg.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		waitNoBundles(ctx, t, cp, raylets)
	})

	t.Run("tasks and actors run in their bundle; remove fails the rest and returns everything", func(t *testing.T) {
		pg, err := ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 1}, {"CPU": 1}}, ray.StrictSpread)
		if err != nil {
			t.Fatal(err)
		}
		if err := pg.Ready(ctx); err != nil {
			t.Fatal(err)
		}
		info, err := pg.Info(ctx)
		if err != nil || info.State != "CREATED" || info.BundleNodes[0] == info.BundleNodes[1] || info.BundleNodes[0] == "" {
			t.Fatalf("a STRICT_SPREAD group: %+v, %v", info, err)
		}
		for i := range 2 {
			n, err := ray.Get(ctx, nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.InPlacementGroup(pg, i)))
			if err != nil || n != info.BundleNodes[i] {
				t.Fatalf("a task in bundle %d ran on %q, %v; want %s", i, n, err, info.BundleNodes[i])
			}
		}
		h, err := Where.Remote(ctx, ray.InPlacementGroup(pg, 1), ray.NumCPUs(1))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := ray.Get(ctx, whereNode.Remote(ctx, h)); err != nil || n != info.BundleNodes[1] {
			t.Fatalf("an actor in bundle 1 lives on %q, %v; want %s", n, err, info.BundleNodes[1])
		}
		// Bundle 1's CPU is the actor's: a task there waits until the
		// group goes, then fails.
		queued := nodeOf.Remote(ctx, ray.Val(time.Duration(0)), ray.InPlacementGroup(pg, 1))
		if err := pg.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := ray.Get(ctx, queued); !errors.Is(err, ray.ErrTaskUnschedulable) {
			t.Fatalf("a task queued in a removed group: %v; want ErrTaskUnschedulable", err)
		}
		if _, err := ray.Get(ctx, whereNode.Remote(ctx, h)); !errors.Is(err, ray.ErrActorDied) {
			t.Fatalf("an actor of a removed group: %v; want ErrActorDied", err)
		}
		waitNoBundles(ctx, t, cp, raylets)
		waitAllFree(ctx, t, cp, raylets)
	})

	t.Run("STRICT_SPREAD of 4 bundles on 3 nodes waits for a fourth node", func(t *testing.T) {
		pg, err := ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}}, ray.StrictSpread, ray.Name("four"))
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(ctx, t, "the group listed as waiting", func() (bool, error) {
			info, err := pg.Info(ctx)
			return err == nil && (info.State == "PENDING" || info.State == "INFEASIBLE") && info.Reason != "", err
		})
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err = pg.Ready(rctx)
		rcancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ready with 3 nodes: %v; want it to wait", err)
		}
		if _, err := c.AddNode(ctx, "--num-cpus", "2", "--labels", "zone=d"); err != nil {
			t.Fatal(err)
		}
		if err := pg.Ready(ctx); err != nil {
			t.Fatal(err)
		}
		info, _ := pg.Info(ctx)
		distinct := map[string]bool{}
		for _, n := range info.BundleNodes {
			distinct[n] = true
		}
		if len(distinct) != 4 {
			t.Fatalf("STRICT_SPREAD placed on %v", info.BundleNodes)
		}
		if err := pg.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		waitNoBundles(ctx, t, cp, raylets)
	})

	t.Run("leader killed during the placement of 20 groups: nothing leaks", func(t *testing.T) {
		const n = 20
		pgs := make([]*ray.PlacementGroup, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pgs[i], errs[i] = ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 0.1}, {"CPU": 0.1}},
					[]ray.PlacementStrategy{ray.Pack, ray.SpreadPG, ray.StrictPack, ray.StrictSpread}[i%4])
			}()
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("create %d: %v", i, errs[i])
			}
		}
		// The leader pauses 20ms after each prepare, so once it has placed
		// a few it is most likely between a prepare and its record.
		leader, _, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(ctx, t, "a few groups placed", func() (bool, error) {
			groups, err := cp.ListPlacementGroups(ctx, true)
			created := 0
			for _, g := range groups {
				if g.State == cpb.PlacementGroupState_PG_CREATED {
					created++
				}
			}
			return created >= 3, err
		})
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := pgs[i].Ready(ctx); err != nil {
				t.Fatalf("group %d: %v", i, err)
			}
		}
		waitBundlesMatchTable(ctx, t, cp, raylets)
		if t.Failed() {
			return
		}
		for _, h := range c.Heads() {
			if b, err := os.ReadFile(filepath.Join(c.DataDir(), h.ID, "head.log")); err == nil {
				t.Logf("%s released %d stray bundles", h.ID, strings.Count(string(b), "releasing a bundle the group table does not place here"))
			}
		}
		for _, pg := range pgs {
			if err := pg.Remove(ctx); err != nil {
				t.Fatal(err)
			}
		}
		waitNoBundles(ctx, t, cp, raylets)
		waitAllFree(ctx, t, cp, raylets)
	})

	t.Run("a node with a bundle dies: the group is rescheduled and its actor answers again", func(t *testing.T) {
		pg, err := ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 1}}, ray.StrictPack)
		if err != nil {
			t.Fatal(err)
		}
		if err := pg.Ready(ctx); err != nil {
			t.Fatal(err)
		}
		h, err := Where.Remote(ctx, ray.InPlacementGroup(pg, 0), ray.NumCPUs(1), ray.MaxRestarts(-1))
		if err != nil {
			t.Fatal(err)
		}
		before, err := ray.Get(ctx, whereNode.Remote(ctx, h))
		if err != nil {
			t.Fatal(err)
		}
		killed := false
		for i, np := range c.Nodes() {
			if np.ID == before {
				if err := c.KillNode(i); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		if !killed {
			t.Fatalf("no launcher node %s", before)
		}
		var after string
		waitUntil(ctx, t, "the actor answering from another node", func() (bool, error) {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			defer ccancel()
			n, err := ray.Get(cctx, whereNode.Remote(cctx, h))
			after = n
			return err == nil && n != before, nil
		})
		info, err := pg.Info(ctx)
		if err != nil || info.State != "CREATED" || info.BundleNodes[0] != after {
			t.Fatalf("after the reschedule: %+v, %v; want CREATED on %s", info, err, after)
		}
		if err := pg.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		waitNoBundles(ctx, t, cp, raylets)
	})
}

// rayletConns dials raylets for their bundles.
type rayletConns struct {
	token string
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (r *rayletConns) client(addr string) (rpb.RayletClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cc := r.conns[addr]; cc != nil {
		return rpb.NewRayletClient(cc), nil
	}
	tok := r.token
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return tok })))
	if err != nil {
		return nil, err
	}
	r.conns[addr] = cc
	return rpb.NewRayletClient(cc), nil
}

func (r *rayletConns) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cc := range r.conns {
		cc.Close()
	}
}

// eachRaylet calls f with every alive node's raylet.
func eachRaylet(ctx context.Context, cp *cpclient.Client, r *rayletConns, f func(n *cpb.NodeInfo, c rpb.RayletClient) (bool, error)) (bool, error) {
	nodes, err := cp.ListNodes(ctx, &cpb.ListNodesRequest{AliveOnly: true})
	if err != nil {
		return false, err
	}
	for _, n := range nodes.Nodes {
		c, err := r.client(n.Address)
		if err != nil {
			return false, err
		}
		ok, err := f(n, c)
		if !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

// waitBundlesMatchTable waits until every raylet holds exactly the
// bundles the group table places on it, all committed, and the
// resources they hold add up to the groups'.
func waitBundlesMatchTable(ctx context.Context, t *testing.T, cp *cpclient.Client, r *rayletConns) {
	t.Helper()
	waitUntil(ctx, t, "raylets' bundles to match the group table", func() (bool, error) {
		groups, err := cp.ListPlacementGroups(ctx, false)
		if err != nil {
			return false, err
		}
		want := map[string]map[string]float64{} // node → "pg/index" → CPU
		for _, g := range groups {
			if g.State != cpb.PlacementGroupState_PG_CREATED {
				continue
			}
			for i, b := range g.Bundles {
				if want[b.NodeId] == nil {
					want[b.NodeId] = map[string]float64{}
				}
				want[b.NodeId][fmt.Sprint(g.PlacementGroupId, "/", i)] = b.Resources["CPU"]
			}
		}
		return eachRaylet(ctx, cp, r, func(n *cpb.NodeInfo, c rpb.RayletClient) (bool, error) {
			held, err := c.ListBundles(ctx, &rpb.ListBundlesRequest{})
			if err != nil {
				return false, err
			}
			got := map[string]float64{}
			for _, b := range held.Bundles {
				if !b.Committed {
					return false, nil
				}
				got[fmt.Sprint(b.PlacementGroupId, "/", b.Index)] = b.Resources["CPU"]
			}
			if w := want[n.NodeId]; !maps.Equal(got, w) && !(len(got) == 0 && len(w) == 0) {
				return false, nil
			}
			return true, nil
		})
	})
}

// waitNoBundles waits until no raylet holds a bundle.
func waitNoBundles(ctx context.Context, t *testing.T, cp *cpclient.Client, r *rayletConns) {
	t.Helper()
	waitUntil(ctx, t, "every raylet to hold no bundle", func() (bool, error) {
		return eachRaylet(ctx, cp, r, func(_ *cpb.NodeInfo, c rpb.RayletClient) (bool, error) {
			held, err := c.ListBundles(ctx, &rpb.ListBundlesRequest{})
			return err == nil && len(held.Bundles) == 0, err
		})
	})
}

// waitAllFree waits until every raylet has all its CPUs free (its leases
// returned, its bundles released).
func waitAllFree(ctx context.Context, t *testing.T, cp *cpclient.Client, r *rayletConns) {
	t.Helper()
	waitUntil(ctx, t, "every raylet's CPUs to be free", func() (bool, error) {
		return eachRaylet(ctx, cp, r, func(_ *cpb.NodeInfo, c rpb.RayletClient) (bool, error) {
			st, err := c.GetStatus(ctx, &rpb.GetStatusRequest{})
			return err == nil && st.Available["CPU"] == st.Total["CPU"], err
		})
	})
}

// waitUntil polls cond until it holds, failing the test after a minute.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v)", what, last)
}
