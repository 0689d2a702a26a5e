// Package data is manta's Ray Data: distributed datasets of Apache Arrow
// record batches that live in the cluster's object store, transformed in
// parallel by tasks and actors and consumed as a stream.
//
// A block is one Arrow record batch stored as an object in the Arrow IPC
// file format; a task reads it in place from its node's shared-memory
// arena (ipc.NewMappedFileReader over a ray.ReadOnlyBytes argument), with
// no decode and no copy.
//
// Go cannot ship closures, so user functions are registered by name at
// init, in package-level vars, as remote functions are (every worker runs
// the same binary and finds them):
//
//	var double = data.MapBatchesFn("double", func(ctx context.Context, b arrow.Record) (arrow.Record, error) {
//		...
//	})
//	var isEven = data.FilterFn("isEven", func(ctx context.Context, r data.Row) (bool, error) {
//		return r["id"].(int64)%2 == 0, nil
//	})
//
//	ds := data.Range(1_000_000).Filter(isEven).MapBatches(double, data.BatchSize(1024))
//	n, err := ds.Count(ctx)
//
// MapFn, FilterFn and FlatMapFn take rows (Row, a map by column name);
// MapBatchesFn and ColumnFn (AddColumn) take Arrow batches. A stateful
// function, such as a model loaded once, is a MapBatchesClass: it runs in
// an actor pool of Concurrency(n) actors, each building the function once.
//
// A Dataset is a lazy plan. Sources: Range, FromItems, FromArrow,
// ReadParquet, ReadCSV, ReadJSONL (files and directories, split into read
// tasks by size). Transforms: Map, MapBatches, Filter, FlatMap, AddColumn,
// Select, DropColumns, Limit, Repartition, RandomShuffle, Sort,
// GroupBy(key).Aggregate(Count(), Sum(c), Mean(c), Min(c), Max(c),
// Std(c)), Union, Zip. Consumers: Count, Take, TakeAll, Schema, Iter,
// IterBatches, Materialize, Split, WriteParquet, WriteCSV.
//
// Execution streams, like Ray Data's: adjacent map-like steps are fused
// into one task per block (the read included), the fused stages run at
// once connected by channels, each keeping a few tasks in flight, and a
// byte budget (WithMemoryBudget; default a quarter of the node's object
// store) throttles the reads so the blocks in flight stay under it; a block
// is freed as soon as the next stage has consumed it. All-to-all steps
// (Sort, RandomShuffle, GroupBy, Repartition, Zip) are barriers: map tasks
// cut every input block into one piece per output partition (sort and
// groupby by key ranges sampled from the input), reduce tasks merge the
// pieces; the pieces are objects and spill to disk when the store is full.
//
// Writes name each file after its block's position (part-000042.parquet)
// and rename it into place, so a task retried after its node died rewrites
// its own file and no row is written twice; a complete output directory has
// a _SUCCESS file. Stats describes the last execution per operator;
// progress bars show on a terminal (WithProgress).
package data
