// Command datasort sorts generated records by a random key with sdk/data
// (a sampled range partition, then a sort per partition) and checks that
// the output is sorted and holds every record.
package main

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/manta-ray/manta/sdk/data"
	"github.com/manta-ray/manta/sdk/ray"
)

// withKey adds a pseudo-random key to each id (a hash: the same in every
// run and on every worker).
var withKey = data.ColumnFn("examples.withKey", func(_ context.Context, b arrow.Record) (arrow.Array, error) {
	ids := b.Column(0).(*array.Int64)
	out := array.NewInt64Builder(memory.DefaultAllocator)
	defer out.Release()
	for _, id := range ids.Int64Values() {
		out.Append(int64(uint64(id)*0x9E3779B97F4A7C15>>20) % 1_000_000)
	}
	return out.NewArray(), nil
})

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		const n = 200_000
		sorted := data.Range(n, data.Blocks(16)).AddColumn("key", withKey).Sort("key", false)
		var prev int64 = -1
		seen := make([]bool, n)
		count := 0
		for b, err := range sorted.IterBatches(ctx, data.BatchSize(8192)) {
			if err != nil {
				return err
			}
			ids := b.Column(0).(*array.Int64).Int64Values()
			keys := b.Column(1).(*array.Int64).Int64Values()
			for i, k := range keys {
				if k < prev {
					return fmt.Errorf("not sorted: %d after %d", k, prev)
				}
				prev = k
				if seen[ids[i]] {
					return fmt.Errorf("id %d twice", ids[i])
				}
				seen[ids[i]] = true
				count++
			}
		}
		if count != n {
			return fmt.Errorf("%d records, want %d", count, n)
		}
		fmt.Printf("sorted %d records\n", count)
		fmt.Print(sorted.Stats())
		return nil
	})
}
