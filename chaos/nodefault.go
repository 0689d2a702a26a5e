package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// rayletKill SIGKILLs a raylet (its workers die with it: Pdeathsig) and,
// after the hold, starts a raylet in its place. The replacement registers
// as a new node (node-N+1): a raylet that returns must, once the control
// plane has marked its old ID dead, and a fresh start has none of the old
// one's workers or objects anyway. The raylet the harness's driver
// submits through (HomeNode) is never killed: a driver dies with its
// raylet, in Ray as here.
type rayletKill struct{}

func (rayletKill) Name() string { return faultKillRaylet }

func (rayletKill) Unsupported(_, nodes int, _ Partitioner) string {
	if nodes < 2 {
		return fmt.Sprintf("needs at least 2 nodes (--nodes %d): node-1 serves the harness's driver and is never killed", nodes)
	}
	return ""
}

func (rayletKill) Inject(_ context.Context, env *Env, pick uint64) (*Injection, error) {
	var cands []int
	nodes := env.Cluster.Nodes()
	for i, n := range nodes {
		if n.Running && n.ID != env.HomeNode {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return nil, errors.New("no running raylet other than the driver's")
	}
	i := cands[pick%uint64(len(cands))]
	n := nodes[i]
	env.observeProcs() // its workers, which die with it
	workers := len(workerPIDs([]int{n.PID}))
	at := time.Now()
	if err := env.Cluster.KillNode(i); err != nil {
		return nil, err
	}
	return &Injection{Target: n.ID, Role: "raylet", PID: n.PID, Action: fmt.Sprintf("SIGKILL (with %d workers)", workers), At: at,
		Recover: func(ctx context.Context) error {
			j, err := env.Cluster.AddNode(ctx, env.NodeArgs...)
			env.observeProcs()
			if err != nil {
				return fmt.Errorf("start a raylet in place of %s: %w", n.ID, err)
			}
			env.Log.Info("raylet replaced", zap.String("killed", n.ID), zap.String("new", env.Cluster.Nodes()[j].ID))
			return nil
		}}, nil
}

// workerKill SIGKILLs one worker process of any raylet. There is nothing
// to undo: its raylet starts another when a lease needs one, and the
// owner retries the task it was running.
type workerKill struct{}

func (workerKill) Name() string { return faultKillWorker }

func (workerKill) Unsupported(_, nodes int, _ Partitioner) string {
	if nodes < 1 {
		return "needs at least 1 node (--nodes 0)"
	}
	return ""
}

// workerWait bounds the wait for a worker to exist (the workload keeps
// some busy; right after a raylet restart there may be none yet).
const workerWait = 5 * time.Second

func (workerKill) Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error) {
	return killWorker(ctx, env, pick, "worker", func(live []int) []int { return live })
}

// killWorker SIGKILLs one of the live worker processes that among picks
// from the raylets' workers (waiting up to workerWait for one); role
// names the target in the report.
func killWorker(ctx context.Context, env *Env, pick uint64, role string, among func(live []int) []int) (*Injection, error) {
	var pids []int
	node := map[int]string{} // raylet PID -> node ID
	wctx, cancel := context.WithTimeout(ctx, workerWait)
	defer cancel()
	err := poll(wctx, 50*time.Millisecond, func() bool {
		var raylets []int
		for _, n := range env.Cluster.Nodes() {
			if n.Running {
				raylets = append(raylets, n.PID)
				node[n.PID] = n.ID
			}
		}
		pids = among(workerPIDs(raylets))
		return len(pids) > 0
	})
	if err != nil {
		return nil, fmt.Errorf("no %s process within %v", role, workerWait)
	}
	env.observeProcs()
	pid := pids[pick%uint64(len(pids))]
	ppid, _, _ := procParent(pid)
	at := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("kill %s %d: %w", role, pid, err)
	}
	return &Injection{Target: node[ppid], Role: role, PID: pid, Action: "SIGKILL", At: at,
		Recover: func(context.Context) error { return nil }}, nil
}

// ownerKill SIGKILLs a worker that owns objects the harness's driver
// borrows: one the owner workload noted, still alive.
type ownerKill struct{}

func (ownerKill) Name() string { return faultKillOwner }

func (ownerKill) Unsupported(_, nodes int, _ Partitioner) string {
	if nodes < 1 {
		return "needs at least 1 node (--nodes 0)"
	}
	return ""
}

func (ownerKill) Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error) {
	return killWorker(ctx, env, pick, "owner", func(live []int) []int {
		var out []int
		for _, p := range env.owners() {
			if slices.Contains(live, p) {
				out = append(out, p)
			}
		}
		return out
	})
}
