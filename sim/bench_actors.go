package sim

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// ActorBenchOptions configures one many-actors run against a local
// cluster of head processes.
type ActorBenchOptions struct {
	Nodes  int // simulated nodes, each hosting actors
	Actors int
	// CPUs of each node (default: enough for the actors, +25%); every
	// actor takes 1 CPU.
	CPUs        int
	Concurrency int  // CreateActor calls in flight (default 64)
	Failover    bool // then SIGKILL the leader and check no actor restarts
	// Midway SIGKILLs the leader once half the actors are registered
	// (most still being placed), then registers the rest: the new leader
	// must finish every placement, each actor constructed once.
	Midway bool
	// StrayCheck runs the raylets' stray-actor check on the simulated
	// nodes this often (the raylet's 5s); 0: none.
	StrayCheck time.Duration
	NodeGrace  time.Duration
	Log        func(string)
}

// ActorBenchResult is what one many-actors run measured.
type ActorBenchResult struct {
	Nodes, Actors int
	// Registered: every CreateActor answered; AllAlive: every actor ALIVE
	// in the table, both from the first call.
	Registered, AllAlive time.Duration
	// CreateP50/P99 are the CreateActor calls' latencies; SimCPU is this
	// process's CPU (the simulated nodes and the creating client), in
	// cores, until all alive.
	CreateP50, CreateP99 time.Duration
	SimCPU               float64
	// PlacementRate is actors / AllAlive.
	PlacementRate float64
	LeaderCPU     float64 // cores, from the first call to all alive
	// LeaderRSSBefore/After: the leader's RSS with the nodes registered and
	// with every actor alive; the difference per actor is RSSPerActor.
	LeaderRSSBefore, LeaderRSSAfter int64
	RSSPerActor                     float64
	// MidwayWrite: with Midway, SIGKILL of the leader to the first
	// acknowledged write; Duplicates are actors with more than one live
	// worker once all are ALIVE.
	MidwayWrite time.Duration
	Duplicates  int
	// Elections is how far the Raft term moved from the first call to all
	// alive (0: one leader throughout; Midway's kill makes one).
	Elections uint64
	// SteadyLeaderCPU is the leader's CPU over 10s with every actor
	// alive (the raylets' stray checks ask about each actor every period).
	SteadyLeaderCPU float64
	// TableBytes is the encoded actor table (a whole ListActors answer).
	TableBytes int
	Counters   ActorCounters

	// Failover: SIGKILL of the leader to the first acknowledged write;
	// after the new leader's grace: restarts, constructors and kills the
	// failover caused, and actors not ALIVE where they were.
	FailoverWrite                           time.Duration
	FalseRestarts, ReConstructs, FalseKills int
	NotAliveAfter                           int
	DeadNodes                               int
}

func (r ActorBenchResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "actors=%d nodes=%d registered=%s all_alive=%s placement=%.0f/s leader_cpu=%.0f%% leader_rss=%dMiB->%dMiB (%.0f B/actor) actor_table=%dKiB leases=%d refused=%d constructs=%d kills=%d strays=%d",
		r.Actors, r.Nodes, r.Registered.Round(time.Millisecond), r.AllAlive.Round(time.Millisecond), r.PlacementRate, 100*r.LeaderCPU,
		r.LeaderRSSBefore>>20, r.LeaderRSSAfter>>20, r.RSSPerActor, r.TableBytes>>10,
		r.Counters.Leases, r.Counters.Refused, r.Counters.Constructs, r.Counters.Kills, r.Counters.Strays)
	fmt.Fprintf(&b, " elections=%d steady_leader_cpu=%.0f%% create_p50=%s create_p99=%s sim_cpu=%.0f%%", r.Elections, 100*r.SteadyLeaderCPU,
		r.CreateP50.Round(time.Millisecond), r.CreateP99.Round(time.Millisecond), 100*r.SimCPU)
	if r.MidwayWrite > 0 {
		fmt.Fprintf(&b, " midway_kill_first_write=%s duplicates=%d", r.MidwayWrite.Round(time.Millisecond), r.Duplicates)
	}
	if r.FailoverWrite > 0 {
		fmt.Fprintf(&b, "\n  failover: first_write=%s restarts=%d reconstructed=%d killed=%d not_alive=%d dead_nodes=%d",
			r.FailoverWrite.Round(time.Millisecond), r.FalseRestarts, r.ReConstructs, r.FalseKills, r.NotAliveAfter, r.DeadNodes)
	}
	return b.String()
}

// BenchActors places o.Actors actors on o.Nodes simulated nodes of the
// running cluster c.
func BenchActors(ctx context.Context, c *launcher.Cluster, o ActorBenchOptions) (ActorBenchResult, error) {
	if o.CPUs == 0 {
		o.CPUs = max(1, (o.Actors*5/4+o.Nodes-1)/o.Nodes)
	}
	if o.NodeGrace == 0 {
		o.NodeGrace = 5 * time.Second
	}
	log := o.Log
	if log == nil {
		log = func(string) {}
	}
	res := ActorBenchResult{Nodes: o.Nodes, Actors: o.Actors}
	f, err := Start(ctx, Options{Addresses: c.Addresses(), Token: c.Token(), Nodes: o.Nodes, Actors: true,
		Resources: map[string]float64{"CPU": float64(o.CPUs)}, StrayCheck: o.StrayCheck})
	if err != nil {
		return res, err
	}
	defer f.Close()
	cl, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), TLS: c.TLS(),
		AttemptTimeout: 5 * time.Second, Timeout: time.Minute})
	if err != nil {
		return res, err
	}
	defer cl.Close()
	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		return res, err
	}
	// Let the fleet's first heartbeats and views land before measuring.
	if _, err := f.WaitHeartbeatsSince(ctx, time.Now()); err != nil {
		return res, err
	}
	pid := c.Heads()[leader].PID
	res.LeaderRSSBefore = rssBytes(pid)
	cpu0 := cpuSeconds(pid)
	const job = "sim-actors"
	term0 := maxTerm(ctx, cl)
	var (
		latMu sync.Mutex
		lat   []time.Duration
	)
	took := func(d time.Duration) {
		latMu.Lock()
		lat = append(lat, d)
		latMu.Unlock()
	}
	sim0 := cpuSeconds(os.Getpid())
	t0 := time.Now()
	first := o.Actors
	if o.Midway {
		first = o.Actors / 2
	}
	ids, err := CreateActors(ctx, cl, first, ActorSpec{JobID: job, Concurrency: o.Concurrency, Took: took})
	if err != nil {
		return res, err
	}
	if o.Midway {
		killed := time.Now()
		if err := c.Kill(leader); err != nil {
			return res, err
		}
		if res.MidwayWrite, err = firstWrite(ctx, cl, killed); err != nil {
			return res, err
		}
		log(fmt.Sprintf("killed the leader with %d actors registered; first write after %s", first, res.MidwayWrite.Round(time.Millisecond)))
		if leader, _, err = c.WaitLeader(ctx); err != nil {
			return res, err
		}
		pid = c.Heads()[leader].PID
		rest, err := CreateActors(ctx, cl, o.Actors-first, ActorSpec{JobID: job, Concurrency: o.Concurrency, Took: took})
		if err != nil {
			return res, err
		}
		ids = append(ids, rest...)
	}
	res.Registered = time.Since(t0)
	log(fmt.Sprintf("registered %d actors in %s", len(ids), res.Registered.Round(time.Millisecond)))
	at, err := WaitActorsAlive(ctx, cl, job, o.Actors, 100*time.Millisecond)
	if err != nil {
		return res, err
	}
	res.AllAlive = at.Sub(t0)
	res.Elections = maxTerm(ctx, cl) - term0
	res.SimCPU = (cpuSeconds(os.Getpid()) - sim0) / res.AllAlive.Seconds()
	latMu.Lock()
	res.CreateP50, res.CreateP99 = quantiles(lat)
	latMu.Unlock()
	res.PlacementRate = float64(o.Actors) / res.AllAlive.Seconds()
	res.LeaderCPU = (cpuSeconds(pid) - cpu0) / res.AllAlive.Seconds()
	res.LeaderRSSAfter = rssBytes(pid)
	res.RSSPerActor = float64(res.LeaderRSSAfter-res.LeaderRSSBefore) / float64(o.Actors)
	res.Counters = f.ActorCounters()
	// Workers a dead leader left are the raylets' stray checks to end:
	// give them three periods.
	dups := func() int {
		n := 0
		for _, ws := range f.Hosting() {
			if len(ws) > 1 {
				n++
			}
		}
		return n
	}
	for end := time.Now().Add(3*o.StrayCheck + time.Second); dups() > 0 && time.Now().Before(end); {
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return res, err
		}
	}
	res.Duplicates = dups()
	res.Counters = f.ActorCounters()
	if all, err := cl.ListActors(ctx, job, false); err == nil {
		res.TableBytes = proto.Size(&pb.ListActorsResponse{Actors: all})
	}
	if !o.Midway {
		c0, t1 := cpuSeconds(pid), time.Now()
		if err := sleep(ctx, 10*time.Second); err != nil {
			return res, err
		}
		res.SteadyLeaderCPU = (cpuSeconds(pid) - c0) / time.Since(t1).Seconds()
	}
	before, err := f.Census(ctx, cl, job)
	if err != nil {
		return res, err
	}
	log(res.String())
	if !o.Failover {
		return res, nil
	}

	killed := time.Now()
	if err := c.Kill(leader); err != nil {
		return res, err
	}
	if res.FailoverWrite, err = firstWrite(ctx, cl, killed); err != nil {
		return res, err
	}
	// Wait out the new leader's grace, then until every node has
	// heartbeated past it: a node (and its actors) wrongly thought lost
	// would have been ruled on by then.
	judged := time.Now().Add(o.NodeGrace + time.Second)
	if err := sleep(ctx, time.Until(judged)); err != nil {
		return res, err
	}
	if _, err := f.WaitHeartbeatsSince(ctx, judged); err != nil {
		return res, err
	}
	after, err := f.Census(ctx, cl, job)
	if err != nil {
		return res, err
	}
	got := f.ActorCounters()
	res.FalseRestarts = after.Restarts - before.Restarts
	res.ReConstructs = int(got.Constructs - res.Counters.Constructs)
	res.FalseKills = int(got.Kills - res.Counters.Kills)
	res.NotAliveAfter = o.Actors - after.Alive + len(after.Misplaced)
	res.DeadNodes = len(f.DeclaredDead())
	return res, nil
}

// firstWrite puts keys until one is acknowledged and returns how long
// after since that was.
func firstWrite(ctx context.Context, cl *cpclient.Client, since time.Time) (time.Duration, error) {
	for i := 0; ; i++ {
		if _, err := cl.Put(ctx, "bench", fmt.Sprintf("actors-failover-%d-%d", since.UnixNano(), i), nil); err == nil {
			return time.Since(since), nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
}

// maxTerm is the highest Raft term a head reports.
func maxTerm(ctx context.Context, cl *cpclient.Client) uint64 {
	var t uint64
	for _, h := range cl.StatusAll(ctx) {
		t = max(t, h.Status.GetTerm())
	}
	return t
}
