package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpbench"
	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/internal/tlsconfig"
)

func init() { extraCommands = append(extraCommands, newBenchCommand) }

// benchSubcommands are `manta bench` commands defined in files of their own.
var benchSubcommands []func() *cobra.Command

func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks of the control plane (figures, not tests)",
	}
	cmd.AddCommand(newBenchKVCommand(), newBenchLineageCommand(), newBenchFailoverCommand(), newBenchTransferCommand(), newBenchDataCommand())
	for _, sub := range benchSubcommands {
		cmd.AddCommand(sub())
	}
	return cmd
}

// localCluster starts a throw-away cluster of separate head processes.
func localCluster(ctx context.Context, heads int, tls bool) (*launcher.Cluster, func(), error) {
	return localClusterWith(ctx, launcher.Options{Heads: heads, TLS: tls}, nil)
}

// localClusterWith starts a throw-away cluster with o (and, with netns
// hosts, the link flags of hf applied).
func localClusterWith(ctx context.Context, o launcher.Options, hf *hostFlags) (*launcher.Cluster, func(), error) {
	dir, err := os.MkdirTemp("", "manta-bench-")
	if err != nil {
		return nil, nil, err
	}
	o.DataDir = dir
	c, err := launcher.Start(ctx, o)
	if errors.Is(err, launcher.ErrHostsUnsupported) {
		err = hostsError(err)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	unshape := func() {}
	if hf != nil {
		if unshape, err = hf.shape(c, o.Logger); err != nil {
			c.Close()
			os.RemoveAll(dir)
			return nil, nil, err
		}
	}
	return c, func() { unshape(); c.Close(); os.RemoveAll(dir) }, nil
}

// headFlags are the local cluster's head options a write benchmark
// compares: the Raft log store and any other `manta start` arguments.
type headFlags struct {
	heads    int
	useTLS   bool
	logStore string
	args     []string
	binary   string
}

func addHeadFlags(cmd *cobra.Command) *headFlags {
	f := &headFlags{}
	cmd.Flags().IntVar(&f.heads, "heads", 3, "heads of the local cluster when no --address is given")
	cmd.Flags().BoolVar(&f.useTLS, "tls", false, "the local cluster runs mutual TLS (as manta up --tls), to measure its cost")
	cmd.Flags().StringVar(&f.logStore, "raft-log-store", "", "Raft log store of the local cluster's heads: boltdb (default) or wal")
	cmd.Flags().StringSliceVar(&f.args, "head-arg", nil, "extra `manta start` arguments for every head of the local cluster")
	cmd.Flags().StringVar(&f.binary, "head-binary", "", "manta binary the local cluster's heads run (default this one), to compare two builds with the same load")
	return f
}

// target is where a write benchmark writes: --address's cluster, or a
// local one (whose head PIDs it returns, to count their CPU).
func (f *headFlags) target(ctx context.Context, cf *clusterFlags) (addrs []string, token string, tls *tlsconfig.Source, pids []int, done func(), err error) {
	if cf.address != "" || os.Getenv("MANTA_ADDRESS") != "" {
		cfg, err := cf.config()
		if err != nil {
			return nil, "", nil, nil, nil, err
		}
		return cfg.Addresses, cfg.Token, cfg.TLS, nil, func() {}, nil
	}
	args := f.args
	if f.logStore != "" {
		args = append(args, "--raft-log-store="+f.logStore)
	}
	c, done, err := localClusterWith(ctx, launcher.Options{Heads: f.heads, TLS: f.useTLS, ExtraHeadArgs: args, Binary: f.binary}, nil)
	if err != nil {
		return nil, "", nil, nil, nil, err
	}
	for _, h := range c.Heads() {
		pids = append(pids, h.PID)
	}
	return c.Addresses(), c.Token(), c.TLS(), pids, done, nil
}

func newBenchKVCommand() *cobra.Command {
	var (
		clients  int
		conns    int
		duration time.Duration
		size     int
		rate     float64
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "KV writes/s and latency through gRPC (a local 3-head cluster unless --address)",
		Args:  usageArgs(cobra.NoArgs),
	}
	cf := addClusterFlags(cmd)
	hf := addHeadFlags(cmd)
	cmd.Flags().IntVar(&clients, "clients", 64, "concurrent writers")
	cmd.Flags().IntVar(&conns, "conns", 0, "client connections the writers share (default one per writer)")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to write")
	cmd.Flags().IntVar(&size, "value-size", 100, "bytes per value")
	cmd.Flags().Float64Var(&rate, "rate", 0, "user-shaped load: this many writes/s in total at random times, shared unevenly by the clients (default: every client in a tight loop)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if rate < 0 {
			return usageErrorf("--rate must be >= 0")
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		o := cpbench.KVOptions{Clients: clients, Conns: conns, Duration: duration, ValueSize: size, Rate: rate}
		var done func()
		var err error
		o.Addresses, o.Token, o.TLS, o.HeadPIDs, done, err = hf.target(ctx, cf)
		if err != nil {
			return err
		}
		defer done()
		r, err := cpbench.KV(ctx, o)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{
				"kv_writes_per_second": r.PerSec, "p50_ms": ms(r.P50), "p99_ms": ms(r.P99), "p999_ms": ms(r.P999),
				"offered_per_second": r.Offered, "clients": r.Clients, "conns": r.Conns, "writes": r.Writes, "errors": r.Errors,
				"head_cpu_us_per_write": us(r.HeadCPUPerWrite), "self_cpu_us_per_write": us(r.ClientCPUPerWrite),
			})
		}
		fmt.Fprintln(cmd.OutOrStdout(), r)
		return nil
	}
	return cmd
}

func newBenchLineageCommand() *cobra.Command {
	var (
		owners, records, rounds int
		asJSON                  bool
	)
	cmd := &cobra.Command{
		Use:   "lineage",
		Short: "Lineage records committed/s through lineage.Recorder (a local 3-head cluster unless --address)",
		Args:  usageArgs(cobra.NoArgs),
	}
	cf := addClusterFlags(cmd)
	hf := addHeadFlags(cmd)
	cmd.Flags().IntVar(&owners, "owners", 4, "owners, each with its own client and Recorder")
	cmd.Flags().IntVar(&records, "records", 25000, "records per owner and round")
	cmd.Flags().IntVar(&rounds, "rounds", 3, "rounds on the same cluster (one line each)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per round")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if owners <= 0 || records <= 0 || rounds <= 0 {
			return usageErrorf("--owners, --records and --rounds must be > 0")
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		o := cpbench.LineageOptions{Owners: owners, Records: records}
		var done func()
		var err error
		o.Addresses, o.Token, o.TLS, o.HeadPIDs, done, err = hf.target(ctx, cf)
		if err != nil {
			return err
		}
		defer done()
		for round := range rounds {
			r, err := cpbench.Lineage(ctx, o, round)
			if err != nil {
				return err
			}
			if asJSON {
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{
					"lineage_records_per_second": r.PerSec, "records": r.Records, "batches": r.Batches,
					"head_cpu_us_per_record": us(r.HeadCPUPerRecord), "self_cpu_us_per_record": us(r.SelfCPUPerRecord),
				}); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintln(cmd.OutOrStdout(), r)
		}
		return nil
	}
	return cmd
}

func newBenchFailoverCommand() *cobra.Command {
	var (
		reps   int
		heads  int
		asJSON bool
		useTLS bool
	)
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "SIGKILL the leader of a local cluster N times: time to the first acknowledged write",
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.Flags().IntVar(&reps, "reps", 5, "how many leader kills")
	cmd.Flags().IntVar(&heads, "heads", 3, "heads of the local cluster")
	cmd.Flags().BoolVar(&useTLS, "tls", false, "the cluster runs mutual TLS, Raft included")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	var raftArgs []string
	cmd.Flags().StringSliceVar(&raftArgs, "head-arg", nil, "extra `manta start` arguments for every head, e.g. --head-arg=--election-timeout=1s")
	hf := addHostFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := hf.validate(); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		c, done, err := localClusterWith(ctx, launcher.Options{Heads: heads, Hosts: hf.hosts, ExtraHeadArgs: raftArgs, TLS: useTLS}, hf)
		if err != nil {
			return err
		}
		defer done()
		out := cmd.OutOrStdout()
		rs, err := cpbench.Failover(ctx, c, reps, func(s string) {
			if !asJSON {
				fmt.Fprintln(out, s)
			}
		})
		if err != nil {
			return err
		}
		lo, med, hi := cpbench.Summary(rs)
		if asJSON {
			return json.NewEncoder(out).Encode(map[string]any{
				"failover_first_write_ms_min": ms(lo), "failover_first_write_ms_median": ms(med), "failover_first_write_ms_max": ms(hi), "reps": len(rs),
			})
		}
		fmt.Fprintf(out, "failover reps=%d first_write_after min=%s median=%s max=%s\n", len(rs),
			lo.Round(time.Millisecond), med.Round(time.Millisecond), hi.Round(time.Millisecond))
		return nil
	}
	return cmd
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
