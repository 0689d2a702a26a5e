package chaos

import (
	"context"
	"fmt"
	"time"
)

// A Fault is one kind of failure the nemesis injects: head faults here,
// raylet and worker faults in nodefault.go.
type Fault interface {
	Name() string
	// Unsupported says why the fault cannot run on a cluster of heads
	// heads and nodes raylets with partitioner part, or "".
	Unsupported(heads, nodes int, part Partitioner) string
	// Inject starts the fault; pick is the seeded draw that chooses its
	// target among the candidates.
	Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error)
}

// Injection is a fault in progress.
type Injection struct {
	Target string // head or node ID
	Role   string // leader, follower, raylet or worker, when the fault struck
	PID    int
	Action string    // what was done
	At     time.Time // when it was done
	// Recover undoes the fault: restarts, resumes or heals.
	Recover func(ctx context.Context) error
}

// Fault names.
const (
	faultKillLeader   = "kill-leader"
	faultKillFollower = "kill-follower"
	faultPauseLeader  = "pause-leader"
	faultPartitionOne = "partition-one"
	faultRestartNext  = "restart-next"
	faultKillRaylet   = "kill-raylet"
	faultKillWorker   = "kill-worker"
	faultKillOwner    = "kill-owner"
)

// measuredBy names the workload whose next successful operation ends a
// fault's recovery: the one whose path the fault cuts. Head faults stop
// the control plane, which KV operations need and tasks do not (a task
// would "recover" at once); raylet and worker faults do not touch the KV
// path.
var measuredBy = map[string]string{
	faultKillLeader:   "kv",
	faultKillFollower: "kv",
	faultPauseLeader:  "kv",
	faultPartitionOne: "kv",
	faultRestartNext:  "kv",
	faultKillRaylet:   "tasks",
	faultKillWorker:   "tasks",
	faultKillOwner:    "owners",
	faultSlowLeader:   "kv",
	faultLossyLinks:   "kv",
	faultAsymCut:      "kv",
}

// holdRanges bound how long each fault lasts before it is undone.
var holdRanges = map[string][2]time.Duration{
	faultKillLeader:   {500 * time.Millisecond, 2 * time.Second},
	faultKillFollower: {500 * time.Millisecond, 2 * time.Second},
	// Well past the 500ms election timeout, and sometimes past a client's
	// 3s attempt timeout too.
	faultPauseLeader:  {1500 * time.Millisecond, 4 * time.Second},
	faultPartitionOne: {2 * time.Second, 5 * time.Second},
	faultRestartNext:  {200 * time.Millisecond, time.Second},
	// A raylet down for up to 3s; the node timeout (5s) may or may not
	// have marked it dead when its replacement registers.
	faultKillRaylet: {500 * time.Millisecond, 3 * time.Second},
	// Nothing to undo: the raylet starts workers as leases need them.
	faultKillWorker: {200 * time.Millisecond, time.Second},
	faultKillOwner:  {200 * time.Millisecond, time.Second},
	// Long enough for many heartbeats and leases over the slow links.
	faultSlowLeader: {3 * time.Second, 8 * time.Second},
	faultLossyLinks: {3 * time.Second, 6 * time.Second},
	faultAsymCut:    {2 * time.Second, 5 * time.Second},
}

// newFaults returns a fresh set of faults (restart-next keeps its place).
func newFaults() map[string]Fault {
	return map[string]Fault{
		faultKillLeader:   headKill{leader: true},
		faultKillFollower: headKill{leader: false},
		faultPauseLeader:  headPause{},
		faultPartitionOne: headPartition{},
		faultRestartNext:  &headRestart{},
		faultKillRaylet:   rayletKill{},
		faultKillWorker:   workerKill{},
		faultKillOwner:    ownerKill{},
		faultSlowLeader:   slowLeader{},
		faultLossyLinks:   lossyLinks{},
		faultAsymCut:      asymCut{},
	}
}

// target picks the leader or, by pick, one of the followers.
func target(ctx context.Context, env *Env, leader bool, pick uint64) (int, string, error) {
	l, followers, err := env.roles(ctx)
	if err != nil {
		return -1, "", err
	}
	if leader {
		return l, "leader", nil
	}
	if len(followers) == 0 {
		return -1, "", fmt.Errorf("no running follower")
	}
	return followers[pick%uint64(len(followers))], "follower", nil
}

// restart starts head i again and notes its new PID.
func restart(env *Env, i int) error {
	if err := env.Cluster.Restart(i); err != nil {
		return err
	}
	env.observeProcs()
	return nil
}

// headKill SIGKILLs the leader or a follower, then restarts it.
type headKill struct{ leader bool }

func (f headKill) Name() string {
	if f.leader {
		return faultKillLeader
	}
	return faultKillFollower
}

func (f headKill) Unsupported(heads, _ int, _ Partitioner) string {
	if heads < 3 {
		return "needs at least 3 heads to keep a quorum"
	}
	return ""
}

func (f headKill) Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error) {
	i, role, err := target(ctx, env, f.leader, pick)
	if err != nil {
		return nil, err
	}
	h := env.Cluster.Heads()[i]
	at := time.Now()
	if err := env.Cluster.Kill(i); err != nil {
		return nil, err
	}
	return &Injection{Target: h.ID, Role: role, PID: h.PID, Action: "SIGKILL", At: at,
		Recover: func(context.Context) error { return restart(env, i) }}, nil
}

// headPause SIGSTOPs the leader and SIGCONTs it after the hold.
type headPause struct{}

func (headPause) Name() string { return faultPauseLeader }

func (headPause) Unsupported(heads, _ int, _ Partitioner) string {
	if heads < 3 {
		return "needs at least 3 heads to keep a quorum"
	}
	return ""
}

func (headPause) Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error) {
	i, role, err := target(ctx, env, true, pick)
	if err != nil {
		return nil, err
	}
	h := env.Cluster.Heads()[i]
	at := time.Now()
	if err := env.Cluster.Pause(i); err != nil {
		return nil, err
	}
	return &Injection{Target: h.ID, Role: role, PID: h.PID, Action: "SIGSTOP", At: at,
		Recover: func(context.Context) error { return env.Cluster.Resume(i) }}, nil
}

// headPartition cuts the leader or a follower (even picks the leader) off
// from the other heads, then heals.
type headPartition struct{}

func (headPartition) Name() string { return faultPartitionOne }

func (headPartition) Unsupported(heads, _ int, part Partitioner) string {
	if heads < 3 {
		return "needs at least 3 heads to keep a quorum"
	}
	return part.Unsupported()
}

func (headPartition) Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error) {
	i, role, err := target(ctx, env, pick%2 == 0, pick/2)
	if err != nil {
		return nil, err
	}
	heads := env.Cluster.Heads()
	heal, err := env.part.Isolate(heads, i)
	if err != nil {
		return nil, err
	}
	// The cut is whole only once Isolate returns.
	at := time.Now()
	return &Injection{Target: heads[i].ID, Role: role, PID: heads[i].PID, Action: "cut off by " + env.part.Mechanism(), At: at,
		Recover: func(context.Context) error { return heal() }}, nil
}

// headRestart stops each head in turn with SIGTERM (a graceful restart,
// as in an upgrade) and starts it again.
type headRestart struct{ next int }

func (*headRestart) Name() string { return faultRestartNext }

func (*headRestart) Unsupported(heads, _ int, _ Partitioner) string {
	if heads < 3 {
		return "needs at least 3 heads to keep a quorum"
	}
	return ""
}

func (f *headRestart) Inject(ctx context.Context, env *Env, _ uint64) (*Injection, error) {
	heads := env.Cluster.Heads()
	i := f.next % len(heads)
	f.next++
	role := "follower"
	if l, _, err := env.roles(ctx); err == nil && l == i {
		role = "leader"
	}
	at := time.Now()
	if err := env.Cluster.Stop(i); err != nil {
		return nil, err
	}
	return &Injection{Target: heads[i].ID, Role: role, PID: heads[i].PID, Action: "SIGTERM", At: at,
		Recover: func(context.Context) error { return restart(env, i) }}, nil
}
