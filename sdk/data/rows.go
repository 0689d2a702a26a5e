package data

import (
	"fmt"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Row is one row of a dataset by column name, as row functions (Map,
// Filter, FlatMap) and Iter see it. Values are Go values of the column's
// Arrow type: int64 (any integer column), float64 (any float column),
// string, []byte, bool, or nil for a null.
type Row map[string]any

// valueAt is column arr's value at row i as a Row value.
func valueAt(arr arrow.Array, i int) any {
	if arr.IsNull(i) {
		return nil
	}
	switch a := arr.(type) {
	case *array.Int64:
		return a.Value(i)
	case *array.Int32:
		return int64(a.Value(i))
	case *array.Int16:
		return int64(a.Value(i))
	case *array.Int8:
		return int64(a.Value(i))
	case *array.Uint64:
		return int64(a.Value(i))
	case *array.Uint32:
		return int64(a.Value(i))
	case *array.Float64:
		return a.Value(i)
	case *array.Float32:
		return float64(a.Value(i))
	case *array.String:
		return a.Value(i)
	case *array.LargeString:
		return a.Value(i)
	case *array.Binary:
		return append([]byte(nil), a.Value(i)...)
	case *array.Boolean:
		return a.Value(i)
	}
	return arr.GetOneForMarshal(i)
}

// rowsOf reads a record as rows.
func rowsOf(rec arrow.Record) []Row {
	n := int(rec.NumRows())
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = make(Row, rec.NumCols())
	}
	for c := 0; c < int(rec.NumCols()); c++ {
		name := rec.ColumnName(c)
		col := rec.Column(c)
		for i := 0; i < n; i++ {
			rows[i][name] = valueAt(col, i)
		}
	}
	return rows
}

// typeOf is the Arrow type of a Row value (nil for a nil value).
func typeOf(v any) (arrow.DataType, error) {
	switch v.(type) {
	case nil:
		return nil, nil
	case int, int64, int32, int16, int8, uint32, uint16, uint8:
		return arrow.PrimitiveTypes.Int64, nil
	case float64, float32:
		return arrow.PrimitiveTypes.Float64, nil
	case string:
		return arrow.BinaryTypes.String, nil
	case []byte:
		return arrow.BinaryTypes.Binary, nil
	case bool:
		return arrow.FixedWidthTypes.Boolean, nil
	}
	return nil, fmt.Errorf("%w: a value of type %T (want an integer, float, string, []byte or bool)", ErrBadRow, v)
}

// inferSchema is the schema of rows: columns in name order, typed by the
// first non-nil value of each (a column of nils only is a string column).
func inferSchema(rows []Row) (*arrow.Schema, error) {
	types := map[string]arrow.DataType{}
	for _, r := range rows {
		for k, v := range r {
			if types[k] != nil {
				continue
			}
			t, err := typeOf(v)
			if err != nil {
				return nil, fmt.Errorf("column %q: %w", k, err)
			}
			types[k] = t
		}
	}
	names := make([]string, 0, len(types))
	for k := range types {
		names = append(names, k)
	}
	sort.Strings(names)
	fields := make([]arrow.Field, len(names))
	for i, n := range names {
		t := types[n]
		if t == nil {
			t = arrow.BinaryTypes.String
		}
		fields[i] = arrow.Field{Name: n, Type: t, Nullable: true}
	}
	return arrow.NewSchema(fields, nil), nil
}

// recordOf builds a record of schema from rows (schema nil: inferred).
// rowBase numbers the rows in errors.
func recordOf(schema *arrow.Schema, rows []Row) (arrow.Record, error) {
	if schema == nil {
		var err error
		if schema, err = inferSchema(rows); err != nil {
			return nil, err
		}
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i, r := range rows {
		if len(r) > schema.NumFields() {
			for k := range r {
				if _, ok := schema.FieldsByName(k); !ok {
					return nil, fmt.Errorf("%w: row %d has column %q that the other rows lack", ErrSchemaMismatch, i, k)
				}
			}
		}
		for c, f := range schema.Fields() {
			if err := appendValue(b.Field(c), r[f.Name]); err != nil {
				return nil, fmt.Errorf("row %d column %q: %w", i, f.Name, err)
			}
		}
	}
	return b.NewRecord(), nil
}

// appendValue appends a Row value to a column builder.
func appendValue(b array.Builder, v any) error {
	if v == nil {
		b.AppendNull()
		return nil
	}
	bad := func() error {
		return fmt.Errorf("%w: value %v (%T) in a %s column", ErrSchemaMismatch, v, v, b.Type())
	}
	switch b := b.(type) {
	case *array.Int64Builder:
		x, ok := asInt(v)
		if !ok {
			return bad()
		}
		b.Append(x)
	case *array.Int32Builder:
		x, ok := asInt(v)
		if !ok {
			return bad()
		}
		b.Append(int32(x))
	case *array.Float64Builder:
		switch x := v.(type) {
		case float64:
			b.Append(x)
		case float32:
			b.Append(float64(x))
		default:
			i, ok := asInt(v)
			if !ok {
				return bad()
			}
			b.Append(float64(i))
		}
	case *array.StringBuilder:
		x, ok := v.(string)
		if !ok {
			return bad()
		}
		b.Append(x)
	case *array.BinaryBuilder:
		switch x := v.(type) {
		case []byte:
			b.Append(x)
		case string:
			b.AppendString(x)
		default:
			return bad()
		}
	case *array.BooleanBuilder:
		x, ok := v.(bool)
		if !ok {
			return bad()
		}
		b.Append(x)
	default:
		return fmt.Errorf("%w: rows cannot hold a %s column", ErrBadRow, b.Type())
	}
	return nil
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint8:
		return int64(x), true
	}
	return 0, false
}

// takeRows is a record of rec's rows at idx, in that order.
func takeRows(rec arrow.Record, idx []int) (arrow.Record, error) {
	b := array.NewRecordBuilder(memory.DefaultAllocator, rec.Schema())
	defer b.Release()
	for c := 0; c < int(rec.NumCols()); c++ {
		if err := takeColumn(b.Field(c), rec.Column(c), idx); err != nil {
			return nil, fmt.Errorf("column %q: %w", rec.ColumnName(c), err)
		}
	}
	return b.NewRecord(), nil
}

// takeColumn appends arr's values at idx to b, typed for the common
// column types (a sort or shuffle moves every value through here).
func takeColumn(b array.Builder, arr arrow.Array, idx []int) error {
	b.Reserve(len(idx))
	switch a := arr.(type) {
	case *array.Int64:
		takeTyped(a, b.(*array.Int64Builder), idx)
	case *array.Float64:
		takeTyped(a, b.(*array.Float64Builder), idx)
	case *array.String:
		bb := b.(*array.StringBuilder)
		bb.ReserveData(valueBytes(a.ValueOffsets(), idx))
		takeTyped(a, bb, idx)
	case *array.Binary:
		bb := b.(*array.BinaryBuilder)
		bb.ReserveData(valueBytes(a.ValueOffsets(), idx))
		takeTyped(a, bb, idx)
	case *array.Boolean:
		takeTyped(a, b.(*array.BooleanBuilder), idx)
	default:
		for _, i := range idx {
			if err := appendValue(b, valueAt(arr, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// takeTyped appends the values of a at idx (nulls as nulls) to b.
func takeTyped[T any](a interface {
	IsNull(int) bool
	Value(int) T
}, b interface {
	AppendNull()
	Append(T)
}, idx []int) {
	for _, i := range idx {
		if a.IsNull(i) {
			b.AppendNull()
		} else {
			b.Append(a.Value(i))
		}
	}
}

// valueBytes is the bytes of the values at idx of a variable-width column
// (so a take reserves its data buffer once instead of growing it).
func valueBytes(offsets []int32, idx []int) int {
	n := 0
	for _, i := range idx {
		n += int(offsets[i+1] - offsets[i])
	}
	return n
}
