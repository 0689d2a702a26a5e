package sim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// BenchOptions configures one scale run against a local cluster of head
// processes.
type BenchOptions struct {
	Nodes             int
	Warmup            time.Duration // default 3s + 10ms a node
	Window            time.Duration // measured steady state; default 10s
	HeartbeatInterval time.Duration // default the raylet's 500ms
	ViewInterval      time.Duration // default the raylet's 100ms; negative: none
	FullViews         bool          // whole-list view refreshes (the old way)
	// Flood adds one node heartbeating 1,000/s for a second window.
	Flood bool
	// Failover kills the leader after the window and measures recovery.
	Failover bool
	// NodeGrace is the heads' grace after a leader change (their default
	// is NodeTimeout, 5s); the run waits it out to see whether any node
	// is declared dead.
	NodeGrace time.Duration
	Log       func(string)
}

// BenchResult is what one scale run measured.
type BenchResult struct {
	Nodes       int
	Steady      Stats
	LeaderCPU   float64 // cores, averaged over the window
	LeaderRSS   int64   // bytes at the end of the window
	FollowerCPU float64 // the busiest follower, cores
	// SimCPU is this process's CPU over the window (the simulated nodes'
	// clients, in cores); LoadAvg is the machine's 1-minute load average
	// at the end of the window (this runs on shared machines).
	SimCPU  float64
	LoadAvg string
	// WriteP50/P99: KV puts (one Raft write each) issued every 20ms during
	// the window: the control plane's write latency under this load.
	WriteP50, WriteP99 time.Duration
	RegisterAll        time.Duration // registering every node, 64 at a time
	// NodeTableBytes is the encoded size of the replicated node table
	// (what a snapshot and a whole-list answer carry for the nodes).
	NodeTableBytes int

	Flooded *Stats // the window with a flooding node, if run

	// Failover: from SIGKILL of the leader to the first acknowledged write,
	// and to every node having a heartbeat acknowledged again.
	FailoverWrite      time.Duration
	FailoverHeartbeats time.Duration
	DeadAfterFailover  int
}

func (r BenchResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scale nodes=%d node_table=%dKiB leader_cpu=%.0f%% leader_rss=%dMiB follower_cpu=%.0f%% sim_cpu=%.0f%% load=%s register_all=%s write_p50=%s write_p99=%s\n  steady: %s",
		r.Nodes, r.NodeTableBytes>>10, 100*r.LeaderCPU, r.LeaderRSS>>20, 100*r.FollowerCPU, 100*r.SimCPU, r.LoadAvg, r.RegisterAll.Round(time.Millisecond), rd(r.WriteP50), rd(r.WriteP99), r.Steady)
	if r.Flooded != nil {
		fmt.Fprintf(&b, "\n  flooded: %s", *r.Flooded)
	}
	if r.FailoverWrite > 0 {
		fmt.Fprintf(&b, "\n  failover: first_write=%s all_heartbeating=%s declared_dead=%d",
			r.FailoverWrite.Round(time.Millisecond), r.FailoverHeartbeats.Round(time.Millisecond), r.DeadAfterFailover)
	}
	return b.String()
}

func rd(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// Bench runs a fleet of o.Nodes against the running cluster c.
func Bench(ctx context.Context, c *launcher.Cluster, o BenchOptions) (BenchResult, error) {
	if o.Warmup == 0 {
		// Every node's first whole view list comes at 100 a second at
		// most (the leader's limit): wait them out before measuring.
		o.Warmup = 3*time.Second + time.Duration(o.Nodes)*10*time.Millisecond
	}
	if o.Window == 0 {
		o.Window = 10 * time.Second
	}
	if o.NodeGrace == 0 {
		o.NodeGrace = 5 * time.Second
	}
	log := o.Log
	if log == nil {
		log = func(string) {}
	}
	res := BenchResult{Nodes: o.Nodes}
	t0 := time.Now()
	f, err := Start(ctx, Options{Addresses: c.Addresses(), Token: c.Token(), TLS: c.TLS(), Nodes: o.Nodes,
		HeartbeatInterval: o.HeartbeatInterval, ViewInterval: o.ViewInterval, FullViews: o.FullViews})
	if err != nil {
		return res, err
	}
	defer f.Close()
	res.RegisterAll = time.Since(t0)
	log(fmt.Sprintf("registered %d nodes in %s", o.Nodes, res.RegisterAll.Round(time.Millisecond)))

	probe, err := cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), TLS: c.TLS(), AttemptTimeout: 500 * time.Millisecond, Timeout: 30 * time.Second})
	if err != nil {
		return res, err
	}
	defer probe.Close()
	if err := sleep(ctx, o.Warmup); err != nil {
		return res, err
	}
	if all, err := probe.ListNodes(ctx, &pb.ListNodesRequest{Stale: true}); err == nil {
		res.NodeTableBytes = proto.Size(all)
	}

	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		return res, err
	}
	heads := c.Heads()
	before := make([]float64, len(heads))
	for i, h := range heads {
		before[i] = cpuSeconds(h.PID)
	}
	f.Collect()
	start := time.Now()
	simBefore := cpuSeconds(os.Getpid())
	writes := probeWrites(ctx, probe, o.Window)
	res.Steady = f.Collect()
	el := time.Since(start).Seconds()
	res.SimCPU = (cpuSeconds(os.Getpid()) - simBefore) / el
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAvg, _, _ = strings.Cut(string(b), " ")
	}
	for i, h := range heads {
		cores := (cpuSeconds(h.PID) - before[i]) / el
		if i == leader {
			res.LeaderCPU, res.LeaderRSS = cores, rssBytes(h.PID)
		} else {
			res.FollowerCPU = max(res.FollowerCPU, cores)
		}
	}
	res.WriteP50, res.WriteP99 = quantiles(writes)
	log(fmt.Sprintf("steady %s", res.Steady))

	if o.Flood {
		if _, err := f.AddFlooder(ctx, time.Millisecond); err != nil {
			return res, err
		}
		f.Collect()
		if err := sleep(ctx, o.Window); err != nil {
			return res, err
		}
		s := f.Collect()
		res.Flooded = &s
		log(fmt.Sprintf("flooded %s", s))
	}

	if o.Failover {
		killed := time.Now()
		if err := c.Kill(leader); err != nil {
			return res, err
		}
		for i := 0; ; i++ {
			if _, err := probe.Put(ctx, "bench", fmt.Sprintf("scale-failover-%d", i), nil); err == nil {
				res.FailoverWrite = time.Since(killed)
				break
			}
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
		}
		at, err := f.WaitHeartbeatsSince(ctx, killed)
		if err != nil {
			return res, err
		}
		res.FailoverHeartbeats = at.Sub(killed)
		// A node the new leader wrongly thought silent is ruled on after
		// its grace: wait until every node has heartbeated past it.
		judged := time.Now().Add(o.NodeGrace + time.Second)
		if err := sleep(ctx, time.Until(judged)); err != nil {
			return res, err
		}
		if _, err := f.WaitHeartbeatsSince(ctx, judged); err != nil {
			return res, err
		}
		res.DeadAfterFailover = len(f.DeclaredDead())
		log(fmt.Sprintf("failover first_write=%s all_heartbeating=%s declared_dead=%d", res.FailoverWrite.Round(time.Millisecond),
			res.FailoverHeartbeats.Round(time.Millisecond), res.DeadAfterFailover))
	}
	return res, nil
}

// probeWrites puts a key every 20ms for d and returns the latencies.
func probeWrites(ctx context.Context, cl *cpclient.Client, d time.Duration) []time.Duration {
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
	)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	end := time.After(d)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			return lat
		case <-end:
			wg.Wait()
			return lat
		case <-t.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if _, err := cl.Put(ctx, "bench", fmt.Sprintf("scale-probe-%d", i), nil); err == nil {
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		}()
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// cpuSeconds is a process's user+system CPU time from /proc (0 if gone).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 13 {
		return 0
	}
	// utime and stime are fields 14 and 15 of stat: 12 and 13 here.
	u, _ := strconv.ParseFloat(fs[11], 64)
	s, _ := strconv.ParseFloat(fs[12], 64)
	return (u + s) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// rssBytes is a process's resident set size from /proc (0 if gone).
func rssBytes(pid int) int64 { return procStatus(pid, "VmRSS:") }

// PeakRSS is a process's peak resident set size (VmHWM) from /proc, or 0.
func PeakRSS(pid int) int64 { return procStatus(pid, "VmHWM:") }

// procStatus reads a field in kB of /proc/PID/status, in bytes.
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				kb, _ := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
