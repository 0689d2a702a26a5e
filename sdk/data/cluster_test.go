package data_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/sdk/data"
	"github.com/manta-ray/manta/sdk/ray"
)

// The cluster tests start heads and raylets as separate processes and run
// the job in a child process of this test binary (the runtime is one per
// process, and this one already serves the embedded cluster): the child
// joins the cluster through envClusterDriver and runs the test named by
// envClusterJob.
const (
	envClusterDriver = "MANTA_DATA_TEST_CLUSTER" // "HEADS|TOKEN"
	envClusterJob    = "MANTA_DATA_TEST_JOB"     // "sort:BYTES" or "write:DIR"
	envClusterStore  = "MANTA_DATA_TEST_STORE"   // each raylet's store bytes
)

// watchSpills samples the nodes' spilled bytes until the test ends and
// returns a function giving the most seen at once.
func watchSpills(t *testing.T, ctx context.Context) func() int64 {
	_, token, _ := strings.Cut(os.Getenv(envClusterDriver), "|")
	nodes, err := ray.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var most atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var sum int64
			for _, n := range nodes {
				if st, err := raylet.Status(ctx, n.Address, token); err == nil {
					sum += st.SpilledBytes
				}
			}
			if sum > most.Load() {
				most.Store(sum)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return most.Load
}

// sortBytes is the size of the spilling sort: tens of MB in make test, 2
// GB with -data.sort-bytes=2147483648 (make bench-data).
var sortBytes = flag.Int64("data.sort-bytes", 48<<20, "bytes of records the cluster sort test sorts")

var (
	// payload makes rows of about 64 bytes: an id, a key, a padding string.
	payload = data.MapBatchesFn("test.payload", func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		ids := b.Column(0).(*array.Int64)
		keys := array.NewInt64Builder(memory.DefaultAllocator)
		pad := array.NewStringBuilder(memory.DefaultAllocator)
		for _, id := range ids.Int64Values() {
			keys.Append(int64(uint64(id)*0x9E3779B97F4A7C15>>16) % 1_000_003)
			pad.Append(fmt.Sprintf("%040d", id))
		}
		schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "key", Type: arrow.PrimitiveTypes.Int64}, {Name: "pad", Type: arrow.BinaryTypes.String}}, nil)
		return array.NewRecord(schema, []arrow.Array{ids, keys.NewArray(), pad.NewArray()}, b.NumRows()), nil
	})
	// slowly gives the test time to kill a node while blocks are written.
	slowly = data.MapBatchesFn("test.slowly", func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		time.Sleep(150 * time.Millisecond)
		return b, nil
	})
)

// startCluster starts 1 head (with headArgs) and 2 raylets of 2 CPUs and
// store bytes each.
func startCluster(t *testing.T, ctx context.Context, store string, headArgs ...string) *launcher.Cluster {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manta")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/manta-ray/manta/cmd/manta").CombinedOutput(); err != nil {
		t.Fatalf("build manta: %v\n%s", err, out)
	}
	c, err := launcher.Start(ctx, launcher.Options{Binary: bin, Heads: 1, Nodes: 2, DataDir: t.TempDir(), ExtraHeadArgs: headArgs,
		NodeArgs: func(int) []string { return []string{"--num-cpus", "2", "--object-store-memory", store} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startJob runs this test binary as a driver of c running job.
func startJob(t *testing.T, ctx context.Context, c *launcher.Cluster, job, store string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestClusterJob$", "-test.v", fmt.Sprintf("-data.sort-bytes=%d", *sortBytes))
	cmd.Env = append(os.Environ(), envClusterDriver+"="+strings.Join(c.Addresses(), ",")+"|"+c.Token(), envClusterJob+"="+job,
		envClusterStore+"="+store)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// syncBuffer is a child's output, read by the test while it is written.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestClusterJob is the child driver's side of the cluster tests.
func TestClusterJob(t *testing.T) {
	job := os.Getenv(envClusterJob)
	if job == "" {
		t.Skip("run by the cluster tests in a child process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	kind, arg, _ := strings.Cut(job, ":")
	switch kind {
	case "sort":
		n, _ := strconv.ParseInt(arg, 10, 64)
		rows := n / 64
		blocks := int(max(8, n/(4<<20)))
		ds := data.Range(rows, data.Blocks(blocks)).MapBatches(payload)
		sorted := ds.Sort("key", false)
		spilled := watchSpills(t, ctx)
		var prev int64 = -1
		var count int64
		var idSum int64
		for b, err := range sorted.IterBatches(ctx, data.BatchSize(1<<16)) {
			if err != nil {
				t.Fatal(err)
			}
			keys := b.Column(1).(*array.Int64).Int64Values()
			for i, k := range keys {
				if k < prev {
					t.Fatalf("not sorted at row %d: %d after %d", count, k, prev)
				}
				prev = k
				idSum += b.Column(0).(*array.Int64).Value(i)
				count++
			}
		}
		if count != rows || idSum != rows*(rows-1)/2 {
			t.Fatalf("sorted %d rows (id sum %d); want %d rows (id sum %d)", count, idSum, rows, rows*(rows-1)/2)
		}
		t.Log(sorted.Stats())
		if got := spilled(); got == 0 {
			t.Fatalf("the sort of %d bytes never spilled on stores of %s", n, os.Getenv(envClusterStore))
		} else {
			t.Logf("up to %d bytes spilled at once", got)
		}
		var groups [2]int64
		for b, err := range ds.GroupBy("key").Aggregate(data.Count(), data.Sum("id")).IterBatches(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				for _, v := range b.Column(i + 1).(*array.Int64).Int64Values() {
					groups[i] += v
				}
			}
		}
		if groups[0] != rows || groups[1] != rows*(rows-1)/2 {
			t.Fatalf("groupby: counts sum to %d and ids to %d; want %d and %d", groups[0], groups[1], rows, rows*(rows-1)/2)
		}
		fmt.Println("JOB OK")
	case "rebuild":
		// Blocks made on both nodes and kept (Materialize); the parent
		// kills node-2 once they exist, then writes "go"; the write that
		// follows needs node-2's blocks back, rebuilt from lineage.
		const rows = 800000
		ds, err := data.Range(rows, data.Blocks(40)).MapBatches(slowly, data.Concurrency(4)).Materialize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("MATERIALIZED")
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if _, err := os.Stat(filepath.Join(arg, "go")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no go from the parent")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := ds.WriteParquet(ctx, filepath.Join(arg, "out")); err != nil {
			t.Fatal(err)
		}
		fmt.Println("JOB OK")
	case "write":
		ds := data.Range(40000, data.Blocks(40)).MapBatches(slowly, data.Concurrency(4)).WriteParquet(ctx, arg)
		if ds != nil {
			t.Fatal(ds)
		}
		fmt.Println("JOB OK")
	}
}

// TestClusterSortSpills sorts and groups records on 2 nodes whose object
// stores are smaller than the data (so blocks spill): the output is
// sorted, complete, and the group counts add up.
func TestClusterSortSpills(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	// The sort holds its data about three times over (input, pieces,
	// output) in stores of a quarter of it: it must spill.
	store := strconv.FormatInt(max(*sortBytes/4, 16<<20), 10)
	// Spilling on a loaded 2-core machine (make test runs this under
	// -race beside other packages) starved the raylets' heartbeats past
	// the default 5 s node timeout: the node was marked dead and the job
	// hung. No node dies in this test, so a long timeout costs nothing.
	c := startCluster(t, ctx, store, "--node-timeout", "2m")
	cmd, out := startJob(t, ctx, c, fmt.Sprintf("sort:%d", *sortBytes), store)
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "JOB OK") {
		t.Fatalf("job: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestClusterNodeKilledDuringWrite SIGKILLs a raylet while a streaming
// Map -> WriteParquet runs: the job completes with every row written
// exactly once (tasks of the dead node retried elsewhere rewrite their
// own block's file).
func TestClusterNodeKilledDuringWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := startCluster(t, ctx, "256MiB")
	dir := t.TempDir()
	cmd, out := startJob(t, ctx, c, "write:"+dir, "256MiB")
	// Kill node-2 once some blocks are written (the driver is on node-1).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "part-*.parquet"))
		if len(files) >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no blocks written in 2 minutes\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.KillNode(1); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "JOB OK") {
		t.Fatalf("job: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "_SUCCESS")); err != nil {
		t.Fatalf("no _SUCCESS: %v", err)
	}
	seen := make([]int, 40000)
	files, _ := filepath.Glob(filepath.Join(dir, "part-*.parquet"))
	for _, f := range files {
		for _, id := range readIDs(t, f) {
			seen[id]++
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("row %d written %d times", id, n)
		}
	}
}

// readIDs reads the id column of a Parquet file directly.
func readIDs(t *testing.T, path string) []int64 {
	t.Helper()
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fr, err := pqarrow.NewFileReader(r, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	var out []int64
	for _, ch := range tbl.Column(0).Data().Chunks() {
		out = append(out, ch.(*array.Int64).Int64Values()...)
	}
	return out
}

// TestClusterBlocksRebuiltFromLineage SIGKILLs a raylet holding some of a
// materialized dataset's blocks: writing the dataset afterwards rebuilds
// them from lineage (their read tasks run again) and every row is written
// exactly once.
func TestClusterBlocksRebuiltFromLineage(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := startCluster(t, ctx, "256MiB")
	dir := t.TempDir()
	cmd, out := startJob(t, ctx, c, "rebuild:"+dir, "256MiB")
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "MATERIALIZED") {
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("the job did not materialize its blocks\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// node-2 holds some of the blocks (the slow tasks spread over both
	// nodes' CPUs), which its death loses.
	st, err := raylet.Status(ctx, c.Nodes()[1].Address, c.Token())
	if err != nil || st.Objects == 0 {
		t.Fatalf("node-2 holds %v objects (%v); want some blocks there", st.GetObjects(), err)
	}
	t.Logf("node-2 holds %d objects, %d bytes, when it is killed", st.Objects, st.ObjectBytes)
	if err := c.KillNode(1); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "JOB OK") {
		t.Fatalf("job: %v\n%s", err, out)
	}
	seen := make([]int, 800000)
	files, _ := filepath.Glob(filepath.Join(dir, "out", "part-*.parquet"))
	for _, f := range files {
		for _, id := range readIDs(t, f) {
			seen[id]++
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("row %d written %d times", id, n)
		}
	}
}
