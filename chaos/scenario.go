package chaos

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Scenario is a named fault schedule: which faults the nemesis draws from
// and in what order. Its timing comes from the faults and the seed.
type Scenario struct {
	Name    string
	Summary string
	// Faults names the faults drawn from (see faultByName).
	Faults []string
	// Cycle draws every fault once per round in a seeded order, so a
	// mixed run covers each kind; otherwise each step draws at random.
	Cycle bool
	// Needs names what the harness lacks to run this scenario; such a
	// scenario is listed but refuses to run.
	Needs string
	// DefaultNodes is the number of raylets when Options.Nodes is 0.
	DefaultNodes int
}

// Scenarios are the scenarios `manta chaos list` shows, in that order.
var Scenarios = []Scenario{
	{Name: "leader-kill", Summary: "SIGKILL the leader head, restart it, repeat", Faults: []string{faultKillLeader}},
	{Name: "follower-kill", Summary: "SIGKILL a follower head, restart it, repeat", Faults: []string{faultKillFollower}},
	{Name: "leader-pause", Summary: "SIGSTOP the leader for longer than the election timeout, SIGCONT, repeat", Faults: []string{faultPauseLeader}},
	{Name: "partition-minority", Summary: "cut one head (the leader or a follower) off from the others, heal, repeat", Faults: []string{faultPartitionOne}},
	{Name: "rolling-restart", Summary: "SIGTERM and restart each head in turn, waiting for the cluster to heal between them", Faults: []string{faultRestartNext}},
	{Name: "raylet-kill", Summary: "SIGKILL a raylet (never the driver's), start a new one in its place, repeat; tasks run on 2 nodes by default",
		Faults: []string{faultKillRaylet}, DefaultNodes: 2},
	{Name: "worker-kill", Summary: "SIGKILL a worker process of any raylet, repeat; tasks run on 2 nodes by default",
		Faults: []string{faultKillWorker}, DefaultNodes: 2},
	{Name: "owner-kill", Summary: "SIGKILL a worker that owns objects the driver borrows (the owner workload's), repeat; the borrowed objects must stay readable; 2 nodes by default",
		Faults: []string{faultKillOwner}, DefaultNodes: 2},
	{Name: "slow-leader", Summary: "[--hosts netns] add 50ms±20ms each way on every link of the leader's host, heal, repeat",
		Faults: []string{faultSlowLeader}},
	{Name: "lossy-links", Summary: "[--hosts netns] drop 1-10% of packets on 1-3 links between hosts (and limit a raylet's host to 20 Mbit/s), heal, repeat; 2 nodes by default",
		Faults: []string{faultLossyLinks}, DefaultNodes: 2},
	{Name: "asymmetric-partition", Summary: "[--hosts netns] cut one direction only between a head (the leader or a follower) and the others, heal, repeat",
		Faults: []string{faultAsymCut}},
	{Name: "mixed", Summary: "every fault above, in a seeded order (worker faults with --nodes 1 or more, raylet faults with 2 or more, network faults with --hosts netns)",
		Faults: []string{faultKillLeader, faultKillFollower, faultPauseLeader, faultPartitionOne, faultRestartNext, faultKillRaylet, faultKillWorker,
			faultKillOwner, faultSlowLeader, faultLossyLinks, faultAsymCut}, Cycle: true},
}

// ScenarioNames lists every scenario's name.
func ScenarioNames() []string {
	out := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		out[i] = s.Name
	}
	return out
}

// LookupScenario finds a scenario by name; the error lists the valid ones.
func LookupScenario(name string) (Scenario, error) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("%w %q; valid scenarios: %s", ErrUnknownScenario, name, strings.Join(ScenarioNames(), ", "))
}

// step is one planned fault: the healthy time before it, how long it
// lasts, and the draw that picks its target.
type step struct {
	Fault string
	Gap   time.Duration
	Hold  time.Duration
	Pick  uint64
}

// gap bounds the healthy time between faults: long enough for clients to
// settle on the new leader, short enough for several faults a minute.
var gapRange = [2]time.Duration{time.Second, 3 * time.Second}

// planner draws steps from the seed. faults excludes those unsupported
// here (a partition without a mechanism), so the same seed gives the same
// schedule wherever the same faults are available.
type planner struct {
	sc     Scenario
	faults []string
	rng    *rand.Rand
	round  []string
}

func newPlanner(sc Scenario, faults []string, seed uint64) *planner {
	return &planner{sc: sc, faults: faults, rng: rand.New(rand.NewPCG(seed, 0x6d616e7461))}
}

func (p *planner) next() step {
	var name string
	if p.sc.Cycle {
		if len(p.round) == 0 {
			p.round = append([]string(nil), p.faults...)
			p.rng.Shuffle(len(p.round), func(i, j int) { p.round[i], p.round[j] = p.round[j], p.round[i] })
		}
		name, p.round = p.round[0], p.round[1:]
	} else {
		name = p.faults[p.rng.IntN(len(p.faults))]
	}
	hold := holdRanges[name]
	return step{
		Fault: name,
		Gap:   between(p.rng, gapRange),
		Hold:  between(p.rng, hold),
		Pick:  p.rng.Uint64(),
	}
}

func between(rng *rand.Rand, r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	// Whole milliseconds keep the schedule readable in the report.
	return r[0] + time.Duration(rng.Int64N(int64((r[1]-r[0])/time.Millisecond)))*time.Millisecond
}
