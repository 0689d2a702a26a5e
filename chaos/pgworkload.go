package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/internal/auth"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// pgNode is the placement-group workload's task: where it ran.
var pgNode = ray.Func0("manta.chaos.pgNode", func(ctx context.Context) (string, error) {
	info, err := ray.RuntimeContext(ctx)
	return info.NodeID, err
})

// PlacementGroupWorkload creates a placement group (two small bundles,
// each strategy in turn), waits for it, runs a task in it, and removes
// it, in a closed loop per client. Its checks:
//   - a task in a group ran on a node that held one of the group's
//     bundles (before or after it ran: a node fault may move them);
//   - nothing leaks: once the run is over and its groups are removed,
//     every raylet holds exactly the bundles the group table places on
//     it, so every reserved resource came back.
type PlacementGroupWorkload struct {
	Clients   int           // default 1
	OpTimeout time.Duration // default DefaultTaskOpTimeout

	opLog
	violations []string
	mine       map[string]bool // every group this workload created
}

// NewPlacementGroupWorkload returns a placement-group workload with its
// defaults.
func NewPlacementGroupWorkload() *PlacementGroupWorkload {
	return &PlacementGroupWorkload{Clients: 1, OpTimeout: DefaultTaskOpTimeout, mine: map[string]bool{}}
}

// Name is "placement-groups".
func (w *PlacementGroupWorkload) Name() string { return "placement-groups" }

// Run starts the clients and waits for them.
func (w *PlacementGroupWorkload) Run(ctx context.Context, env *Env) error {
	runClients(w.Clients, func(id int) { w.client(ctx, env, id) })
	return nil
}

var pgStrategies = []ray.PlacementStrategy{ray.Pack, ray.SpreadPG, ray.StrictPack, ray.StrictSpread}

func (w *PlacementGroupWorkload) client(ctx context.Context, env *Env, id int) {
	for i := 0; ctx.Err() == nil; i++ {
		call := time.Now()
		err := w.once(ctx, pgStrategies[(i+id)%len(pgStrategies)])
		ret := time.Now()
		if err != nil && ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		w.stats.Attempted++
		w.stats.MaxLatency = max(w.stats.MaxLatency, ret.Sub(call))
		desc := fmt.Sprintf("client %d at %.2fs", id, env.Since(call).Seconds())
		if err != nil {
			o := outcomeOther
			if errors.Is(err, context.DeadlineExceeded) {
				o = outcomeTimeout
			}
			w.failedLocked(o, desc+": "+err.Error())
			w.mu.Unlock()
			continue
		}
		w.stats.OK++
		w.mu.Unlock()
		env.Succeeded(w.Name(), call, ret)
	}
}

// once is one operation: create, ready, a task in the group, remove. The
// group is removed however the rest went.
func (w *PlacementGroupWorkload) once(ctx context.Context, s ray.PlacementStrategy) error {
	opCtx, cancel := context.WithTimeout(ctx, w.OpTimeout)
	defer cancel()
	pg, err := ray.NewPlacementGroup(opCtx, []ray.Bundle{{"CPU": 0.1}, {"CPU": 0.1}}, s)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.mine[pg.ID()] = true
	w.mu.Unlock()
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), w.OpTimeout)
		_ = pg.Remove(rctx) // Check removes what is left
		rcancel()
	}()
	if err := pg.Ready(opCtx); err != nil {
		return err
	}
	before, err := pg.Info(opCtx)
	if err != nil {
		return err
	}
	node, err := ray.Get(opCtx, pgNode.Remote(opCtx, ray.InPlacementGroup(pg, -1), ray.NumCPUs(0.1)))
	if err != nil {
		return err
	}
	after, err := pg.Info(opCtx)
	if err != nil {
		return err
	}
	if !slices.Contains(before.BundleNodes, node) && !slices.Contains(after.BundleNodes, node) {
		w.mu.Lock()
		if len(w.violations) < 20 {
			w.violations = append(w.violations, fmt.Sprintf("a task in group %s ran on %s; its bundles were on %v, then %v",
				pg.ID(), node, before.BundleNodes, after.BundleNodes))
		}
		w.mu.Unlock()
	}
	return nil
}

// bundleLeakWait bounds how long the leak check waits for raylets to match the
// group table (the leader audits every second).
const bundleLeakWait = 30 * time.Second

// Check judges the placements and looks for leaked reservations.
func (w *PlacementGroupWorkload) Check(ctx context.Context, env *Env, _ CheckOptions) []CheckResult {
	w.mu.Lock()
	violations := append([]string(nil), w.violations...)
	ok := w.stats.OK
	var mine []string
	for id := range w.mine {
		mine = append(mine, id)
	}
	w.mu.Unlock()
	sort.Strings(mine)
	placed := CheckResult{Name: "placement-group-tasks-in-bundles", Verdict: Pass,
		Detail: fmt.Sprintf("%d groups created, used and removed", ok)}
	switch {
	case len(violations) > 0:
		placed.Verdict, placed.Detail = Fail, strings.Join(violations, "; ")
	case ok == 0:
		placed.Verdict, placed.Detail = Fail, "no placement group operation succeeded"
	}
	return []CheckResult{placed, w.checkLeaks(ctx, env, mine)}
}

// checkLeaks removes the workload's groups a fault kept it from removing,
// then waits until every alive raylet holds exactly what the group table
// places on it.
func (w *PlacementGroupWorkload) checkLeaks(ctx context.Context, env *Env, mine []string) CheckResult {
	res := CheckResult{Name: "placement-group-no-leaks"}
	cl, err := env.Client()
	if err != nil {
		res.Verdict, res.Detail = Unknown, err.Error()
		return res
	}
	// A create cut short by the end of the run may have taken effect
	// unseen: every live group of the harness's job goes too.
	if info, err := ray.RuntimeContext(ctx); err == nil {
		if groups, err := cl.ListPlacementGroups(ctx, false); err == nil {
			for _, g := range groups {
				if g.JobId == info.JobID && g.State != cpb.PlacementGroupState_PG_REMOVED && !slices.Contains(mine, g.PlacementGroupId) {
					mine = append(mine, g.PlacementGroupId)
				}
			}
		}
	}
	for _, id := range mine {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = cl.RemovePlacementGroup(rctx, id)
		cancel()
	}
	conns := map[string]*grpc.ClientConn{}
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	token := env.Cluster.Token()
	var problem string
	wctx, cancel := context.WithTimeout(ctx, bundleLeakWait)
	defer cancel()
	err = poll(wctx, 200*time.Millisecond, func() bool {
		problem = bundleProblem(wctx, cl, func(addr string) (rpb.RayletClient, error) {
			if cc := conns[addr]; cc != nil {
				return rpb.NewRayletClient(cc), nil
			}
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
			if err != nil {
				return nil, err
			}
			conns[addr] = cc
			return rpb.NewRayletClient(cc), nil
		})
		return problem == ""
	})
	if err != nil {
		res.Verdict, res.Detail = Fail, fmt.Sprintf("after %v: %s", bundleLeakWait, problem)
		return res
	}
	res.Verdict, res.Detail = Pass, fmt.Sprintf("%d groups removed; every raylet's bundles match the group table", len(mine))
	return res
}

// bundleProblem says how the raylets' bundles differ from the group table
// ("" when they do not).
func bundleProblem(ctx context.Context, cl interface {
	ListPlacementGroups(context.Context, bool) ([]*cpb.PlacementGroupInfo, error)
	ListNodes(context.Context, *cpb.ListNodesRequest) (*cpb.ListNodesResponse, error)
}, raylet func(addr string) (rpb.RayletClient, error)) string {
	groups, err := cl.ListPlacementGroups(ctx, false)
	if err != nil {
		return "list placement groups: " + err.Error()
	}
	want := map[string]bool{} // node/pg/index
	for _, g := range groups {
		if g.State != cpb.PlacementGroupState_PG_CREATED && g.State != cpb.PlacementGroupState_PG_RESCHEDULING {
			continue
		}
		for i, b := range g.Bundles {
			if b.NodeId != "" {
				want[fmt.Sprintf("%s/%s/%d", b.NodeId, g.PlacementGroupId, i)] = true
			}
		}
	}
	nodes, err := cl.ListNodes(ctx, &cpb.ListNodesRequest{AliveOnly: true})
	if err != nil {
		return "list nodes: " + err.Error()
	}
	var mu sync.Mutex
	var bad []string
	for _, n := range nodes.Nodes {
		rc, err := raylet(n.Address)
		if err != nil {
			return err.Error()
		}
		held, err := rc.ListBundles(ctx, &rpb.ListBundlesRequest{})
		if err != nil {
			return fmt.Sprintf("list the bundles of %s: %v", n.NodeId, err)
		}
		for _, b := range held.Bundles {
			k := fmt.Sprintf("%s/%s/%d", n.NodeId, b.PlacementGroupId, b.Index)
			if !want[k] {
				mu.Lock()
				bad = append(bad, k+" held but not placed there")
				mu.Unlock()
			}
			delete(want, k)
		}
	}
	for k := range want {
		bad = append(bad, k+" placed but not held")
	}
	sort.Strings(bad)
	return firstFew(bad, 5)
}
