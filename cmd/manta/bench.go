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
)

func init() { extraCommands = append(extraCommands, newBenchCommand) }

// benchSubcommands are `manta bench` commands defined in files of their own.
var benchSubcommands []func() *cobra.Command

func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks of the control plane (figures, not tests)",
	}
	cmd.AddCommand(newBenchKVCommand(), newBenchFailoverCommand(), newBenchTransferCommand(), newBenchDataCommand())
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

func newBenchKVCommand() *cobra.Command {
	var (
		clients  int
		conns    int
		duration time.Duration
		size     int
		heads    int
		asJSON   bool
		useTLS   bool
	)
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "KV writes/s and latency through gRPC (a local 3-head cluster unless --address)",
		Args:  usageArgs(cobra.NoArgs),
	}
	cf := addClusterFlags(cmd)
	cmd.Flags().IntVar(&clients, "clients", 64, "concurrent writers")
	cmd.Flags().IntVar(&conns, "conns", 0, "client connections the writers share (default one per writer)")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to write")
	cmd.Flags().IntVar(&size, "value-size", 100, "bytes per value")
	cmd.Flags().IntVar(&heads, "heads", 3, "heads of the local cluster when no --address is given")
	cmd.Flags().BoolVar(&useTLS, "tls", false, "the local cluster runs mutual TLS (as manta up --tls), to measure its cost")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		o := cpbench.KVOptions{Clients: clients, Conns: conns, Duration: duration, ValueSize: size}
		if cf.address == "" && os.Getenv("MANTA_ADDRESS") == "" {
			c, done, err := localCluster(ctx, heads, useTLS)
			if err != nil {
				return err
			}
			defer done()
			o.Addresses, o.Token, o.TLS = c.Addresses(), c.Token(), c.TLS()
		} else {
			cfg, err := cf.config()
			if err != nil {
				return err
			}
			o.Addresses, o.Token, o.TLS = cfg.Addresses, cfg.Token, cfg.TLS
		}
		r, err := cpbench.KV(ctx, o)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{
				"kv_writes_per_second": r.PerSec, "p50_ms": ms(r.P50), "p99_ms": ms(r.P99),
				"clients": r.Clients, "conns": r.Conns, "writes": r.Writes, "errors": r.Errors,
			})
		}
		fmt.Fprintln(cmd.OutOrStdout(), r)
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
