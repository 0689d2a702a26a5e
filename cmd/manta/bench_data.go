package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/sdk/data"
	"github.com/manta-ray/manta/sdk/ray"
)

// The data benchmarks' transforms, registered in the manta binary, which
// serves as the benchmark's workers.
var (
	// benchScale is the MapBatches benchmark's work: every int64 column
	// times 3 plus 1, into new columns.
	benchScale = data.MapBatchesFn("manta.bench.scale", func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		return scaleRecord(b), nil
	})
	// benchRecords makes records of about 64 bytes: id, key, padding.
	benchRecords = data.MapBatchesFn("manta.bench.records", func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		return makeRecords(b), nil
	})
	// benchRecordsPool is benchRecords in an actor pool: a stage of its
	// own, so the stream's blocks pass through the object store.
	benchRecordsPool = data.MapBatchesClass("manta.bench.recordsPool", func(context.Context) (func(context.Context, arrow.Record) (arrow.Record, error), error) {
		return func(_ context.Context, b arrow.Record) (arrow.Record, error) { return makeRecords(b), nil }, nil
	})
	benchKeepMost = data.FilterFn("manta.bench.keepMost", func(_ context.Context, r data.Row) (bool, error) {
		return r["id"].(int64)%10 != 0, nil
	})
	// benchWide makes 8 int64 columns from the id (64 bytes a row).
	benchWide = data.MapBatchesFn("manta.bench.wide", func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		ids := b.Column(0).(*array.Int64).Int64Values()
		fields := make([]arrow.Field, 8)
		cols := make([]arrow.Array, 8)
		for c := range cols {
			bld := array.NewInt64Builder(memory.DefaultAllocator)
			bld.Reserve(len(ids))
			for _, id := range ids {
				bld.UnsafeAppend(id + int64(c))
			}
			fields[c] = arrow.Field{Name: fmt.Sprintf("c%d", c), Type: arrow.PrimitiveTypes.Int64}
			cols[c] = bld.NewArray()
		}
		return array.NewRecord(arrow.NewSchema(fields, nil), cols, b.NumRows()), nil
	})
)

// makeRecords makes records of about 64 bytes from ids: id, key, padding.
func makeRecords(b arrow.Record) arrow.Record {
	ids := b.Column(0).(*array.Int64)
	keys := array.NewInt64Builder(memory.DefaultAllocator)
	pad := array.NewBinaryBuilder(memory.DefaultAllocator, arrow.BinaryTypes.Binary)
	var buf [40]byte
	for _, id := range ids.Int64Values() {
		keys.Append(int64(uint64(id) * 0x9E3779B97F4A7C15 >> 1))
		pad.Append(buf[:])
	}
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "key", Type: arrow.PrimitiveTypes.Int64}, {Name: "pad", Type: arrow.BinaryTypes.Binary}}, nil)
	return array.NewRecord(schema, []arrow.Array{ids, keys.NewArray(), pad.NewArray()}, b.NumRows())
}

// scaleRecord is the work of benchScale, also run as the plain Go loop.
func scaleRecord(b arrow.Record) arrow.Record {
	cols := make([]arrow.Array, b.NumCols())
	for c := range cols {
		in := b.Column(c).(*array.Int64).Int64Values()
		bld := array.NewInt64Builder(memory.DefaultAllocator)
		bld.Reserve(len(in))
		for _, v := range in {
			bld.UnsafeAppend(v*3 + 1)
		}
		cols[c] = bld.NewArray()
	}
	return array.NewRecord(b.Schema(), cols, b.NumRows())
}

func newBenchDataCommand() *cobra.Command {
	var (
		what, size, store string
		nodes             int
		nodeTimeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "data",
		Short: "sdk/data: MapBatches throughput against a plain Go loop, a spilling sort, streaming 4x the store, disk write speed",
		Long: `--what mapbatches: an embedded 2-CPU cluster; --size of 8-column int64
blocks materialized in the store, then MapBatches (2 workers read them in
place) against a plain Go loop doing the same work on the same records in
this process.
--what sort: a local cluster of --nodes raylets of --store each; sort
--size of 64-byte records by a random key (spills when size > store).
--what stream: the same cluster; Range -> MapBatches -> Filter ->
WriteParquet of --size (say 4x --store); the peak object-store bytes are
sampled from the raylets every 20 ms.
--what disk: write --size to a file in $TMPDIR and fsync, for the disk's speed.`,
		Args: usageArgs(cobra.NoArgs),
	}
	cmd.Flags().StringVar(&what, "what", "mapbatches", "mapbatches, sort, stream or disk")
	cmd.Flags().StringVar(&size, "size", "512MiB", "bytes of data")
	cmd.Flags().StringVar(&store, "store", "512MiB", "each raylet's object store (sort, stream)")
	cmd.Flags().IntVar(&nodes, "nodes", 2, "raylets (sort, stream)")
	cmd.Flags().DurationVar(&nodeTimeout, "node-timeout", 0, "the head's --node-timeout (sort, stream; default the head's)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		n, err := parseBytes(size)
		if err != nil || n < 1<<20 {
			return usageErrorf("--size %q: want at least 1MiB", size)
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		out := cmd.OutOrStdout()
		switch what {
		case "mapbatches":
			return benchMapBatches(ctx, out, n)
		case "disk":
			return benchDisk(out, n)
		case "sort", "stream":
			s, err := parseBytes(store)
			if err != nil {
				return usageErrorf("--store %q: %v", store, err)
			}
			return benchDataCluster(ctx, out, what, n, s, nodes, nodeTimeout)
		}
		return usageErrorf("--what %q: want mapbatches, sort, stream or disk", what)
	}
	return cmd
}

func benchMapBatches(ctx context.Context, out io.Writer, n int64) error {
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2}), ray.LogToDriver(false)); err != nil {
		return err
	}
	defer ray.Shutdown(context.Background())
	rows := n / 64
	blocks := int(max(4, n/(16<<20)))
	ds, err := data.Range(rows, data.Blocks(blocks)).MapBatches(benchWide).Materialize(ctx)
	if err != nil {
		return err
	}
	var recs []arrow.Record
	for b, err := range ds.IterBatches(ctx, data.BatchSize(1<<30)) {
		if err != nil {
			return err
		}
		recs = append(recs, b)
	}
	// The loop's best of three (the first warms the allocator up).
	loop := time.Duration(1<<63 - 1)
	for range 3 {
		start := time.Now()
		for _, r := range recs {
			scaleRecord(r).Release()
		}
		loop = min(loop, time.Since(start))
	}
	// Warm up the workers, then time MapBatches over the stored blocks.
	if _, err := ds.MapBatches(benchScale).Count(ctx); err != nil {
		return err
	}
	start := time.Now()
	m := ds.MapBatches(benchScale)
	got, err := m.Count(ctx)
	if err != nil {
		return err
	}
	took := time.Since(start)
	if got != rows {
		return fmt.Errorf("MapBatches saw %d rows, want %d", got, rows)
	}
	gb := float64(rows*64) / 1e9
	fmt.Fprintf(out, "mapbatches size=%d blocks=%d: plain Go loop %.2f GB/s (%v), MapBatches on 2 workers %.2f GB/s (%v): %.2fx the loop\n",
		rows*64, blocks, gb/loop.Seconds(), loop.Round(time.Millisecond), gb/took.Seconds(), took.Round(time.Millisecond), loop.Seconds()/took.Seconds())
	fmt.Fprint(out, m.Stats())
	return nil
}

func benchDisk(out io.Writer, n int64) error {
	f, err := os.CreateTemp("", "manta-disk-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	for w := int64(0); w < n; w += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	took := time.Since(start)
	f.Close()
	fmt.Fprintf(out, "disk write+fsync of %d bytes in %s: %.2f GB/s (%v)\n", n, os.TempDir(), float64(n)/1e9/took.Seconds(), took.Round(time.Millisecond))
	return nil
}

func benchDataCluster(ctx context.Context, out io.Writer, what string, n, store int64, nodes int, nodeTimeout time.Duration) error {
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var headArgs []string
	if nodeTimeout > 0 {
		headArgs = []string{"--node-timeout", nodeTimeout.String()}
	}
	c, done, err := localClusterWith(startCtx, launcher.Options{Heads: 1, Nodes: nodes, ExtraHeadArgs: headArgs,
		NodeArgs: func(int) []string { return []string{"--num-cpus", "2", "--object-store-memory", fmt.Sprint(store)} }}, nil)
	if err != nil {
		return err
	}
	defer done()
	if err := ray.Init(startCtx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()), ray.LogToDriver(false)); err != nil {
		return err
	}
	defer ray.Shutdown(context.Background())
	// Sample the object stores' bytes while the job runs.
	var (
		mu      sync.Mutex
		peak    int64
		spilled int64
	)
	sample := func() {
		var sum, sp int64
		for _, nd := range c.Nodes() {
			st, err := raylet.Status(ctx, nd.Address, c.Token())
			if err == nil {
				sum += st.ObjectBytes
				sp += st.SpilledBytes
			}
		}
		mu.Lock()
		peak, spilled = max(peak, sum), sp
		mu.Unlock()
	}
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	rows := n / 64
	blocks := int(max(8, n/(32<<20)))
	src := data.Range(rows, data.Blocks(blocks)).MapBatches(benchRecords).WithProgress(false)
	start := time.Now()
	var ds *data.Dataset
	switch what {
	case "sort":
		ds = src.Sort("key", false)
		var prev int64 = -1 << 63
		var count int64
		for b, err := range ds.IterBatches(ctx, data.BatchSize(1<<20)) {
			if err != nil {
				close(stopSampling)
				wg.Wait()
				return err
			}
			for _, k := range b.Column(1).(*array.Int64).Int64Values() {
				if k < prev {
					close(stopSampling)
					wg.Wait()
					return fmt.Errorf("not sorted at row %d", count)
				}
				prev = k
				count++
			}
		}
		if count != rows {
			err = fmt.Errorf("sorted %d rows, want %d", count, rows)
		}
	case "stream":
		dir, derr := os.MkdirTemp("", "manta-stream-")
		if derr != nil {
			return derr
		}
		defer os.RemoveAll(dir)
		// Read -> (store) -> actor pool MapBatches -> (store) -> Filter
		// -> WriteParquet: blocks in flight through the store, under
		// the budget.
		ds = data.Range(rows, data.Blocks(blocks)).MapBatches(benchRecordsPool, data.Concurrency(2)).Filter(benchKeepMost).
			WithMemoryBudget(store / 4).WithProgress(false)
		err = ds.WriteParquet(ctx, filepath.Join(dir, "out"))
	}
	took := time.Since(start)
	close(stopSampling)
	wg.Wait()
	sample()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s size=%d nodes=%d store=%d each: %v, %.3f GB/s; peak object-store bytes (all nodes, sampled) %d (%.2f of one store), spilled %d\n",
		what, rows*64, nodes, store, took.Round(time.Millisecond), float64(rows*64)/1e9/took.Seconds(), peak, float64(peak)/float64(store), spilled)
	fmt.Fprint(out, ds.Stats())
	return nil
}
