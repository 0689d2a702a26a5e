package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/launcher"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

const (
	demoHeads     = 3
	demoKeys      = 100
	demoLaterKeys = 10
	demoNamespace = "demo"
	demoNodes     = 2
)

func newDemoCommand() *cobra.Command {
	var keep bool
	var logLevel, hosts string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run tasks on a local cluster and watch it lose its leader and carry on",
		Long: `Start 3 heads and 2 raylets as separate processes, fan tasks out over
both raylets and in again (printing what ran where), write keys, SIGKILL
the leader while tasks run, measure how long writes stop, check that
nothing acknowledged was lost and every task finished, and restart the
killed head to see it catch up. Exits non-zero if a check fails.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			d := &demo{out: cmd.OutOrStdout(), keep: keep}
			return d.run(ctx, launcher.Options{Heads: demoHeads, Nodes: demoNodes, Logger: log, Hosts: hosts,
				NodeArgs: func(int) []string { return []string{"--num-cpus", "2"} }})
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temp dir (logs, Raft data) instead of removing it")
	cmd.Flags().StringVar(&logLevel, "log-level", "error", "launcher log level")
	cmd.Flags().StringVar(&hosts, "hosts", launcher.HostsLocal, "local: every process on loopback; netns: each head and raylet a host of its own, the demo's driver on this one (needs root)")
	return cmd
}

// demo is one run of `manta demo`: a narrative, and the checks it made.
type demo struct {
	out    io.Writer
	keep   bool
	step   int
	failed []string
	checks int
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) note(format string, args ...any) {
	fmt.Fprintf(d.out, "   %s\n", fmt.Sprintf(format, args...))
}

// check records a check and prints its outcome.
func (d *demo) check(ok bool, what string, args ...any) bool {
	d.checks++
	msg := fmt.Sprintf(what, args...)
	if ok {
		d.note("ok: %s", msg)
	} else {
		d.note("FAILED: %s", msg)
		d.failed = append(d.failed, msg)
	}
	return ok
}

func (d *demo) run(ctx context.Context, o launcher.Options) (err error) {
	dir, err := os.MkdirTemp("", "manta-demo-")
	if err != nil {
		return err
	}
	o.DataDir = dir
	fmt.Fprintln(d.out, "manta demo: tasks on a 3-head cluster that loses its leader and carries on")

	d.say("Starting %d heads (`manta start --head`) and %d raylets (`manta start --address`), each its own process, in %s", o.Heads, o.Nodes, dir)
	t0 := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	c, err := launcher.Start(startCtx, o)
	cancel()
	if err != nil {
		if !d.keep {
			os.RemoveAll(dir)
		}
		return err
	}
	defer func() {
		d.say("Stopping the cluster")
		if cerr := c.Close(); cerr != nil {
			d.note("stopping: %v", cerr)
		}
		if d.keep {
			d.note("kept %s", dir)
		} else if rerr := os.RemoveAll(dir); rerr == nil {
			d.note("removed %s", dir)
		}
		if err == nil && len(d.failed) > 0 {
			err = fmt.Errorf("demo: %d of %d checks failed: %s", len(d.failed), d.checks, strings.Join(d.failed, "; "))
		}
		if err == nil {
			fmt.Fprintf(d.out, "\ndemo passed: all %d checks ok\n", d.checks)
		}
	}()
	for _, h := range c.Heads() {
		d.note("%s  gRPC %s  Raft %s  pid %d", h.ID, h.Address, h.RaftAddress, h.PID)
	}
	for _, n := range c.Nodes() {
		d.note("%s  raylet pid %d", n.ID, n.PID)
	}
	d.note("cluster formed in %s", time.Since(t0).Round(time.Millisecond))

	d.say("Fan-out/fan-in: %d tasks from this driver (the manta binary is uploaded once as the job's worker binary)", demoTasks)
	if err := d.initDriver(ctx, c); err != nil {
		d.check(false, "start the driver: %v", err)
		return nil
	}
	defer ray.Shutdown(context.Background())
	d.runTasks(ctx, c, "fan-out")

	cl, err := c.Client()
	if err != nil {
		return err
	}
	defer cl.Close()

	d.say("Writing %d keys", demoKeys)
	t0 = time.Now()
	if err := putKeys(ctx, cl, "key", demoKeys); err != nil {
		d.check(false, "write %d keys: %v", demoKeys, err)
		return nil
	}
	d.check(true, "%d keys written in %s", demoKeys, time.Since(t0).Round(time.Millisecond))

	d.say("Cluster status")
	leaderIdx, leaderID, err := c.WaitLeader(ctx)
	if !d.check(err == nil, "a leader is elected: %s", orErr(leaderID, err)) {
		return nil
	}
	d.printHeads(ctx, cl, c)

	old := c.Heads()[leaderIdx]
	d.say("Killing the leader %s (pid %d) with SIGKILL while %d tasks run", old.ID, old.PID, demoTasks)
	inflight := make(chan fanOutResult, 1)
	go func() { inflight <- fanOut(ctx) }()
	if err := c.Kill(leaderIdx); err != nil {
		return err
	}
	killed := time.Now()
	// The client rotates to another head and retries until a new leader
	// takes the write; the gap is what an application sees.
	_, err = cl.Put(ctx, demoNamespace, "after-failover", []byte("first write after the kill"))
	gap := time.Since(killed)
	if !d.check(err == nil, "first successful write %s after the kill", gap.Round(time.Millisecond)) {
		d.note("write error: %v", err)
		return nil
	}
	d.reportTasks(ctx, c, "tasks running across the kill", <-inflight)
	newIdx, newID, err := c.WaitLeader(ctx)
	if !d.check(err == nil && newID != old.ID, "new leader: %s", orErr(newID, err)) {
		return nil
	}
	d.printHeads(ctx, cl, c)

	d.say("Checking that no acknowledged write was lost")
	if err := putKeys(ctx, cl, "later", demoLaterKeys); err != nil {
		d.check(false, "write %d more keys after the failover: %v", demoLaterKeys, err)
		return nil
	}
	d.check(true, "%d more keys written after the failover", demoLaterKeys)
	missing := checkKeys(ctx, cl, "key", demoKeys)
	missing = append(missing, checkKeys(ctx, cl, "later", demoLaterKeys)...)
	d.check(len(missing) == 0, "all %d keys written before the kill and %d after it read back (missing: %d)",
		demoKeys, demoLaterKeys, len(missing))

	d.say("Restarting %s on its data dir", old.ID)
	t0 = time.Now()
	if err := c.Restart(leaderIdx); err != nil {
		return err
	}
	caught, st, lst := waitCaughtUp(ctx, cl, old.Address, c.Heads()[newIdx].Address, 30*time.Second)
	switch {
	case caught:
		d.check(true, "%s rejoined as %s in %s; applied index %d, leader's %d", old.ID, st.RaftState,
			time.Since(t0).Round(time.Millisecond), st.AppliedIndex, lst.AppliedIndex)
	case st != nil && lst != nil:
		d.check(false, "%s did not catch up in 30s: state %s, applied index %d, leader's %d", old.ID, st.RaftState, st.AppliedIndex, lst.AppliedIndex)
	default:
		d.check(false, "%s did not answer after its restart", old.ID)
	}
	d.printHeads(ctx, cl, c)

	d.runLineage(ctx, c, cl)
	return nil
}

func orErr(s string, err error) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// putKeys writes n keys prefix-000... with a few writers in parallel.
func putKeys(ctx context.Context, cl *cpclient.Client, prefix string, n int) error {
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				if _, err := cl.Put(ctx, demoNamespace, demoKey(prefix, i), demoValue(prefix, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// checkKeys reads back keys written by putKeys and returns those missing
// or wrong.
func checkKeys(ctx context.Context, cl *cpclient.Client, prefix string, n int) []string {
	var bad []string
	for i := range n {
		v, err := cl.Get(ctx, demoNamespace, demoKey(prefix, i))
		if err != nil || !bytes.Equal(v, demoValue(prefix, i)) {
			bad = append(bad, demoKey(prefix, i))
		}
	}
	return bad
}

func demoKey(prefix string, i int) string   { return fmt.Sprintf("%s-%03d", prefix, i) }
func demoValue(prefix string, i int) []byte { return fmt.Appendf(nil, "value of %s-%03d", prefix, i) }

// waitCaughtUp polls until the head at addr follows the leader at leader
// and has applied as much as it has.
func waitCaughtUp(ctx context.Context, cl *cpclient.Client, addr, leader string, within time.Duration) (bool, *pb.StatusResponse, *pb.StatusResponse) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var st, lst *pb.StatusResponse
	for {
		s, err := cl.StatusOf(ctx, addr)
		ls, lerr := cl.StatusOf(ctx, leader)
		if err == nil {
			st = s
		}
		if lerr == nil {
			lst = ls
		}
		if err == nil && lerr == nil && s.LeaderId == ls.HeadId && s.AppliedIndex >= ls.AppliedIndex {
			return true, st, lst
		}
		select {
		case <-ctx.Done():
			return false, st, lst
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// printHeads prints every head's view in one line each.
func (d *demo) printHeads(ctx context.Context, cl *cpclient.Client, c *launcher.Cluster) {
	for _, h := range c.Heads() {
		if !h.Running {
			d.note("   %s: down", h.ID)
			continue
		}
		st, err := cl.StatusOf(ctx, h.Address)
		if err != nil {
			d.note("   %s: %v", h.ID, err)
			continue
		}
		d.note("   %-7s %-9s term %d, applied index %d", h.ID, st.RaftState, st.Term, st.AppliedIndex)
	}
}
