package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
)

func init() { benchSubcommands = append(benchSubcommands, newBenchActorProcsCommand) }

// actorProcsResult is one step of `manta bench actor-procs`.
type actorProcsResult struct {
	Actors int `json:"actors"`
	// CreateSeconds: from the first creation to every actor answering a
	// call; Rate is actors over it.
	CreateSeconds float64 `json:"create_seconds"`
	Rate          float64 `json:"actors_per_second"`
	// Workers are the raylets' child processes counted; RSS and PSS are
	// their sums (PSS splits the pages they share, such as the binary's).
	Workers       int   `json:"workers"`
	WorkersRSS    int64 `json:"workers_rss_bytes"`
	WorkersPSS    int64 `json:"workers_pss_bytes"`
	RSSPerActor   int64 `json:"rss_per_actor_bytes"`
	PSSPerActor   int64 `json:"pss_per_actor_bytes"`
	RayletRSS     int64 `json:"raylet_rss_bytes"`
	MemAvailDrop  int64 `json:"mem_available_drop_bytes"`
	DropPerActor  int64 `json:"mem_available_drop_per_actor_bytes"`
	MemAvailAfter int64 `json:"mem_available_after_bytes"`
}

func newBenchActorProcsCommand() *cobra.Command {
	var (
		counts  []int
		nodes   int
		asJSON  bool
		reserve float64
	)
	cmd := &cobra.Command{
		Use:   "actor-procs",
		Short: "Real actor worker processes on a fresh local cluster: create N actors (each a process) and report creation rate and memory per actor process",
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.Flags().IntSliceVar(&counts, "actors", []int{100, 200, 400}, "actor counts, one fresh cluster each, in order")
	cmd.Flags().IntVar(&nodes, "nodes", 1, "raylets of the local cluster")
	cmd.Flags().Float64Var(&reserve, "reserve", 0.3, "stop before a step whose estimated memory would leave less than this fraction of the machine's memory available")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per step")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		out := cmd.OutOrStdout()
		var perActor int64
		for _, n := range counts {
			total, avail := memInfo("MemTotal:"), memInfo("MemAvailable:")
			if perActor > 0 && avail-int64(n)*perActor < int64(reserve*float64(total)) {
				fmt.Fprintf(out, "actors=%d skipped: ~%dMiB each would leave less than %.0f%% of %dMiB available\n", n, perActor>>20, 100*reserve, total>>20)
				break
			}
			c, done, err := localClusterWith(ctx, launcher.Options{Heads: 1, Nodes: nodes}, nil)
			if err != nil {
				return err
			}
			r, err := actorProcs(ctx, c, n)
			done()
			if err != nil {
				return fmt.Errorf("%d actors: %w", n, err)
			}
			perActor = max(r.PSSPerActor, r.DropPerActor) // RSS counts the shared binary once per process
			if asJSON {
				if err := json.NewEncoder(out).Encode(r); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(out, "actors=%d create=%.1fs rate=%.1f/s workers=%d rss_per_actor=%.1fMiB pss_per_actor=%.1fMiB mem_available_drop_per_actor=%.1fMiB raylet_rss=%dMiB mem_available_after=%dMiB\n",
				r.Actors, r.CreateSeconds, r.Rate, r.Workers, mib(r.RSSPerActor), mib(r.PSSPerActor), mib(r.DropPerActor), r.RayletRSS>>20, r.MemAvailAfter>>20)
		}
		return nil
	}
	return cmd
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// actorProcs creates n actors at once from a driver in this process,
// waits until each answered a call, and measures their processes.
func actorProcs(ctx context.Context, c *launcher.Cluster, n int) (actorProcsResult, error) {
	r := actorProcsResult{Actors: n}
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token())); err != nil {
		return r, err
	}
	defer ray.Shutdown(context.Background())
	availBefore := memInfo("MemAvailable:")
	handles := make([]ray.ActorHandle[*benchActor], n)
	errs := make([]error, n)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range handles {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			handles[i], errs[i] = newBenchActor(ctx)
		}()
	}
	wg.Wait()
	r.CreateSeconds = time.Since(start).Seconds()
	r.Rate = float64(n) / r.CreateSeconds
	defer func() {
		for _, h := range handles {
			if h.ID() != "" {
				_ = ray.Kill(context.WithoutCancel(ctx), h, true)
			}
		}
	}()
	for i, err := range errs {
		if err != nil {
			return r, fmt.Errorf("actor %d: %w", i, err)
		}
	}
	r.MemAvailAfter = memInfo("MemAvailable:")
	r.MemAvailDrop = availBefore - r.MemAvailAfter
	r.DropPerActor = r.MemAvailDrop / int64(n)
	for _, nd := range c.Nodes() {
		r.RayletRSS += procKB(nd.PID, "status", "VmRSS:")
		for _, pid := range childrenOf(nd.PID) {
			r.Workers++
			r.WorkersRSS += procKB(pid, "status", "VmRSS:")
			r.WorkersPSS += procKB(pid, "smaps_rollup", "Pss:")
		}
	}
	if r.Workers > 0 {
		r.RSSPerActor = r.WorkersRSS / int64(r.Workers)
		r.PSSPerActor = r.WorkersPSS / int64(r.Workers)
	}
	return r, nil
}

// childrenOf lists the processes whose parent is pid (from /proc).
func childrenOf(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fs := strings.Fields(string(b[i+1:]))
		if len(fs) > 1 && fs[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, child)
		}
	}
	return out
}

// procKB reads a "Field: N kB" line of /proc/PID/file, in bytes.
func procKB(pid int, file, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			if fs := strings.Fields(v); len(fs) > 0 {
				kb, _ := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// memInfo reads a field of /proc/meminfo, in bytes.
func memInfo(field string) int64 { return procKBPath("/proc/meminfo", field) }

func procKBPath(path, field string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			if fs := strings.Fields(v); len(fs) > 0 {
				kb, _ := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
