package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sim"
)

func init() { benchSubcommands = append(benchSubcommands, newBenchScaleCommand) }

func newBenchScaleCommand() *cobra.Command {
	var (
		nodes     []int
		heads     int
		warmup    time.Duration
		window    time.Duration
		hbEvery   time.Duration
		viewEvery time.Duration
		flood     bool
		fullViews bool
		failover  bool
		asJSON    bool
		headArgs  []string
	)
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "N simulated raylets against a fresh local cluster of head processes: leader CPU and RSS, heartbeat RTT, RPC rate, write latency, failover",
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.Flags().IntSliceVar(&nodes, "nodes", []int{100, 500, 1000}, "fleet sizes, one fresh cluster each")
	cmd.Flags().IntVar(&heads, "heads", 3, "heads of the local cluster")
	cmd.Flags().DurationVar(&warmup, "warmup", 0, "time after registration before measuring (default 3s + 10ms a node)")
	cmd.Flags().DurationVar(&window, "window", 10*time.Second, "measured steady state")
	cmd.Flags().DurationVar(&hbEvery, "heartbeat-interval", 500*time.Millisecond, "each node's heartbeat period (the raylet's)")
	cmd.Flags().DurationVar(&viewEvery, "view-interval", 100*time.Millisecond, "each node's ListNodes period (the raylet's); negative: none")
	cmd.Flags().BoolVar(&fullViews, "full-views", false, "view refreshes ask for the whole node list (as before deltas), to compare")
	cmd.Flags().BoolVar(&flood, "flood", false, "then add one node sending 1,000 heartbeats/s for another window")
	cmd.Flags().BoolVar(&failover, "failover", true, "then SIGKILL the leader and measure recovery")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per fleet size")
	cmd.Flags().StringSliceVar(&headArgs, "head-arg", nil, "extra `manta start` arguments for every head")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		out := cmd.OutOrStdout()
		for _, n := range nodes {
			c, done, err := localClusterWith(ctx, launcher.Options{Heads: heads, ExtraHeadArgs: headArgs}, nil)
			if err != nil {
				return err
			}
			r, err := sim.Bench(ctx, c, sim.BenchOptions{Nodes: n, Warmup: warmup, Window: window,
				HeartbeatInterval: hbEvery, ViewInterval: viewEvery, FullViews: fullViews, Flood: flood, Failover: failover,
				Log: func(s string) {
					if !asJSON {
						fmt.Fprintf(os.Stderr, "  [%d nodes] %s\n", n, s)
					}
				}})
			done()
			if err != nil {
				return fmt.Errorf("%d nodes: %w", n, err)
			}
			if asJSON {
				if err := json.NewEncoder(out).Encode(r); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintln(out, r)
		}
		return nil
	}
	return cmd
}
