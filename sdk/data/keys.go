package data

import (
	"cmp"
	"fmt"
	"slices"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// compareValues orders Row values of a key column: nulls first, numbers
// by value (ints and floats compare as numbers), strings and bytes
// lexically, false before true.
func compareValues(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	switch x := a.(type) {
	case int64:
		switch y := b.(type) {
		case int64:
			return cmp.Compare(x, y)
		case float64:
			return cmp.Compare(float64(x), y)
		}
	case float64:
		switch y := b.(type) {
		case float64:
			return cmp.Compare(x, y)
		case int64:
			return cmp.Compare(x, float64(y))
		}
	case string:
		if y, ok := b.(string); ok {
			return cmp.Compare(x, y)
		}
	case []byte:
		if y, ok := b.([]byte); ok {
			return cmp.Compare(string(x), string(y))
		}
	case bool:
		if y, ok := b.(bool); ok {
			switch {
			case x == y:
				return 0
			case !x:
				return -1
			}
			return 1
		}
	}
	return cmp.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

// keyColumn is a record's key column, or an error naming the columns.
func keyColumn(rec arrow.Record, key string) (arrow.Array, error) {
	idx := rec.Schema().FieldIndices(key)
	if len(idx) == 0 {
		return nil, fmt.Errorf("%w: no column %q (have %v)", ErrInvalidArgument, key, fieldNames(rec.Schema()))
	}
	return rec.Column(idx[0]), nil
}

// keyValues reads a key column as values once, so sorting compares Go
// values instead of going through the array per comparison.
func keyValues(col arrow.Array) []any {
	out := make([]any, col.Len())
	for i := range out {
		out[i] = valueAt(col, i)
	}
	return out
}

// sortedIndices is the order of rows by key (stable; desc reverses).
func sortedIndices(keys []any, desc bool) []int {
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		c := compareValues(keys[idx[a]], keys[idx[b]])
		if desc {
			return c > 0
		}
		return c < 0
	})
	return idx
}

// sortIndices is the order of a key column's rows (stable; nulls first
// ascending), typed for int64, float64 and string columns: boxing every
// value made a sort of millions of rows spend its time allocating.
func sortIndices(col arrow.Array, desc bool) []int {
	idx := make([]int, col.Len())
	for i := range idx {
		idx[i] = i
	}
	var less func(a, b int) int
	nulls := func(a, b int) (int, bool) {
		na, nb := col.IsNull(a), col.IsNull(b)
		switch {
		case na && nb:
			return 0, true
		case na:
			return -1, true
		case nb:
			return 1, true
		}
		return 0, false
	}
	switch c := col.(type) {
	case *array.Int64:
		if c.NullN() == 0 {
			return sortInts(c.Int64Values(), desc)
		}
		v := c.Int64Values()
		less = func(a, b int) int { return cmp.Compare(v[a], v[b]) }
	case *array.Float64:
		v := c.Float64Values()
		less = func(a, b int) int { return cmp.Compare(v[a], v[b]) }
	case *array.String:
		less = func(a, b int) int { return cmp.Compare(c.Value(a), c.Value(b)) }
	default:
		return sortedIndices(keyValues(col), desc)
	}
	hasNulls := col.NullN() > 0
	slices.SortStableFunc(idx, func(a, b int) int {
		r := 0
		if hasNulls {
			if n, ok := nulls(a, b); ok {
				r = n
			} else {
				r = less(a, b)
			}
		} else {
			r = less(a, b)
		}
		if desc {
			return -r
		}
		return r
	})
	return idx
}

// sortInts orders int64 keys (stable: ties keep row order) by sorting
// (key, row) pairs in place, several times faster than sorting row
// indices through a comparison that looks the keys up.
func sortInts(v []int64, desc bool) []int {
	type pair struct {
		k int64
		i int
	}
	ps := make([]pair, len(v))
	for i, k := range v {
		ps[i] = pair{k, i}
	}
	slices.SortFunc(ps, func(a, b pair) int {
		if c := cmp.Compare(a.k, b.k); c != 0 {
			if desc {
				return -c
			}
			return c
		}
		return cmp.Compare(a.i, b.i)
	})
	idx := make([]int, len(v))
	for j, p := range ps {
		idx[j] = p.i
	}
	return idx
}

// rangeOf is the partition of a key among sorted boundaries: the number
// of boundaries not greater than it (n boundaries make n+1 ranges).
func rangeOf(bounds []any, v any) int {
	return sort.Search(len(bounds), func(i int) bool { return compareValues(bounds[i], v) > 0 })
}
