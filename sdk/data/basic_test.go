package data_test

import (
	"context"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/manta-ray/manta/sdk/data"
)

var (
	addTen = data.MapFn("test.addTen", func(_ context.Context, r data.Row) (data.Row, error) {
		return data.Row{"id": r["id"], "x": r["id"].(int64) + 10}, nil
	})
	isEven = data.FilterFn("test.isEven", func(_ context.Context, r data.Row) (bool, error) {
		return r["id"].(int64)%2 == 0, nil
	})
	doubleID = data.MapBatchesFn("test.doubleID", func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		in := b.Column(0).(*array.Int64)
		bld := array.NewInt64Builder(memory.DefaultAllocator)
		for i := 0; i < in.Len(); i++ {
			bld.Append(in.Value(i) * 2)
		}
		return array.NewRecord(b.Schema(), []arrow.Array{bld.NewArray()}, b.NumRows()), nil
	})
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestBasicPipeline(t *testing.T) {
	ctx := testCtx(t)
	ds := data.Range(1000, data.Blocks(7)).Filter(isEven).Map(addTen)
	n, err := ds.Count(ctx)
	if err != nil || n != 500 {
		t.Fatalf("count: %d, %v; want 500", n, err)
	}
	t.Log(ds.Stats())
	rows, err := ds.Take(ctx, 3)
	if err != nil || len(rows) != 3 || rows[2]["x"].(int64) != 14 {
		t.Fatalf("take: %v, %v", rows, err)
	}
	var sum int64
	for b, err := range data.Range(100, data.Blocks(3)).MapBatches(doubleID, data.BatchSize(10)).IterBatches(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range b.Column(0).(*array.Int64).Int64Values() {
			sum += v
		}
	}
	if sum != 9900 {
		t.Fatalf("sum %d", sum)
	}
	// Progress bars forced on (stderr is no terminal here): they draw
	// and close without disturbing the result.
	n, err = data.Range(1000, data.Blocks(4)).Filter(isEven).Limit(100).WithProgress(true).Count(ctx)
	if err != nil || n != 100 {
		t.Fatalf("count with progress bars: %d, %v; want 100", n, err)
	}
}
