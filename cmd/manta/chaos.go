package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/chaos"
	"github.com/manta-ray/manta/internal/launcher"
)

func init() { extraCommands = append(extraCommands, newChaosCommand) }

func newChaosCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Kill, pause and partition heads, raylets and workers of a local cluster under load, then check that nothing was lost",
	}
	cmd.AddCommand(newChaosRunCommand(), newChaosListCommand())
	return cmd
}

func newChaosListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the chaos scenarios",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, s := range chaos.Scenarios {
				what := s.Summary
				if s.Needs != "" {
					what = fmt.Sprintf("[needs %s: not in the harness yet] %s", s.Needs, what)
				}
				fmt.Fprintf(tw, "%s\t%s\n", s.Name, what)
			}
			tw.Flush()
			if why := chaos.PartitionSupport(); why != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "\npartitions: unsupported here (%s); mixed skips them, partition-minority refuses to run\n", why)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "\npartitions: iptables, with each head in its own cgroup")
			}
			return nil
		},
	}
}

type chaosRunFlags struct {
	o        chaos.Options
	seedSet  bool
	logLevel string
}

func newChaosRunCommand() *cobra.Command {
	f := &chaosRunFlags{}
	cmd := &cobra.Command{
		Use:   "run --scenario NAME [--duration 60s] [--seed N] [--heads 3] [--nodes N] [--report DIR]",
		Short: "Run a chaos scenario against a fresh local cluster and write a report",
		Long: `Start a local cluster of separate head and raylet processes, run the KV
workload (several clients, shared and unique keys) and, with raylets, the
task workload (this process is a driver on node-1: task chains, fan-outs
summed by a tree of tasks, and values too big to inline, all with results
known in advance), inject the scenario's faults on a schedule drawn from
--seed for --duration, then check: linearizability of the history, every
acknowledged write readable, no phantom keys, every task result right and
every task error one the faults make legitimate (a killed worker:
ErrWorkerCrashed once retries are spent; a killed raylet: that, or
ErrObjectLost), recovery after every fault, no hung operation, every head
at the same state hash, no leaked head, raylet or worker process. The report
(report.json, summary.txt, and the cluster's data and logs in cluster/) goes
to --report; the exit status is 1 on any violation. Ctrl-C stops everything
and writes a partial report.

raylet-kill and worker-kill run 2 raylets unless --nodes says otherwise
(raylet-kill needs 2: node-1, the driver's, is never killed); mixed adds
worker faults with --nodes 1, and raylet faults too with 2 or more.

Partitions need root, iptables and a writable cgroup v2 hierarchy; where
they are missing, mixed skips the partition fault and says so in the report,
and partition-minority refuses to run.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.seedSet = cmd.Flags().Changed("seed")
			return runChaos(cmd, f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.o.Scenario, "scenario", "", "scenario to run (see 'manta chaos list')")
	fs.DurationVar(&f.o.Duration, "duration", 60*time.Second, "how long to inject faults")
	fs.Uint64Var(&f.o.Seed, "seed", 0, "seed of the fault schedule and workload (default: random, printed)")
	fs.IntVar(&f.o.Heads, "heads", 3, "number of heads (at least 3)")
	fs.IntVar(&f.o.Nodes, "nodes", 0, "number of raylets; with any, the task workload runs too (default: 2 for raylet-kill and worker-kill, else 0)")
	fs.StringVar(&f.o.ReportDir, "report", "", "report directory (default: a fresh one under the temp dir)")
	fs.BoolVar(&f.o.Force, "force", false, "overwrite the report in a non-empty --report directory")
	fs.IntVar(&f.o.Clients, "clients", 6, "concurrent KV clients")
	fs.IntVar(&f.o.TaskClients, "task-clients", 3, "concurrent task workload clients (with --nodes)")
	fs.IntVar(&f.o.LineageClients, "lineage-clients", 2, "lineage workload clients: chains whose lost stages must be rebuilt (with --nodes; negative for none)")
	fs.IntVar(&f.o.ActorClients, "actor-clients", 2, "actor workload clients, each calling its own counter actor (with --nodes; negative for none)")
	fs.IntVar(&f.o.OwnerClients, "owner-clients", 0, "owner workload clients: borrowed objects whose owner may die (0: one when the scenario kills owners; negative for none)")
	fs.IntVar(&f.o.PlacementGroupClients, "pg-clients", 1, "placement-group workload clients: create, use and remove groups, leaks checked at the end (with --nodes; negative for none)")
	fs.DurationVar(&f.o.OpTimeout, "op-timeout", chaos.DefaultOpTimeout, "bound on one operation with its retries; 5s past it is a hang")
	fs.StringVar(&f.o.Hosts, "hosts", launcher.HostsLocal, "local: every process on loopback; netns: each head and raylet a host of its own (network namespace, private /dev/shm; needs root), which slow-leader, lossy-links and asymmetric-partition need")
	fs.BoolVar(&f.o.TLS, "tls", false, "run the cluster on mutual TLS, Raft included")
	fs.StringVar(&f.o.Partition, "partition", chaos.PartitionAuto, "partition mechanism: auto, iptables or none")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func runChaos(cmd *cobra.Command, f *chaosRunFlags) error {
	o := f.o
	if o.Scenario == "" {
		return usageErrorf("--scenario is required; see 'manta chaos list'")
	}
	// Before a temp report dir is made for it.
	if _, err := chaos.LookupScenario(o.Scenario); err != nil {
		return usageError{err}
	}
	if !f.seedSet {
		o.Seed = rand.Uint64() >> 1 // fits a JSON number exactly
	}
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	o.Logger = log
	if o.ReportDir == "" {
		if o.ReportDir, err = os.MkdirTemp("", "manta-chaos-"+o.Scenario+"-"); err != nil {
			return err
		}
	}
	log.Info("chaos run", zap.String("scenario", o.Scenario), zap.Uint64("seed", o.Seed), zap.Duration("duration", o.Duration), zap.String("report", o.ReportDir))

	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := chaos.Run(ctx, o)
	switch {
	case errors.Is(err, chaos.ErrHostsUnsupported):
		return hostsError(err)
	case errors.Is(err, chaos.ErrUnknownScenario), errors.Is(err, chaos.ErrBadOptions), errors.Is(err, chaos.ErrReportDirNotEmpty):
		return usageError{err}
	case rep == nil:
		return err
	}
	rep.Summary(cmd.OutOrStdout())
	fmt.Fprintf(cmd.OutOrStdout(), "report: %s\n", rep.ReportDir)
	if err != nil {
		return err
	}
	if !rep.Pass() {
		return fmt.Errorf("chaos run failed (seed %d); see %s", rep.Seed, rep.ReportDir)
	}
	return nil
}
