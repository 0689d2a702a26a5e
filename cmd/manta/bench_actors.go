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

func init() { benchSubcommands = append(benchSubcommands, newBenchActorsCommand) }

func newBenchActorsCommand() *cobra.Command {
	var (
		actors      []int
		nodes       int
		heads       int
		cpus        int
		concurrency int
		failover    bool
		midway      bool
		strayCheck  time.Duration
		asJSON      bool
		headArgs    []string
	)
	cmd := &cobra.Command{
		Use:   "actors",
		Short: "many actors placed by the leader on simulated raylets of a fresh local cluster of head processes: placement rate, time to all alive, leader memory per actor, failover",
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.Flags().IntSliceVar(&actors, "actors", []int{1000, 10000}, "actor counts, one fresh cluster each")
	cmd.Flags().IntVar(&nodes, "nodes", 100, "simulated nodes")
	cmd.Flags().IntVar(&heads, "heads", 3, "heads of the local cluster")
	cmd.Flags().IntVar(&cpus, "cpus", 0, "CPUs of each node (every actor takes 1); default the actors +25% over the nodes")
	cmd.Flags().IntVar(&concurrency, "concurrency", 64, "CreateActor calls in flight")
	cmd.Flags().BoolVar(&failover, "failover", true, "then SIGKILL the leader and check that no actor restarts")
	cmd.Flags().BoolVar(&midway, "kill-leader-midway", false, "SIGKILL the leader once half the actors are registered (most still being placed)")
	cmd.Flags().DurationVar(&strayCheck, "stray-check", 5*time.Second, "the simulated raylets' stray-actor check period (the raylet's); 0: none")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per run")
	cmd.Flags().StringSliceVar(&headArgs, "head-arg", nil, "extra `manta start` arguments for every head")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		out := cmd.OutOrStdout()
		for _, n := range actors {
			c, done, err := localClusterWith(ctx, launcher.Options{Heads: heads, ExtraHeadArgs: headArgs}, nil)
			if err != nil {
				return err
			}
			t0 := time.Now()
			r, err := sim.BenchActors(ctx, c, sim.ActorBenchOptions{Nodes: nodes, Actors: n, CPUs: cpus, Concurrency: concurrency,
				Failover: failover, Midway: midway, StrayCheck: strayCheck, Log: func(s string) {
					if !asJSON {
						fmt.Fprintf(os.Stderr, "  [%d actors, %s] %s\n", n, time.Since(t0).Round(time.Second), s)
					}
				}})
			done()
			if err != nil {
				return fmt.Errorf("%d actors: %w", n, err)
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
