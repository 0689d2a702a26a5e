package data_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/manta-ray/manta/sdk/data"
	"github.com/manta-ray/manta/sdk/ray"
)

var (
	panicAt7 = data.MapFn("test.panicAt7", func(_ context.Context, r data.Row) (data.Row, error) {
		if r["id"].(int64) == 7 {
			panic("seven")
		}
		return r, nil
	})
	// inArena reports, per row, whether the batch's id column was a view
	// of the node's shared-memory arena (the block read in place).
	inArena = data.MapBatchesFn("test.inArena", func(_ context.Context, b arrow.Record) (arrow.Record, error) {
		buf := b.Column(0).Data().Buffers()[1].Bytes()
		bld := array.NewBooleanBuilder(memory.DefaultAllocator)
		for i := 0; i < int(b.NumRows()); i++ {
			bld.Append(ray.InArena(buf))
		}
		schema := arrow.NewSchema([]arrow.Field{{Name: "in_arena", Type: arrow.FixedWidthTypes.Boolean}}, nil)
		return array.NewRecord(schema, []arrow.Array{bld.NewArray()}, b.NumRows()), nil
	})
)

// TestBlocksReadInPlace: a task reading a block on the node that holds it
// sees the Arrow column buffers as views of the shared-memory arena, not
// copies (as the object store tests assert for ReadOnlyBytes).
func TestBlocksReadInPlace(t *testing.T) {
	ctx := testCtx(t)
	// 64Ki int64 rows a block: 512 KiB, over the inline limit, so the
	// blocks live in the arena.
	ds, err := data.Range(4<<16, data.Blocks(4)).Materialize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows := takeAll(t, ctx, ds.MapBatches(inArena))
	if len(rows) != 4<<16 {
		t.Fatalf("%d rows", len(rows))
	}
	for i, r := range rows {
		if r["in_arena"] != true {
			t.Fatalf("row %d: the block was copied, not read in place", i)
		}
	}
}

func TestFilesRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	items := make([]data.Row, 3000)
	for i := range items {
		items[i] = data.Row{"i": int64(i), "name": fmt.Sprintf("n%d", i), "f": float64(i) / 4, "ok": i%3 == 0}
	}
	src := data.FromItems(items, data.Blocks(5))

	pq := filepath.Join(dir, "pq")
	if err := src.WriteParquet(ctx, pq); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pq, "_SUCCESS")); err != nil {
		t.Fatal("no _SUCCESS after a complete write")
	}
	got := takeAll(t, ctx, data.ReadParquet([]string{pq}))
	if !reflect.DeepEqual(got, items) {
		t.Fatalf("parquet round trip: %v..., want %v...", head(got), items[:3])
	}

	csvDir := filepath.Join(dir, "csv")
	if err := src.WriteCSV(ctx, csvDir); err != nil {
		t.Fatal(err)
	}
	// Small splits: each file is read by several tasks, cut mid-line.
	got = takeAll(t, ctx, data.ReadCSV([]string{csvDir}, data.SplitBytes(1000)))
	if !reflect.DeepEqual(got, items) {
		t.Fatalf("csv round trip: %v..., want %v...", head(got), items[:3])
	}

	var jl strings.Builder
	for _, r := range items {
		fmt.Fprintf(&jl, `{"i": %d, "name": %q, "f": %v, "ok": %v}`+"\n", r["i"], r["name"], r["f"], r["ok"])
	}
	jf := filepath.Join(dir, "rows.jsonl")
	if err := os.WriteFile(jf, []byte(jl.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got = takeAll(t, ctx, data.ReadJSONL([]string{jf}, data.SplitBytes(777)))
	if len(got) != len(items) {
		t.Fatalf("jsonl: %d rows, want %d", len(got), len(items))
	}
	for i, r := range got {
		if r["i"].(int64) != int64(i) || r["name"] != items[i]["name"] || r["ok"] != items[i]["ok"] || toF(r["f"]) != items[i]["f"] {
			t.Fatalf("jsonl row %d: %v, want %v", i, r, items[i])
		}
	}
	s, err := data.ReadJSONL([]string{jf}).Schema(ctx)
	if err != nil || s.NumFields() != 4 {
		t.Fatalf("schema: %v, %v", s, err)
	}
}

func toF(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case float64:
		return x
	}
	return -1
}

func TestBadInput(t *testing.T) {
	ctx := testCtx(t)
	t.Run("schema mismatch names the column", func(t *testing.T) {
		a := recordOf(t, "x", arrow.PrimitiveTypes.Int64)
		b := recordOf(t, "x", arrow.BinaryTypes.String)
		_, err := data.FromArrow(a, b).Count(ctx)
		if !errors.Is(err, data.ErrSchemaMismatch) || !strings.Contains(err.Error(), `"x"`) {
			t.Fatalf("got %v; want ErrSchemaMismatch naming column x", err)
		}
	})
	t.Run("corrupt parquet names the file", func(t *testing.T) {
		dir := t.TempDir()
		if err := data.Range(100).WriteParquet(ctx, dir); err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(dir, "part-000000.parquet")
		b, _ := os.ReadFile(bad)
		for i := 8; i < len(b)-8 && i < 200; i++ {
			b[i] ^= 0xff
		}
		if err := os.WriteFile(bad, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := data.ReadParquet([]string{dir}).Count(ctx)
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Fatalf("got %v; want an error naming %s", err, bad)
		}
		trunc := filepath.Join(dir, "part-000001.parquet")
		if err := os.WriteFile(trunc, []byte("PAR1 not really"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = data.ReadParquet([]string{trunc}).Count(ctx)
		if !errors.Is(err, data.ErrBadFile) || !strings.Contains(err.Error(), trunc) {
			t.Fatalf("got %v; want ErrBadFile naming %s", err, trunc)
		}
	})
	t.Run("a panicking function names its operator and row; the output is not left complete", func(t *testing.T) {
		dir := t.TempDir()
		err := data.Range(20, data.Blocks(2)).Map(panicAt7).WriteParquet(ctx, dir)
		if !errors.Is(err, ray.ErrTaskPanicked) && !errors.Is(err, data.ErrUserFunction) && !strings.Contains(err.Error(), "panicked") {
			t.Fatalf("got %v; want a panic error", err)
		}
		if !strings.Contains(err.Error(), "Map(test.panicAt7)") || !strings.Contains(err.Error(), "row 7") {
			t.Fatalf("got %v; want the operator and row 7 named", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "_SUCCESS")); !os.IsNotExist(err) {
			t.Fatalf("a failed write left _SUCCESS: %v", err)
		}
	})
	t.Run("unknown column", func(t *testing.T) {
		_, err := data.Range(10).Select("nope").Count(ctx)
		if !strings.Contains(err.Error(), `"nope"`) {
			t.Fatalf("got %v", err)
		}
	})
}

func recordOf(t *testing.T, name string, typ arrow.DataType) arrow.Record {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema([]arrow.Field{{Name: name, Type: typ}}, nil))
	switch fb := b.Field(0).(type) {
	case *array.Int64Builder:
		fb.Append(1)
	case *array.StringBuilder:
		fb.Append("a")
	}
	return b.NewRecord()
}
