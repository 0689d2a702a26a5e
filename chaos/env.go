package chaos

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
	cpb "github.com/manta-ray/manta/proto/controlpb"
)

// DefaultOpTimeout bounds one workload operation with all its retries.
const DefaultOpTimeout = 10 * time.Second

// hangGrace is how far past its timeout an operation may return before it
// counts as a hang: the client's own deadline should end it well before.
const hangGrace = 5 * time.Second

// Env is the running cluster as workloads, faults and checkers see it,
// with the run's clock (offsets from its start) and its progress log.
type Env struct {
	Cluster   *launcher.Cluster
	Log       *zap.Logger
	OpTimeout time.Duration
	// Nodes is how many raylets should be running; the cluster is whole
	// only when they are, each registered alive.
	Nodes int
	// HomeNode is the raylet the harness's driver submits through, never
	// killed; NodeArgs are the extra arguments a raylet starts with.
	HomeNode string
	NodeArgs []string

	start    time.Time
	progress progress // every workload's successes
	mu       sync.Mutex
	byName   map[string]*progress // each workload's own
	procs    procTracker
	part     Partitioner
	shaper   *NetShaper // network faults, with netns hosts
	// ownerPIDs are recent workers that own objects the driver borrows
	// (the owner workload's), newest last: the kill-owner fault's targets.
	ownerPIDs []int
}

// maxOwnerPIDs bounds the owners remembered.
const maxOwnerPIDs = 64

// noteOwner remembers a worker that owns borrowed objects.
func (e *Env) noteOwner(pid int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if slices.Contains(e.ownerPIDs, pid) {
		return
	}
	if len(e.ownerPIDs) >= maxOwnerPIDs {
		e.ownerPIDs = e.ownerPIDs[1:]
	}
	e.ownerPIDs = append(e.ownerPIDs, pid)
}

// owners returns the remembered owners.
func (e *Env) owners() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ownerPIDs)
}

// NewEnv wraps a running cluster; the run's clock starts now.
func NewEnv(c *launcher.Cluster, log *zap.Logger) *Env {
	if log == nil {
		log = zap.NewNop()
	}
	e := &Env{Cluster: c, Log: log, OpTimeout: DefaultOpTimeout, start: time.Now(), part: noPartition{reason: "not set up"},
		byName: map[string]*progress{}}
	e.observeProcs()
	return e
}

// Since is t as an offset on the run's clock.
func (e *Env) Since(t time.Time) time.Duration { return t.Sub(e.start) }

// Now is the run's clock.
func (e *Env) Now() time.Duration { return time.Since(e.start) }

// Client returns a client over every head whose calls give up after
// OpTimeout; the caller closes it.
func (e *Env) Client() (*cpclient.Client, error) {
	return cpclient.New(cpclient.Config{Addresses: e.Cluster.Addresses(), Token: e.Cluster.Token(), Timeout: e.OpTimeout, TLS: e.Cluster.TLS(), Logger: e.Log})
}

// Succeeded records a successful operation of workload that was called
// at call and returned at ret; recovery times are measured from these.
func (e *Env) Succeeded(workload string, call, ret time.Time) {
	c, r := e.Since(call), e.Since(ret)
	e.progress.add(c, r)
	e.progressOf(workload).add(c, r)
}

// progressOf is one workload's progress log ("" is every workload's).
func (e *Env) progressOf(workload string) *progress {
	if workload == "" {
		return &e.progress
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.byName[workload]
	if p == nil {
		p = &progress{}
		e.byName[workload] = p
	}
	return p
}

// progress is every successful operation's call and return offsets.
type progress struct {
	mu  sync.Mutex
	ops [][2]time.Duration
}

func (p *progress) add(call, ret time.Duration) {
	p.mu.Lock()
	p.ops = append(p.ops, [2]time.Duration{call, ret})
	p.mu.Unlock()
}

// firstAfter is the earliest return of an operation called at or after t.
// Counting only calls made after t keeps a reply that was already on its
// way when the fault struck from passing for a recovery.
func (p *progress) firstAfter(t time.Duration) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	best, ok := time.Duration(0), false
	for _, op := range p.ops {
		if op[0] >= t && (!ok || op[1] < best) {
			best, ok = op[1], true
		}
	}
	return best, ok
}

func (p *progress) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ops)
}

// roles finds the leader and the running, unpaused followers.
func (e *Env) roles(ctx context.Context) (leader int, followers []int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	leader, _, err = e.Cluster.WaitLeader(ctx)
	if err != nil {
		return -1, nil, err
	}
	for i, h := range e.Cluster.Heads() {
		if i != leader && h.Running && !h.Paused {
			followers = append(followers, i)
		}
	}
	return leader, followers, nil
}

// waitHealthy polls until every head runs unpaused and every head names
// the same leader, which says it is the leader: the cluster is whole
// again, not merely available.
func (e *Env) waitHealthy(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	cl, err := cpclient.New(cpclient.Config{Addresses: e.Cluster.Addresses(), Token: e.Cluster.Token(), AttemptTimeout: time.Second, TLS: e.Cluster.TLS(), Logger: e.Log})
	if err != nil {
		return err
	}
	defer cl.Close()
	var last string
	err = poll(ctx, 100*time.Millisecond, func() bool {
		last = e.healthProblem(ctx, cl)
		return last == ""
	})
	if err != nil {
		return fmt.Errorf("cluster not whole within %v (last: %s)", within, last)
	}
	return nil
}

func (e *Env) healthProblem(ctx context.Context, cl *cpclient.Client) string {
	leader := ""
	leaderIsLeader := false
	for _, h := range e.Cluster.Heads() {
		if !h.Running || h.Paused {
			return h.ID + " is not running"
		}
		st, err := cl.StatusOf(ctx, h.Address)
		switch {
		case err != nil:
			return fmt.Sprintf("%s: %v", h.ID, err)
		case st.LeaderId == "":
			return h.ID + " has no leader"
		case leader != "" && st.LeaderId != leader:
			return fmt.Sprintf("%s sees leader %s, another sees %s", h.ID, st.LeaderId, leader)
		}
		leader = st.LeaderId
		if st.HeadId == leader && st.RaftState == "Leader" {
			leaderIsLeader = true
		}
	}
	if !leaderIsLeader {
		return "no head confirms it is the leader " + leader
	}
	return e.nodeProblem(ctx, cl)
}

// nodeProblem says which raylet that should run does not, or is not
// registered alive; "" when every one is.
func (e *Env) nodeProblem(ctx context.Context, cl *cpclient.Client) string {
	nodes := e.Cluster.Nodes()
	running := 0
	for _, n := range nodes {
		if n.Running {
			running++
		}
	}
	if running < e.Nodes {
		return fmt.Sprintf("%d of %d raylets running", running, e.Nodes)
	}
	if running == 0 {
		return ""
	}
	r, err := cl.ListNodes(ctx, &cpb.ListNodesRequest{AliveOnly: true, Stale: true})
	if err != nil {
		return "list nodes: " + err.Error()
	}
	alive := map[string]bool{}
	for _, n := range r.Nodes {
		alive[n.NodeId] = true
	}
	for _, n := range nodes {
		if n.Running && !alive[n.ID] {
			return n.ID + " is not registered alive"
		}
	}
	return ""
}

// poll calls cond every interval until it is true or ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// observeProcs notes every head, raylet and worker process now running
// for the leak check.
func (e *Env) observeProcs() {
	var heads, raylets []int
	for _, h := range e.Cluster.Heads() {
		if h.Running {
			heads = append(heads, h.PID)
		}
	}
	for _, n := range e.Cluster.Nodes() {
		if n.Running {
			raylets = append(raylets, n.PID)
		}
	}
	e.procs.observe(procHead, heads)
	e.procs.observe(procRaylet, raylets)
	e.procs.observe(procWorker, workerPIDs(raylets))
}

// Kinds of tracked processes.
const (
	procHead   = "head"
	procRaylet = "raylet"
	procWorker = "worker"
)

// procTracker remembers every process the run started (heads and
// raylets) or saw started for it (workers), by PID and kernel start time,
// so a PID reused by an unrelated process is not mistaken for a leak.
type procTracker struct {
	mu    sync.Mutex
	procs map[int]trackedProc
}

type trackedProc struct {
	kind  string
	start uint64 // clock ticks since boot
}

func (p *procTracker) observe(kind string, pids []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.procs == nil {
		p.procs = map[int]trackedProc{}
	}
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		st, _, ok := procStart(pid)
		if !ok {
			continue
		}
		if old, ok := p.procs[pid]; ok && old.start == st {
			continue
		}
		p.procs[pid] = trackedProc{kind: kind, start: st}
	}
}

// leaked returns the tracked processes that still exist, by kind, and how
// many of each were tracked. An unreaped head or raylet (the launcher's
// own child) is a leak; a worker zombie is not: its raylet is gone, and
// reaping an orphan is init's business (some container inits never do).
func (p *procTracker) leaked() (leaked map[string][]int, tracked map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	leaked, tracked = map[string][]int{}, map[string]int{}
	for pid, tp := range p.procs {
		tracked[tp.kind]++
		st, state, ok := procStart(pid)
		if !ok || st != tp.start || (tp.kind == procWorker && state == "Z") {
			continue
		}
		leaked[tp.kind] = append(leaked[tp.kind], pid)
	}
	for _, pids := range leaked {
		sort.Ints(pids)
	}
	return leaked, tracked
}

// procStat returns the fields of /proc/PID/stat from field 3 (state) on.
// The command name before them is in parentheses and may hold spaces.
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(s[i+1:]), true
}

// procStart reads a process's start time (field 22) and state.
func procStart(pid int) (start uint64, state string, ok bool) {
	f, ok := procStat(pid)
	if !ok || len(f) < 20 {
		return 0, "", false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return st, f[0], true
}
