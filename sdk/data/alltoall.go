package data

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/manta-ray/manta/sdk/ray"
)

// All-to-all steps run as a map stage and a reduce stage over the
// materialized input: each map task cuts its block into one piece per
// output partition (a generator task: each piece is its own object, owned
// by the driver, and spills like any other when the store is full), and
// each reduce task fetches its piece of every block and sorts, shuffles
// or aggregates them.

// partKind is how a map task assigns rows to partitions.
type partKind uint8

const (
	partRandom partKind = iota + 1
	partRange
)

type partSpec struct {
	Kind   partKind
	N      int
	Key    string
	Desc   bool
	Bounds []byte // partRange: a block of the N-1 key boundaries
	Seed   uint64
	Index  int64
}

type reduceKind uint8

const (
	reduceShuffle reduceKind = iota + 1
	reduceSort
	reduceAggregate
)

type reduceSpec struct {
	Kind  reduceKind
	Key   string
	Desc  bool
	Seed  uint64
	Index int64
	Aggs  []Agg
	Parts []ray.ObjectRef[[]byte]
}

var (
	partitionTask = ray.Gen2("data.Partition", func(ctx context.Context, s partSpec, in ray.ReadOnlyBytes, yield func([]byte) error) error {
		rec, err := decodeBlock(in)
		if err != nil {
			return err
		}
		parts := make([][]int, s.N)
		switch s.Kind {
		case partRandom:
			r := rand.New(rand.NewPCG(s.Seed, uint64(s.Index)))
			for i := 0; i < int(rec.NumRows()); i++ {
				p := r.IntN(s.N)
				parts[p] = append(parts[p], i)
			}
		case partRange:
			col, err := keyColumn(rec, s.Key)
			if err != nil {
				return err
			}
			b, err := decodeBlock(s.Bounds)
			if err != nil {
				return err
			}
			bounds := keyValues(b.Column(0))
			ints, typed := col.(*array.Int64)
			var intBounds []int64
			if typed {
				// All bounds are int64 (or null, which sorts first).
				for _, v := range bounds {
					if v == nil {
						typed = false
						break
					}
					intBounds = append(intBounds, v.(int64))
				}
			}
			for i := 0; i < col.Len(); i++ {
				var p int
				if typed && ints.IsValid(i) {
					v := ints.Value(i)
					p = sort.Search(len(intBounds), func(j int) bool { return intBounds[j] > v })
				} else {
					p = rangeOf(bounds, valueAt(col, i))
				}
				if s.Desc {
					p = s.N - 1 - p
				}
				parts[p] = append(parts[p], i)
			}
		}
		for _, idx := range parts {
			piece, err := takeRows(rec, idx)
			if err != nil {
				return err
			}
			b, err := encodeBlock(piece)
			if err != nil {
				return err
			}
			if err := yield(b); err != nil {
				return err
			}
		}
		return nil
	})
	reduceTask = ray.Func1x2("data.Reduce", func(ctx context.Context, s reduceSpec) ([]byte, blockMeta, error) {
		var recs []arrow.Record
		for _, p := range s.Parts {
			b, err := ray.Get(ctx, p)
			if err != nil {
				return nil, blockMeta{}, err
			}
			rec, err := decodeBlock(b)
			if err != nil {
				return nil, blockMeta{}, err
			}
			recs = append(recs, rec)
		}
		rec, err := concatRecords(recs[0].Schema(), recs)
		if err != nil {
			return nil, blockMeta{}, err
		}
		switch s.Kind {
		case reduceShuffle:
			r := rand.New(rand.NewPCG(s.Seed, uint64(s.Index)+1<<32))
			rec, err = takeRows(rec, r.Perm(int(rec.NumRows())))
		case reduceSort:
			rec, err = sortRecord(rec, s.Key, s.Desc)
		case reduceAggregate:
			rec, err = aggregate(rec, s.Key, s.Aggs)
		}
		if err != nil {
			return nil, blockMeta{}, err
		}
		return finish(rec)
	})
	// sampleTask picks up to 64 evenly spaced key values of a block.
	sampleTask = ray.Func2("data.Sample", func(ctx context.Context, key string, in ray.ReadOnlyBytes) ([]byte, error) {
		rec, err := decodeBlock(in)
		if err != nil {
			return nil, err
		}
		col, err := keyColumn(rec, key)
		if err != nil {
			return nil, err
		}
		n := int(rec.NumRows())
		var idx []int
		for i := 0; i < min(n, 64); i++ {
			idx = append(idx, i*n/min(n, 64))
		}
		one := array.NewRecord(arrow.NewSchema([]arrow.Field{{Name: key, Type: col.DataType(), Nullable: true}}, nil), []arrow.Array{col}, int64(n))
		s, err := takeRows(one, idx)
		if err != nil {
			return nil, err
		}
		return encodeBlock(s)
	})
	// zipTask puts the columns of rows of other blocks beside a block's.
	zipTask = ray.Func2x2("data.Zip", func(ctx context.Context, right []slice, in ray.ReadOnlyBytes) ([]byte, blockMeta, error) {
		left, err := decodeBlock(in)
		if err != nil {
			return nil, blockMeta{}, err
		}
		r, err := gather(ctx, right)
		if err != nil {
			return nil, blockMeta{}, err
		}
		if r.NumRows() != left.NumRows() {
			return nil, blockMeta{}, fmt.Errorf("%w: zip of %d rows with %d", ErrInvalidArgument, left.NumRows(), r.NumRows())
		}
		fields := append([]arrow.Field(nil), left.Schema().Fields()...)
		cols := append([]arrow.Array(nil), left.Columns()...)
		for i, f := range r.Schema().Fields() {
			for {
				if _, dup := left.Schema().FieldsByName(f.Name); !dup {
					break
				}
				f.Name += "_1"
			}
			fields = append(fields, f)
			cols = append(cols, r.Column(i))
		}
		return finish(array.NewRecord(arrow.NewSchema(fields, nil), cols, left.NumRows()))
	})
)

func sortRecord(rec arrow.Record, key string, desc bool) (arrow.Record, error) {
	col, err := keyColumn(rec, key)
	if err != nil {
		return nil, err
	}
	return takeRows(rec, sortIndices(col, desc))
}

// shuffle runs the map stage (partition) and the reduce stage.
func (x *execution) shuffle(ctx context.Context, in []blockRef, p partSpec, r reduceSpec) ([]blockRef, error) {
	if len(in) == 0 {
		return nil, nil
	}
	gens := make([]*ray.ObjectRefGenerator[[]byte], len(in))
	for i, b := range in {
		ps := p
		ps.Index = int64(i)
		gens[i] = partitionTask.Remote(ctx, ray.Val(ps), ray.ReadOnly(b.Ref))
	}
	pieces := make([][]ray.ObjectRef[[]byte], p.N) // by output partition
	for _, g := range gens {
		j := 0
		for ref, err := range g.All(ctx) {
			if err != nil {
				return nil, err
			}
			if j >= p.N {
				return nil, fmt.Errorf("%w: a partition task yielded more than %d pieces", ErrBadBlock, p.N)
			}
			pieces[j] = append(pieces[j], ref)
			j++
		}
	}
	type pending struct {
		blk  ray.ObjectRef[[]byte]
		meta ray.ObjectRef[blockMeta]
	}
	outs := make([]pending, p.N)
	for j := range outs {
		rs := r
		rs.Index = int64(j)
		rs.Parts = pieces[j]
		outs[j].blk, outs[j].meta = reduceTask.Remote(ctx, ray.Val(rs))
	}
	blocks := make([]blockRef, p.N)
	for j, o := range outs {
		m, err := ray.Get(ctx, o.meta)
		if err != nil {
			return nil, err
		}
		blocks[j] = blockRef{Ref: o.blk, Meta: m}
		for _, piece := range pieces[j] {
			piece.Release()
		}
	}
	return blocks, nil
}

// partitions is how many outputs an all-to-all step makes of in: enough
// for every CPU to reduce one, and for outputs of at most about 128 MiB,
// but no more than the input blocks (the pieces, map tasks times
// partitions, are objects of their own: too many tiny ones cost more than
// they spread).
func (x *execution) partitions(in []blockRef) int {
	var total int64
	for _, b := range in {
		total += b.Meta.Bytes
	}
	return max(1, min(len(in), max(x.conc, int((total+(128<<20)-1)/(128<<20)))))
}

// RandomShuffle shuffles the rows (seeded: the same seed and input give
// the same order).
func (d *Dataset) RandomShuffle(seed uint64) *Dataset {
	return d.with(op{kind: opAll, all: &allToAll{label: fmt.Sprintf("RandomShuffle(%d)", seed),
		run: func(ctx context.Context, x *execution, in []blockRef) ([]blockRef, error) {
			return x.shuffle(ctx, in, partSpec{Kind: partRandom, N: x.partitions(in), Seed: seed}, reduceSpec{Kind: reduceShuffle, Seed: seed})
		}}})
}

// Sort orders the rows by the key column (stable; nulls first ascending).
func (d *Dataset) Sort(key string, descending bool) *Dataset {
	return d.with(op{kind: opAll, all: &allToAll{label: fmt.Sprintf("Sort(%s)", key),
		run: func(ctx context.Context, x *execution, in []blockRef) ([]blockRef, error) {
			return x.rangeShuffle(ctx, in, key, descending, reduceSpec{Kind: reduceSort, Key: key, Desc: descending})
		}}})
}

// rangeShuffle partitions by key ranges sampled from the input, so the
// reduce outputs are in key order.
func (x *execution) rangeShuffle(ctx context.Context, in []blockRef, key string, desc bool, r reduceSpec) ([]blockRef, error) {
	if len(in) == 0 {
		return nil, nil
	}
	samples := make([]ray.ObjectRef[[]byte], len(in))
	for i, b := range in {
		samples[i] = sampleTask.Remote(ctx, ray.Val(key), ray.ReadOnly(b.Ref))
	}
	var recs []arrow.Record
	for _, s := range samples {
		b, err := ray.Get(ctx, s)
		if err != nil {
			return nil, err
		}
		rec, err := decodeBlock(b)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	all, err := concatRecords(recs[0].Schema(), recs)
	if err != nil {
		return nil, err
	}
	sorted, err := sortRecord(all, key, false)
	if err != nil {
		return nil, err
	}
	n := x.partitions(in)
	var idx []int
	for i := 1; i < n && sorted.NumRows() > 0; i++ {
		idx = append(idx, i*int(sorted.NumRows())/n)
	}
	bounds, err := takeRows(sorted, idx)
	if err != nil {
		return nil, err
	}
	bb, err := encodeBlock(bounds)
	if err != nil {
		return nil, err
	}
	return x.shuffle(ctx, in, partSpec{Kind: partRange, N: n, Key: key, Desc: desc, Bounds: bb}, r)
}

// Repartition makes n blocks of (nearly) equal rows, keeping row order.
func (d *Dataset) Repartition(n int) *Dataset {
	return d.with(op{kind: opAll, all: &allToAll{label: fmt.Sprintf("Repartition(%d)", n),
		run: func(ctx context.Context, x *execution, in []blockRef) ([]blockRef, error) {
			if n <= 0 {
				return nil, fmt.Errorf("%w: Repartition(%d)", ErrInvalidArgument, n)
			}
			var outs []pendingBlock
			for _, parts := range cutRows(in, n) {
				blk, meta := gatherTask.Remote(ctx, ray.Val(parts))
				outs = append(outs, pendingBlock{blk, meta})
			}
			return waitBlocks(ctx, outs)
		}}})
}

type pendingBlock struct {
	blk  ray.ObjectRef[[]byte]
	meta ray.ObjectRef[blockMeta]
}

func waitBlocks(ctx context.Context, ps []pendingBlock) ([]blockRef, error) {
	out := make([]blockRef, len(ps))
	for i, p := range ps {
		m, err := ray.Get(ctx, p.meta)
		if err != nil {
			return nil, err
		}
		out[i] = blockRef{Ref: p.blk, Meta: m}
	}
	return out, nil
}

// cutRows cuts the rows of blocks into n runs of (nearly) equal rows, as
// row ranges of the blocks.
func cutRows(in []blockRef, n int) [][]slice {
	var total int64
	for _, b := range in {
		total += b.Meta.Rows
	}
	out := make([][]slice, n)
	var off int64 // rows before block bi
	bi := 0
	for i := 0; i < n; i++ {
		lo, hi := total*int64(i)/int64(n), total*int64(i+1)/int64(n)
		for lo < hi {
			for off+in[bi].Meta.Rows <= lo {
				off += in[bi].Meta.Rows
				bi++
			}
			end := min(hi, off+in[bi].Meta.Rows)
			out[i] = append(out[i], slice{Ref: in[bi].Ref, Lo: lo - off, Hi: end - off})
			lo = end
		}
	}
	return out
}

// Union is d's rows followed by the others'. They must share a schema.
func (d *Dataset) Union(others ...*Dataset) *Dataset {
	return d.with(op{kind: opAll, all: &allToAll{label: fmt.Sprintf("Union(%d)", len(others)+1), passThrough: true,
		run: func(ctx context.Context, x *execution, in []blockRef) ([]blockRef, error) {
			out := append([]blockRef(nil), in...)
			for _, o := range others {
				m, err := o.Materialize(ctx)
				if err != nil {
					return nil, err
				}
				out = append(out, m.src.blocks...)
			}
			return out, nil
		}}})
}

// Zip puts other's columns beside d's, row by row (a name d has too gets
// a "_1" suffix). Both must have the same number of rows.
func (d *Dataset) Zip(other *Dataset) *Dataset {
	return d.with(op{kind: opAll, all: &allToAll{label: "Zip",
		run: func(ctx context.Context, x *execution, in []blockRef) ([]blockRef, error) {
			m, err := other.Materialize(ctx)
			if err != nil {
				return nil, err
			}
			right := m.src.blocks
			var l, r int64
			for _, b := range in {
				l += b.Meta.Rows
			}
			for _, b := range right {
				r += b.Meta.Rows
			}
			if l != r {
				return nil, fmt.Errorf("%w: Zip of %d rows with %d rows", ErrInvalidArgument, l, r)
			}
			// Cut the right side where the left's blocks end.
			var outs []pendingBlock
			var off int64
			for _, b := range in {
				parts := rowRange(right, off, off+b.Meta.Rows)
				off += b.Meta.Rows
				blk, meta := zipTask.Remote(ctx, ray.Val(parts), ray.ReadOnly(b.Ref))
				outs = append(outs, pendingBlock{blk, meta})
			}
			return waitBlocks(ctx, outs)
		}}})
}

// rowRange is rows [lo, hi) of blocks, as row ranges of them.
func rowRange(blocks []blockRef, lo, hi int64) []slice {
	var out []slice
	var off int64
	for _, b := range blocks {
		s, e := max(lo, off), min(hi, off+b.Meta.Rows)
		if s < e {
			out = append(out, slice{Ref: b.Ref, Lo: s - off, Hi: e - off})
		}
		off += b.Meta.Rows
	}
	return out
}

// Split runs the plan and divides its rows into n datasets of (nearly)
// equal rows, in order, for n consumers (say, n training workers).
func (d *Dataset) Split(ctx context.Context, n int) ([]*Dataset, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: Split(%d)", ErrInvalidArgument, n)
	}
	m, err := d.Materialize(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Dataset, n)
	for i, parts := range cutRows(m.src.blocks, n) {
		var blocks []blockRef
		var pend []pendingBlock
		for _, p := range parts {
			blk, meta := gatherTask.Remote(ctx, ray.Val([]slice{p}))
			pend = append(pend, pendingBlock{blk, meta})
		}
		blocks, err = waitBlocks(ctx, pend)
		if err != nil {
			return nil, err
		}
		if blocks == nil {
			blocks = []blockRef{}
		}
		out[i] = newDataset(&source{label: fmt.Sprintf("Split(%d/%d)", i+1, n), blocks: blocks})
		out[i].budget, out[i].prog = d.budget, d.prog
	}
	return out, nil
}

// Agg is an aggregation of GroupBy: Count, Sum, Mean, Min, Max, Std.
type Agg struct {
	Fn  string
	Col string
}

// Count counts a group's rows ("count()").
func Count() Agg { return Agg{Fn: "count"} }

// Sum adds a column ("sum(col)"; int64 for an integer column).
func Sum(col string) Agg { return Agg{Fn: "sum", Col: col} }

// Mean averages a column ("mean(col)"; nulls skipped).
func Mean(col string) Agg { return Agg{Fn: "mean", Col: col} }

// Min is a column's least value ("min(col)").
func Min(col string) Agg { return Agg{Fn: "min", Col: col} }

// Max is a column's greatest value ("max(col)").
func Max(col string) Agg { return Agg{Fn: "max", Col: col} }

// Std is a column's sample standard deviation ("std(col)", ddof 1).
func Std(col string) Agg { return Agg{Fn: "std", Col: col} }

func (a Agg) name() string { return a.Fn + "(" + a.Col + ")" }

// Grouped is a dataset grouped by a key column.
type Grouped struct {
	d   *Dataset
	key string
}

// GroupBy groups the rows by the key column.
func (d *Dataset) GroupBy(key string) *Grouped { return &Grouped{d: d, key: key} }

// Aggregate is a row per group, in key order: the key and one column per
// aggregation.
func (g *Grouped) Aggregate(aggs ...Agg) *Dataset {
	key := g.key
	return g.d.with(op{kind: opAll, all: &allToAll{label: fmt.Sprintf("GroupBy(%s).Aggregate", key),
		run: func(ctx context.Context, x *execution, in []blockRef) ([]blockRef, error) {
			for _, a := range aggs {
				switch a.Fn {
				case "count", "sum", "mean", "min", "max", "std":
				default:
					return nil, fmt.Errorf("%w: aggregation %q", ErrInvalidArgument, a.Fn)
				}
			}
			return x.rangeShuffle(ctx, in, key, false, reduceSpec{Kind: reduceAggregate, Key: key, Aggs: aggs})
		}}})
}

// aggregate is a row per key of rec (a partition holds whole groups).
func aggregate(rec arrow.Record, key string, aggs []Agg) (arrow.Record, error) {
	col, err := keyColumn(rec, key)
	if err != nil {
		return nil, err
	}
	keys := keyValues(col)
	order := sortedIndices(keys, false)
	var starts []int // runs of equal keys in order
	for i, j := range order {
		if i == 0 || compareValues(keys[order[i-1]], keys[j]) != 0 {
			starts = append(starts, i)
		}
	}
	firsts := make([]int, len(starts))
	for i, s := range starts {
		firsts[i] = order[s]
	}
	keyRec := array.NewRecord(arrow.NewSchema([]arrow.Field{rec.Schema().Field(rec.Schema().FieldIndices(key)[0])}, nil), []arrow.Array{col}, rec.NumRows())
	out, err := takeRows(keyRec, firsts)
	if err != nil {
		return nil, err
	}
	fields := append([]arrow.Field(nil), out.Schema().Fields()...)
	cols := append([]arrow.Array(nil), out.Columns()...)
	for _, a := range aggs {
		var vals []any
		isInt := false
		if a.Fn != "count" {
			c, err := keyColumn(rec, a.Col)
			if err != nil {
				return nil, err
			}
			vals = keyValues(c)
			isInt = arrow.IsInteger(c.DataType().ID())
		}
		typ := arrow.DataType(arrow.PrimitiveTypes.Float64)
		if a.Fn == "count" || (isInt && (a.Fn == "sum" || a.Fn == "min" || a.Fn == "max")) {
			typ = arrow.PrimitiveTypes.Int64
		}
		b := array.NewBuilder(memory.DefaultAllocator, typ)
		for g, s := range starts {
			e := len(order)
			if g+1 < len(starts) {
				e = starts[g+1]
			}
			v := aggOf(a.Fn, vals, order[s:e], isInt)
			if err := appendValue(b, v); err != nil {
				return nil, err
			}
		}
		fields = append(fields, arrow.Field{Name: a.name(), Type: typ, Nullable: true})
		cols = append(cols, b.NewArray())
		b.Release()
	}
	return array.NewRecord(arrow.NewSchema(fields, nil), cols, int64(len(starts))), nil
}

// aggOf computes one aggregation over a group's rows (nulls skipped).
func aggOf(fn string, vals []any, rows []int, isInt bool) any {
	if fn == "count" {
		return int64(len(rows))
	}
	var n int64
	var isum int64
	var sum, sumsq float64
	var best any
	for _, r := range rows {
		v := vals[r]
		if v == nil {
			continue
		}
		f := toFloat(v)
		n++
		sum += f
		sumsq += f * f
		if i, ok := v.(int64); ok {
			isum += i
		}
		switch fn {
		case "min":
			if best == nil || compareValues(v, best) < 0 {
				best = v
			}
		case "max":
			if best == nil || compareValues(v, best) > 0 {
				best = v
			}
		}
	}
	switch fn {
	case "sum":
		if isInt {
			return isum
		}
		return sum
	case "mean":
		if n == 0 {
			return nil
		}
		return sum / float64(n)
	case "std":
		if n < 2 {
			return nil
		}
		mean := sum / float64(n)
		v := (sumsq - float64(n)*mean*mean) / float64(n-1)
		return math.Sqrt(max(v, 0))
	case "min", "max":
		if best != nil && !isInt {
			return toFloat(best)
		}
		return best
	}
	return nil
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case float64:
		return x
	}
	return 0
}
