package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/sdk/ray"
)

func init() { extraCommands = append(extraCommands, newMicrobenchmarkCommand) }

// noop is the microbenchmark's task; the manta binary serves as its worker.
var noop = ray.Func1("manta.microbenchmark.noop", func(_ context.Context, x int) (int, error) { return x, nil })

type microbenchmark struct {
	name string
	run  func(ctx context.Context, d time.Duration) (float64, error)
}

var microbenchmarks = []microbenchmark{
	{"single_client_tasks_sync", func(ctx context.Context, d time.Duration) (float64, error) {
		return rate(d, func() (int, error) {
			_, err := ray.Get(ctx, noop.Remote(ctx, ray.Val(1)))
			return 1, err
		})
	}},
	{"single_client_tasks_async", func(ctx context.Context, d time.Duration) (float64, error) {
		return rate(d, func() (int, error) { return asyncBatch(ctx, 1000) })
	}},
	{"multi_client_tasks_async", func(ctx context.Context, d time.Duration) (float64, error) {
		// Four submitting goroutines of one driver (Ray runs separate drivers).
		return concurrentRate(d, 4, func(int) (int, error) { return asyncBatch(ctx, 1000) })
	}},
	{"single_client_get_calls", func(ctx context.Context, d time.Duration) (float64, error) {
		ref, err := ray.Put(ctx, 1)
		if err != nil {
			return 0, err
		}
		return rate(d, func() (int, error) {
			_, err := ray.Get(ctx, ref)
			return 1, err
		})
	}},
	{"single_client_put_calls", func(ctx context.Context, d time.Duration) (float64, error) {
		return rate(d, func() (int, error) {
			_, err := ray.Put(ctx, 1)
			return 1, err
		})
	}},
	{"single_client_put_gigabytes", func(ctx context.Context, d time.Duration) (float64, error) {
		// Each object is released once put: the owner frees it on its node,
		// so the bytes in the store stay bounded however long this runs.
		buf := make([]byte, 16<<20)
		start, puts := time.Now(), 0
		for puts == 0 || time.Since(start) < d {
			buf[0] = byte(puts)
			ref, err := ray.Put(ctx, buf)
			if err != nil {
				return 0, err
			}
			ref.Release()
			puts++
		}
		return float64(puts*len(buf)) / time.Since(start).Seconds() / 1e9, nil
	}},
	{"node_to_node_transfer_gigabytes", nodeToNode},
	// Replicated Puts of 16 MiB objects (to compare with
	// single_client_put_gigabytes, one copy): each Put returns once n
	// nodes of the embedded cluster hold it.
	{"single_client_put_gigabytes_replicas_2", func(ctx context.Context, d time.Duration) (float64, error) {
		return replicatedPuts(ctx, d, 2)
	}},
	{"single_client_put_gigabytes_replicas_3", func(ctx context.Context, d time.Duration) (float64, error) {
		return replicatedPuts(ctx, d, 3)
	}},
	// The borrower protocol's cost: batches of tasks that each take one
	// Put object, as a direct ref argument (resolved by the owner, the task
	// gets the value) or as a ref inside a value (the task decodes the ref
	// and registers with the owner as its borrower).
	{"single_client_tasks_async_ref_arg", func(ctx context.Context, d time.Duration) (float64, error) {
		ref, err := ray.Put(ctx, 1)
		if err != nil {
			return 0, err
		}
		return rate(d, func() (int, error) {
			return batchOf(ctx, 1000, func() ray.ObjectRef[int] { return noop.Remote(ctx, ref) })
		})
	}},
	// The same with a new Put object per task: each task's ref is one its
	// worker has not seen, so inside a value every task registers a borrow
	// (and drops it after).
	{"single_client_tasks_async_new_ref_arg", func(ctx context.Context, d time.Duration) (float64, error) {
		return rate(d, func() (int, error) {
			return batchOfPuts(ctx, 1000, func(ref ray.ObjectRef[int]) ray.ObjectRef[int] { return noop.Remote(ctx, ref) })
		})
	}},
	{"single_client_tasks_async_new_ref_in_value", func(ctx context.Context, d time.Duration) (float64, error) {
		return rate(d, func() (int, error) {
			return batchOfPuts(ctx, 1000, func(ref ray.ObjectRef[int]) ray.ObjectRef[int] {
				return holdsRef.Remote(ctx, ray.Val(refBox{Ref: ref}))
			})
		})
	}},
	{"single_client_tasks_async_ref_in_value", func(ctx context.Context, d time.Duration) (float64, error) {
		ref, err := ray.Put(ctx, 1)
		if err != nil {
			return 0, err
		}
		return rate(d, func() (int, error) {
			return batchOf(ctx, 1000, func() ray.ObjectRef[int] { return holdsRef.Remote(ctx, ray.Val(refBox{Ref: ref})) })
		})
	}},
}

var addReplicaNodes sync.Once

// replicatedPuts puts 16 MiB objects with Replicas(n), releasing each, for
// d; it adds two nodes to the embedded cluster first (so it needs Init
// without --address).
func replicatedPuts(ctx context.Context, d time.Duration, n int) (float64, error) {
	var err error
	addReplicaNodes.Do(func() {
		for range 2 {
			if _, err = ray.AddEmbeddedNode(map[string]float64{"CPU": 1}); err != nil {
				return
			}
		}
	})
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 16<<20)
	start, puts := time.Now(), 0
	for puts == 0 || time.Since(start) < d {
		buf[0] = byte(puts)
		ref, err := ray.Put(ctx, buf, ray.Replicas(n))
		if err != nil {
			return 0, err
		}
		ref.Release()
		puts++
	}
	return float64(puts*len(buf)) / time.Since(start).Seconds() / 1e9, nil
}

// refBox carries a ref inside a value.
type refBox struct{ Ref ray.ObjectRef[int] }

// holdsRef takes a ref inside a value (it borrows it) and does nothing.
var holdsRef = ray.Func1("manta.microbenchmark.holdsRef", func(_ context.Context, b refBox) (int, error) { return 1, nil })

// batchOfPuts submits n tasks, each given a new Put object.
func batchOfPuts(ctx context.Context, n int, submit func(ray.ObjectRef[int]) ray.ObjectRef[int]) (int, error) {
	refs := make([]ray.ObjectRef[int], n)
	for i := range refs {
		ref, err := ray.Put(ctx, i)
		if err != nil {
			return 0, err
		}
		refs[i] = submit(ref)
	}
	_, err := ray.GetAll(ctx, refs)
	return n, err
}

func batchOf(ctx context.Context, n int, submit func() ray.ObjectRef[int]) (int, error) {
	refs := make([]ray.ObjectRef[int], n)
	for i := range refs {
		refs[i] = submit()
	}
	_, err := ray.GetAll(ctx, refs)
	return n, err
}

// byteLen is the transfer benchmark's task: it takes its argument (pulled
// to its node) in place, as Ray's numpy arrays are, reads every page of it
// and returns its length.
var byteLen = ray.Func1("manta.microbenchmark.byteLen", func(_ context.Context, b ray.ReadOnlyBytes) (int, error) {
	var x byte
	for i := 0; i < len(b); i += 4096 {
		x ^= b[i]
	}
	_ = x
	return len(b), nil
})

// nodeToNodeResource is a resource only the second node has.
const nodeToNodeResource = "microbenchmark_node2"

var addNode2 sync.Once

// nodeToNode puts a 1 GiB object on the first node and times a task on a
// second node that reads it: the lease, the pull from node to node, the
// mapping and the task touching every page of it in place. It starts the second node in the
// embedded cluster, so it needs Init without --address.
func nodeToNode(ctx context.Context, d time.Duration) (float64, error) {
	var err error
	addNode2.Do(func() { _, err = ray.AddEmbeddedNode(map[string]float64{"CPU": 1, nodeToNodeResource: 1}) })
	if err != nil {
		return 0, err
	}
	onNode2 := ray.Resources(map[string]float64{nodeToNodeResource: 1})
	// A worker on node 2 first, so its start is not timed.
	if _, err := ray.Get(ctx, byteLen.Remote(ctx, ray.Val(ray.ReadOnlyBytes{1}), onNode2)); err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<30)
	for i := range buf {
		buf[i] = byte(i)
	}
	var moved int
	var took time.Duration
	// The first transfer is not timed: it commits the receiving arena's
	// pages and the worker's heap for the first time (fresh pages fault in
	// at ~1.5 GB/s here), a one-off cost that later transfers reuse.
	for round := 0; round == 0 || moved == 0 || (took < d && moved < 4); round++ {
		buf[0] = byte(round)
		ref, err := ray.Put(ctx, ray.ReadOnlyBytes(buf))
		if err != nil {
			return 0, err
		}
		start := time.Now()
		n, err := ray.Get(ctx, byteLen.Remote(ctx, ref, onNode2))
		if round > 0 {
			took += time.Since(start)
			moved++
		}
		ref.Release()
		if err != nil {
			return 0, err
		}
		if n != len(buf) {
			return 0, fmt.Errorf("node 2 read %d bytes of %d", n, len(buf))
		}
	}
	return float64(moved*len(buf)) / took.Seconds() / 1e9, nil
}

func asyncBatch(ctx context.Context, n int) (int, error) {
	refs := make([]ray.ObjectRef[int], n)
	for i := range refs {
		refs[i] = noop.Remote(ctx, ray.Val(i))
	}
	_, err := ray.GetAll(ctx, refs)
	return n, err
}

// concurrentRate runs op in n goroutines (op gets the goroutine's index)
// for d and returns the operations per second they completed together; the
// first error stops its goroutine and is returned.
func concurrentRate(d time.Duration, n int, op func(i int) (int, error)) (float64, error) {
	var (
		mu       sync.Mutex
		total    int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d {
				k, err := op(i)
				mu.Lock()
				total += k
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds(), firstErr
}

func rate(d time.Duration, op func() (int, error)) (float64, error) {
	start, n := time.Now(), 0
	for time.Since(start) < d {
		k, err := op()
		if err != nil {
			return 0, err
		}
		n += k
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func newMicrobenchmarkCommand() *cobra.Command {
	var (
		only            []string
		asJSON          bool
		address         string
		token           string
		duration        time.Duration
		noLin, noEvents bool
	)
	cmd := &cobra.Command{
		Use:   "microbenchmark [--only NAME,...] [--json] [--address HEADS]",
		Short: "Ray's core microbenchmarks, against an embedded cluster or --address",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			known := map[string]bool{}
			for _, m := range microbenchmarks {
				known[m.name] = true
			}
			want := map[string]bool{}
			for _, o := range only {
				if !known[o] {
					return usageErrorf("unknown microbenchmark %q", o)
				}
				want[o] = true
			}
			ctx := cmd.Context()
			var opts []ray.InitOption
			if noLin {
				opts = append(opts, ray.RecordLineage(false))
			}
			if noEvents {
				opts = append(opts, ray.TaskEvents(false))
			}
			if address != "" {
				opts = append(opts, ray.Address(address))
				if token != "" {
					opts = append(opts, ray.Token(token))
				}
			}
			if err := ray.Init(ctx, opts...); err != nil {
				return err
			}
			defer ray.Shutdown(context.Background())
			// Warm up the worker pool.
			if _, err := asyncBatch(ctx, 200); err != nil {
				return err
			}
			results := map[string]float64{}
			var names []string
			for _, m := range microbenchmarks {
				if len(want) > 0 && !want[m.name] {
					continue
				}
				v, err := m.run(ctx, duration)
				if err != nil {
					return fmt.Errorf("%s: %w", m.name, err)
				}
				results[m.name] = v
				names = append(names, m.name)
				if !asJSON {
					unit := "per second"
					switch {
					case strings.HasSuffix(m.name, "gigabytes"):
						unit = "GB per second"
					case strings.HasSuffix(m.name, "_efficiency"):
						unit = "(ideal time / elapsed)"
					case strings.HasSuffix(m.name, "_seconds"):
						unit = "s"
					case strings.HasSuffix(m.name, "_us"):
						unit = "µs"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %.2f %s\n", m.name, v, unit)
				}
			}
			if asJSON {
				sort.Strings(names)
				b, _ := json.Marshal(results)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&only, "only", nil, "run only these metrics")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object: metric name -> value")
	fs.StringVar(&address, "address", "", "heads of a running cluster (default: an embedded cluster)")
	fs.StringVar(&token, "token", "", "cluster token with --address (default $MANTA_TOKEN)")
	fs.DurationVar(&duration, "duration", 3*time.Second, "how long each metric runs")
	fs.BoolVar(&noLin, "no-lineage", false, "the driver records no lineage (to measure what recording costs)")
	fs.BoolVar(&noEvents, "no-task-events", false, "report no task events (to measure what they cost)")
	fs.IntVar(&benchCPUs, "cpus", benchCPUs, "the cluster's CPUs, for the efficiency metrics (default: this machine's, as the embedded cluster has)")
	return cmd
}
