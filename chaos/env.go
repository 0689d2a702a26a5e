package chaos

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
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

	start    time.Time
	progress progress
	procs    procTracker
	part     Partitioner
}

// NewEnv wraps a running cluster; the run's clock starts now.
func NewEnv(c *launcher.Cluster, log *zap.Logger) *Env {
	if log == nil {
		log = zap.NewNop()
	}
	e := &Env{Cluster: c, Log: log, OpTimeout: DefaultOpTimeout, start: time.Now(), part: noPartition{reason: "not set up"}}
	e.procs.observe(c.Heads())
	return e
}

// Since is t as an offset on the run's clock.
func (e *Env) Since(t time.Time) time.Duration { return t.Sub(e.start) }

// Now is the run's clock.
func (e *Env) Now() time.Duration { return time.Since(e.start) }

// Client returns a client over every head whose calls give up after
// OpTimeout; the caller closes it.
func (e *Env) Client() (*cpclient.Client, error) {
	return cpclient.New(cpclient.Config{Addresses: e.Cluster.Addresses(), Token: e.Cluster.Token(), Timeout: e.OpTimeout, Logger: e.Log})
}

// Succeeded records a successful operation that was called at call and
// returned at ret; recovery times are measured from these.
func (e *Env) Succeeded(call, ret time.Time) { e.progress.add(e.Since(call), e.Since(ret)) }

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
	cl, err := cpclient.New(cpclient.Config{Addresses: e.Cluster.Addresses(), Token: e.Cluster.Token(), AttemptTimeout: time.Second, Logger: e.Log})
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

// procTracker remembers every head process the run started, by PID and
// kernel start time, so a PID reused by an unrelated process is not
// mistaken for a leak.
type procTracker struct {
	mu    sync.Mutex
	procs map[int]uint64 // pid -> start time in clock ticks since boot
}

func (p *procTracker) observe(heads []launcher.HeadProc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.procs == nil {
		p.procs = map[int]uint64{}
	}
	for _, h := range heads {
		if h.PID <= 0 {
			continue
		}
		if _, ok := p.procs[h.PID]; ok {
			continue
		}
		if st, _, ok := procStart(h.PID); ok {
			p.procs[h.PID] = st
		}
	}
}

// leaked returns the tracked processes that still exist (zombies count:
// an unreaped child is a leak too).
func (p *procTracker) leaked() (leaked []int, tracked int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid, start := range p.procs {
		if st, _, ok := procStart(pid); ok && st == start {
			leaked = append(leaked, pid)
		}
	}
	return leaked, len(p.procs)
}

// procStart reads a process's start time and state from /proc.
func procStart(pid int) (start uint64, state string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", false
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return 0, "", false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return st, f[0], true
}
