package sim

import (
	"context"
	"fmt"
	"strings"
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
	NodeGrace   time.Duration
	Log         func(string)
}

// ActorBenchResult is what one many-actors run measured.
type ActorBenchResult struct {
	Nodes, Actors int
	// Registered: every CreateActor answered; AllAlive: every actor ALIVE
	// in the table, both from the first call.
	Registered, AllAlive time.Duration
	// PlacementRate is actors / AllAlive.
	PlacementRate float64
	LeaderCPU     float64 // cores, from the first call to all alive
	// LeaderRSSBefore/After: the leader's RSS with the nodes registered and
	// with every actor alive; the difference per actor is RSSPerActor.
	LeaderRSSBefore, LeaderRSSAfter int64
	RSSPerActor                     float64
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
	fmt.Fprintf(&b, "actors=%d nodes=%d registered=%s all_alive=%s placement=%.0f/s leader_cpu=%.0f%% leader_rss=%dMiB->%dMiB (%.0f B/actor) actor_table=%dKiB leases=%d refused=%d constructs=%d kills=%d",
		r.Actors, r.Nodes, r.Registered.Round(time.Millisecond), r.AllAlive.Round(time.Millisecond), r.PlacementRate, 100*r.LeaderCPU,
		r.LeaderRSSBefore>>20, r.LeaderRSSAfter>>20, r.RSSPerActor, r.TableBytes>>10,
		r.Counters.Leases, r.Counters.Refused, r.Counters.Constructs, r.Counters.Kills)
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
		Resources: map[string]float64{"CPU": float64(o.CPUs)}})
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
	t0 := time.Now()
	ids, err := CreateActors(ctx, cl, o.Actors, ActorSpec{JobID: job, Concurrency: o.Concurrency})
	if err != nil {
		return res, err
	}
	res.Registered = time.Since(t0)
	log(fmt.Sprintf("registered %d actors in %s", len(ids), res.Registered.Round(time.Millisecond)))
	at, err := WaitActorsAlive(ctx, cl, job, o.Actors, 100*time.Millisecond)
	if err != nil {
		return res, err
	}
	res.AllAlive = at.Sub(t0)
	res.PlacementRate = float64(o.Actors) / res.AllAlive.Seconds()
	res.LeaderCPU = (cpuSeconds(pid) - cpu0) / res.AllAlive.Seconds()
	res.LeaderRSSAfter = rssBytes(pid)
	res.RSSPerActor = float64(res.LeaderRSSAfter-res.LeaderRSSBefore) / float64(o.Actors)
	res.Counters = f.ActorCounters()
	if all, err := cl.ListActors(ctx, job, false); err == nil {
		res.TableBytes = proto.Size(&pb.ListActorsResponse{Actors: all})
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
	for i := 0; ; i++ {
		if _, err := cl.Put(ctx, "bench", fmt.Sprintf("actors-failover-%d", i), nil); err == nil {
			res.FailoverWrite = time.Since(killed)
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
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
