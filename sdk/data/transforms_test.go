package data_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/manta-ray/manta/sdk/data"
	"github.com/manta-ray/manta/sdk/ray"
)

// The transforms are checked against a single-process reference (plain
// Go over the same rows) on generated data of random sizes and block
// counts.

var (
	dupOdd = data.FlatMapFn("test.dupOdd", func(_ context.Context, r data.Row) ([]data.Row, error) {
		if r["id"].(int64)%2 == 1 {
			return []data.Row{r, r}, nil
		}
		return []data.Row{r}, nil
	})
	squareCol = data.ColumnFn("test.squareCol", func(_ context.Context, b arrow.Record) (arrow.Array, error) {
		in := b.Column(0).(*array.Int64)
		bld := array.NewInt64Builder(memory.DefaultAllocator)
		for _, v := range in.Int64Values() {
			bld.Append(v * v)
		}
		return bld.NewArray(), nil
	})
	// plusTable is a stateful batch function: each actor builds its
	// lookup table once and counts how many times it was built.
	plusTable = data.MapBatchesClass("test.plusTable", func(context.Context) (func(context.Context, arrow.Record) (arrow.Record, error), error) {
		table := make(map[int64]int64)
		for i := int64(0); i < 1000; i++ {
			table[i] = i * 3
		}
		return func(_ context.Context, b arrow.Record) (arrow.Record, error) {
			in := b.Column(0).(*array.Int64)
			bld := array.NewInt64Builder(memory.DefaultAllocator)
			for _, v := range in.Int64Values() {
				bld.Append(table[v%1000])
			}
			schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "looked", Type: arrow.PrimitiveTypes.Int64}}, nil)
			return array.NewRecord(schema, []arrow.Array{in, bld.NewArray()}, b.NumRows()), nil
		}, nil
	})
)

func takeAll(t *testing.T, ctx context.Context, ds *data.Dataset) []data.Row {
	t.Helper()
	rows, err := ds.TakeAll(ctx)
	if err != nil {
		t.Fatalf("%s: %v", ds, err)
	}
	return rows
}

func ids(rows []data.Row, col string) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r[col].(int64)
	}
	return out
}

func TestMapLikeTransformsMatchReference(t *testing.T) {
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 4; trial++ {
		n := int64(rng.IntN(3000))
		blocks := 1 + rng.IntN(9)
		t.Run(fmt.Sprintf("n=%d,blocks=%d", n, blocks), func(t *testing.T) {
			// Reference.
			var want []data.Row
			for i := int64(0); i < n; i++ {
				if i%2 != 0 {
					continue
				}
				r := data.Row{"id": i, "x": i + 10}
				want = append(want, r)
			}
			ds := data.Range(n, data.Blocks(blocks)).Filter(isEven).Map(addTen)
			got := takeAll(t, ctx, ds)
			if len(want) == 0 {
				want = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Filter+Map: %d rows, want %d (first %v)", len(got), len(want), head(got))
			}

			var wantFlat []int64
			for i := int64(0); i < n; i++ {
				wantFlat = append(wantFlat, i)
				if i%2 == 1 {
					wantFlat = append(wantFlat, i)
				}
			}
			flat := takeAll(t, ctx, data.Range(n, data.Blocks(blocks)).FlatMap(dupOdd))
			if g := ids(flat, "id"); !reflect.DeepEqual(g, wantFlat) && !(len(g) == 0 && len(wantFlat) == 0) {
				t.Fatalf("FlatMap: %v, want %v", head(flat), wantFlat[:min(5, len(wantFlat))])
			}

			bs := 1 + rng.IntN(500)
			cols := takeAll(t, ctx, data.Range(n, data.Blocks(blocks)).MapBatches(doubleID, data.BatchSize(bs)).
				AddColumn("sq", squareCol).Map(addTen).Select("x", "id").DropColumns("id"))
			for i, r := range cols {
				if len(r) != 1 || r["x"].(int64) != int64(i)*2+10 {
					t.Fatalf("MapBatches+AddColumn+Map+Select+Drop: row %d is %v", i, r)
				}
			}
			if int64(len(cols)) != n {
				t.Fatalf("MapBatches chain: %d rows, want %d", len(cols), n)
			}

			lim := rng.Int64N(n + 10)
			limited := takeAll(t, ctx, data.Range(n, data.Blocks(blocks)).Limit(lim).Map(addTen))
			if int64(len(limited)) != min(lim, n) {
				t.Fatalf("Limit(%d) of %d: %d rows", lim, n, len(limited))
			}
			for i, r := range limited {
				if r["id"].(int64) != int64(i) {
					t.Fatalf("Limit: row %d is %v", i, r)
				}
			}
			c, err := data.Range(n, data.Blocks(blocks)).Filter(isEven).Count(ctx)
			if err != nil || c != (n+1)/2 {
				t.Fatalf("Count: %d, %v; want %d", c, err, (n+1)/2)
			}
		})
	}
}

func head(rows []data.Row) []data.Row { return rows[:min(len(rows), 5)] }

func TestActorPoolMapBatches(t *testing.T) {
	ctx := testCtx(t)
	ds := data.Range(5000, data.Blocks(10)).MapBatches(plusTable, data.Concurrency(2), data.BatchSize(300)).Filter(isEven)
	rows := takeAll(t, ctx, ds)
	if len(rows) != 2500 {
		t.Fatalf("%d rows, want 2500", len(rows))
	}
	for _, r := range rows {
		if id := r["id"].(int64); r["looked"].(int64) != (id%1000)*3 {
			t.Fatalf("row %v: looked up wrong", r)
		}
	}
}

// randomItems is n rows with a key of few distinct values, a float and a
// string payload.
func randomItems(rng *rand.Rand, n int) []data.Row {
	items := make([]data.Row, n)
	for i := range items {
		items[i] = data.Row{"k": rng.Int64N(50) - 10, "v": rng.Float64() * 100, "s": fmt.Sprintf("row-%d", i), "i": int64(i)}
	}
	return items
}

func TestAllToAllMatchReference(t *testing.T) {
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 3; trial++ {
		n := 1 + rng.IntN(4000)
		blocks := 1 + rng.IntN(8)
		items := randomItems(rng, n)
		ds := data.FromItems(items, data.Blocks(blocks))
		t.Run(fmt.Sprintf("n=%d,blocks=%d", n, blocks), func(t *testing.T) {
			for _, desc := range []bool{false, true} {
				got := takeAll(t, ctx, ds.Sort("k", desc))
				want := append([]data.Row(nil), items...)
				sort.SliceStable(want, func(a, b int) bool {
					if desc {
						return want[a]["k"].(int64) > want[b]["k"].(int64)
					}
					return want[a]["k"].(int64) < want[b]["k"].(int64)
				})
				if !reflect.DeepEqual(ids(got, "k"), ids(want, "k")) || !sameRows(got, want) {
					t.Fatalf("Sort(desc=%v): keys differ from the reference", desc)
				}
			}

			sh := takeAll(t, ctx, ds.RandomShuffle(7))
			sh2 := takeAll(t, ctx, ds.RandomShuffle(7))
			if !sameRows(sh, items) || !reflect.DeepEqual(ids(sh, "i"), ids(sh2, "i")) {
				t.Fatalf("RandomShuffle: not a seeded permutation of the input")
			}
			if n > 50 && reflect.DeepEqual(ids(sh, "i"), ids(items, "i")) {
				t.Fatalf("RandomShuffle left %d rows in order", n)
			}

			agg := takeAll(t, ctx, ds.GroupBy("k").Aggregate(data.Count(), data.Sum("i"), data.Mean("v"), data.Min("v"), data.Max("i"), data.Std("v")))
			ref := map[int64][]data.Row{}
			for _, r := range items {
				ref[r["k"].(int64)] = append(ref[r["k"].(int64)], r)
			}
			if len(agg) != len(ref) {
				t.Fatalf("GroupBy: %d groups, want %d", len(agg), len(ref))
			}
			for i, g := range agg {
				k := g["k"].(int64)
				if i > 0 && agg[i-1]["k"].(int64) >= k {
					t.Fatalf("GroupBy: groups not in key order at %d", i)
				}
				rows := ref[k]
				var sum, maxI int64
				var vs []float64
				minV := rows[0]["v"].(float64)
				for _, r := range rows {
					sum += r["i"].(int64)
					maxI = max(maxI, r["i"].(int64))
					vs = append(vs, r["v"].(float64))
					minV = min(minV, r["v"].(float64))
				}
				mean, std := meanStd(vs)
				if g["count()"].(int64) != int64(len(rows)) || g["sum(i)"].(int64) != sum || g["max(i)"].(int64) != maxI ||
					!near(g["mean(v)"].(float64), mean) || g["min(v)"].(float64) != minV || (len(vs) > 1 && !near(g["std(v)"].(float64), std)) {
					t.Fatalf("GroupBy: group %d is %v; want count %d sum %d max %d mean %v min %v std %v", k, g, len(rows), sum, maxI, mean, minV, std)
				}
			}

			parts := 1 + rng.IntN(6)
			rep := ds.Repartition(parts)
			if got := takeAll(t, ctx, rep); !reflect.DeepEqual(ids(got, "i"), ids(items, "i")) {
				t.Fatalf("Repartition(%d) changed the rows or their order", parts)
			}

			u := takeAll(t, ctx, ds.Union(data.Range(10)))
			if len(u) != n+10 {
				t.Fatalf("Union: %d rows, want %d", len(u), n+10)
			}

			z := takeAll(t, ctx, ds.Select("i").Zip(data.Range(int64(n), data.Blocks(1+rng.IntN(5)))))
			for j, r := range z {
				if r["i"].(int64) != int64(j) || r["id"].(int64) != int64(j) {
					t.Fatalf("Zip: row %d is %v", j, r)
				}
			}

			k := 1 + rng.IntN(4)
			splits, err := ds.Split(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			var all []data.Row
			for j, s := range splits {
				part := takeAll(t, ctx, s)
				if lo, hi := n*j/k, n*(j+1)/k; len(part) != hi-lo {
					t.Fatalf("Split(%d): part %d has %d rows, want %d", k, j, len(part), hi-lo)
				}
				all = append(all, part...)
			}
			if !reflect.DeepEqual(ids(all, "i"), ids(items, "i")) {
				t.Fatalf("Split(%d): the parts are not the rows in order", k)
			}
		})
	}
}

// sameRows says whether a and b hold the same rows, in any order.
func sameRows(a, b []data.Row) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(r data.Row) string { return fmt.Sprint(r["i"], r["k"], r["s"], r["v"]) }
	count := map[string]int{}
	for _, r := range a {
		count[key(r)]++
	}
	for _, r := range b {
		count[key(r)]--
	}
	for _, c := range count {
		if c != 0 {
			return false
		}
	}
	return true
}

func meanStd(vs []float64) (float64, float64) {
	var s float64
	for _, v := range vs {
		s += v
	}
	m := s / float64(len(vs))
	var ss float64
	for _, v := range vs {
		ss += (v - m) * (v - m)
	}
	if len(vs) < 2 {
		return m, 0
	}
	return m, sqrt(ss / float64(len(vs)-1))
}

func sqrt(x float64) float64 {
	z := x
	for i := 0; i < 100 && z > 0; i++ {
		z -= (z*z - x) / (2 * z)
	}
	return z
}

func near(a, b float64) bool {
	d := a - b
	return d < 1e-6*(1+abs(b)) && -d < 1e-6*(1+abs(b))
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

var _ = strings.Contains
var _ = ray.InArena
