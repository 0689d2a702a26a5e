package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/internal/tlsconfig"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/sdk/ray"
)

// benchFill makes an object of n bytes on the node that runs it (the
// transfer benchmark's source).
var benchFill = ray.Func2("manta.bench.fill", func(_ context.Context, seed, n int) ([]byte, error) {
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = byte(seed + i)
	}
	return b, nil
})

const (
	benchSrc = "bench_transfer_src"
	benchDst = "bench_transfer_dst"
)

func newBenchTransferCommand() *cobra.Command {
	var (
		size   string
		reps   int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "transfer",
		Short: "Node-to-node object transfer on a fresh local cluster: an object made on node-1, read in place by a task on node-2",
		Long: `Start 3 heads and 2 raylets (with --hosts netns, each a host of its own
and the --link-* flags applied to every host's packets), make an object of
--size on node-1 by a task, and time a task on node-2 that reads it: its
lease, the pull over the network, and the read. The first round is a
warm-up; the rate is over the other --reps. This process is the driver.`,
		Args: usageArgs(cobra.NoArgs),
	}
	cmd.Flags().StringVar(&size, "size", "256MiB", "object size")
	cmd.Flags().IntVar(&reps, "reps", 3, "timed transfers")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	var useTLS bool
	cmd.Flags().BoolVar(&useTLS, "tls", false, "the cluster runs mutual TLS (raylet to raylet included), to measure its cost")
	hf := addHostFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := hf.validate(); err != nil {
			return err
		}
		n, err := parseBytes(size)
		if err != nil || n < 1 || n > 1<<30 {
			return usageErrorf("--size %q: want up to 1GiB", size)
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		store := fmt.Sprint(3 * n)
		c, done, err := localClusterWith(startCtx, launcher.Options{Heads: 3, Nodes: 2, Hosts: hf.hosts, TLS: useTLS,
			NodeArgs: func(i int) []string {
				res := benchSrc
				if i == 1 {
					res = benchDst
				}
				return []string{"--num-cpus", "1", "--resources", res + "=1", "--object-store-memory", store}
			}}, hf)
		if err != nil {
			return err
		}
		defer done()
		nodes := c.Nodes()
		// This process is the driver: the SDK takes its TLS identity
		// from the environment.
		for _, kv := range c.TLSFiles().Env() {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
		if err := ray.Init(startCtx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()), ray.Raylet(nodes[0].Address)); err != nil {
			return err
		}
		defer ray.Shutdown(context.Background())
		src := ray.Resources(map[string]float64{benchSrc: 1})
		dst := ray.Resources(map[string]float64{benchDst: 1})
		var took time.Duration
		for round := 0; round <= reps; round++ {
			ref := benchFill.Remote(ctx, ray.Val(round), ray.Val(int(n)), src)
			if _, _, err := ray.Wait(ctx, []ray.ObjectRef[[]byte]{ref}, 1, 5*time.Minute); err != nil {
				return err
			}
			start := time.Now()
			got, err := ray.Get(ctx, byteLen.Remote(ctx, ray.ReadOnly(ref), dst))
			if err != nil {
				return err
			}
			if round > 0 {
				took += time.Since(start)
			}
			ref.Release()
			if got != int(n) {
				return fmt.Errorf("node-2 read %d bytes of %d", got, n)
			}
		}
		st, err := raylet.Status(ctx, nodes[1].Address, c.Token(), c.TLS().DialOption(tlsconfig.RoleNode))
		if err != nil {
			return err
		}
		mbps := float64(int64(reps)*n) / took.Seconds() / 1e6
		if asJSON {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"transfer_mb_per_s": mbps, "bytes": n, "reps": reps,
				"hosts": hf.hosts, "link": hf.link.String(), "node2_pulled_bytes": st.PulledBytes})
		}
		fmt.Fprintf(cmd.OutOrStdout(), "transfer hosts=%s link=[%s] size=%d reps=%d: %.0f MB/s (%.1f ms each); node-2 pulled %d bytes\n",
			hf.hosts, hf.link, n, reps, mbps, float64(took.Milliseconds())/float64(reps), st.PulledBytes)
		return nil
	}
	return cmd
}
