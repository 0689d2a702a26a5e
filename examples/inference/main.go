// Command inference is batch "inference" with an actor pool: each actor
// of the pool loads a model (here a lookup table standing in for one)
// once, then labels every batch it is given. The table is built in the
// actor's constructor, as a real model would be loaded.
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

// label maps an id to its class: the "model".
func label(id int64) string { return fmt.Sprintf("class-%d", (id*7919)%13) }

var classify = data.MapBatchesClass("examples.classify", func(context.Context) (func(context.Context, arrow.Record) (arrow.Record, error), error) {
	model := make(map[int64]string, 1000) // loaded once per actor
	for i := int64(0); i < 1000; i++ {
		model[i] = label(i)
	}
	return func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		ids := b.Column(0).(*array.Int64)
		out := array.NewStringBuilder(memory.DefaultAllocator)
		defer out.Release()
		for _, id := range ids.Int64Values() {
			out.Append(model[id%1000])
		}
		schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "label", Type: arrow.BinaryTypes.String}}, nil)
		return array.NewRecord(schema, []arrow.Array{ids, out.NewArray()}, b.NumRows()), nil
	}, nil
})

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		ds := data.Range(20000, data.Blocks(8)).MapBatches(classify, data.Concurrency(2), data.BatchSize(1000))
		n := 0
		for r, err := range ds.Iter(ctx) {
			if err != nil {
				return err
			}
			if r["label"] != label(r["id"].(int64)%1000) {
				return fmt.Errorf("row %v mislabelled", r)
			}
			n++
		}
		if n != 20000 {
			return fmt.Errorf("%d rows labelled, want 20000", n)
		}
		fmt.Printf("labelled %d rows with a pool of 2 actors\n", n)
		fmt.Print(ds.Stats())
		return nil
	})
}
