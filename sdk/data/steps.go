package data

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// stepKind is a map-like operator that a fused stage applies to a block.
type stepKind uint8

const (
	stepMap stepKind = iota + 1
	stepFilter
	stepFlatMap
	stepBatches
	stepAddColumn
	stepSelect
	stepDrop
)

// step is one map-like operator as it travels in a task's spec: the
// registered function's name, not the function.
type step struct {
	Kind      stepKind
	Fn        string   // registered name (map, filter, flatmap, batches, addcolumn)
	Col       string   // addcolumn: the new column
	Cols      []string // select, drop
	BatchSize int      // batches: rows per call (0: the whole block)
}

// label names the step in errors and stats.
func (s step) label() string {
	switch s.Kind {
	case stepMap:
		return "Map(" + s.Fn + ")"
	case stepFilter:
		return "Filter(" + s.Fn + ")"
	case stepFlatMap:
		return "FlatMap(" + s.Fn + ")"
	case stepBatches:
		return "MapBatches(" + s.Fn + ")"
	case stepAddColumn:
		return "AddColumn(" + s.Col + ")"
	case stepSelect:
		return fmt.Sprintf("Select%v", s.Cols)
	case stepDrop:
		return fmt.Sprintf("Drop%v", s.Cols)
	}
	return "?"
}

// applySteps runs a fused chain of steps over one block's record.
func applySteps(ctx context.Context, rec arrow.Record, steps []step) (arrow.Record, error) {
	for _, s := range steps {
		out, err := applyStep(ctx, rec, s, nil)
		if err != nil {
			return nil, err
		}
		rec = out
	}
	return rec, nil
}

// applyStep runs one step; pool is the actor's own batch function for a
// MapBatches step run by an actor pool (nil: look the function up).
func applyStep(ctx context.Context, rec arrow.Record, s step, pool batchFn) (arrow.Record, error) {
	op := s.label()
	switch s.Kind {
	case stepMap:
		fn, err := lookup[rowFn](s.Fn)
		if err != nil {
			return nil, err
		}
		rows := rowsOf(rec)
		out := make([]Row, len(rows))
		for i, r := range rows {
			if err := guard(op, int64(i), func() (err error) { out[i], err = fn(ctx, r); return err }); err != nil {
				return nil, err
			}
		}
		if len(out) == 0 {
			return rec, nil
		}
		return recordOrErr(op, out)
	case stepFilter:
		fn, err := lookup[predFn](s.Fn)
		if err != nil {
			return nil, err
		}
		rows := rowsOf(rec)
		var keep []int
		for i, r := range rows {
			var ok bool
			if err := guard(op, int64(i), func() (err error) { ok, err = fn(ctx, r); return err }); err != nil {
				return nil, err
			}
			if ok {
				keep = append(keep, i)
			}
		}
		return takeRows(rec, keep)
	case stepFlatMap:
		fn, err := lookup[flatFn](s.Fn)
		if err != nil {
			return nil, err
		}
		var out []Row
		for i, r := range rowsOf(rec) {
			var more []Row
			if err := guard(op, int64(i), func() (err error) { more, err = fn(ctx, r); return err }); err != nil {
				return nil, err
			}
			out = append(out, more...)
		}
		if len(out) == 0 {
			return emptyRecord(arrow.NewSchema(nil, nil)), nil
		}
		return recordOrErr(op, out)
	case stepBatches:
		fn := pool
		if fn == nil {
			var err error
			if fn, err = lookup[batchFn](s.Fn); err != nil {
				return nil, err
			}
		}
		return mapBatches(ctx, op, rec, s.BatchSize, fn)
	case stepAddColumn:
		fn, err := lookup[columnFn](s.Fn)
		if err != nil {
			return nil, err
		}
		var col arrow.Array
		if err := guard(op, 0, func() (err error) { col, err = fn(ctx, rec); return err }); err != nil {
			return nil, err
		}
		if int64(col.Len()) != rec.NumRows() {
			return nil, fmt.Errorf("%w: %s returned %d values for %d rows", ErrUserFunction, op, col.Len(), rec.NumRows())
		}
		fields := append(append([]arrow.Field(nil), rec.Schema().Fields()...), arrow.Field{Name: s.Col, Type: col.DataType(), Nullable: true})
		cols := append(append([]arrow.Array(nil), rec.Columns()...), col)
		return array.NewRecord(arrow.NewSchema(fields, nil), cols, rec.NumRows()), nil
	case stepSelect, stepDrop:
		return project(rec, s.Cols, s.Kind == stepDrop)
	}
	return nil, fmt.Errorf("%w: step kind %d", ErrInvalidArgument, s.Kind)
}

func recordOrErr(op string, rows []Row) (arrow.Record, error) {
	rec, err := recordOf(nil, rows)
	if err != nil {
		return nil, fmt.Errorf("%s output: %w", op, err)
	}
	return rec, nil
}

// mapBatches runs fn over slices of size rows (0: all) and joins the outputs.
func mapBatches(ctx context.Context, op string, rec arrow.Record, size int, fn batchFn) (arrow.Record, error) {
	n := rec.NumRows()
	if size <= 0 || int64(size) >= n {
		size = int(max(n, 1))
	}
	var outs []arrow.Record
	for lo := int64(0); lo < n || (n == 0 && lo == 0); lo += int64(size) {
		hi := min(lo+int64(size), n)
		part := rec.NewSlice(lo, hi)
		var out arrow.Record
		if err := guard(op, lo, func() (err error) { out, err = fn(ctx, part); return err }); err != nil {
			return nil, err
		}
		outs = append(outs, out)
		if n == 0 {
			break
		}
	}
	rec2, err := concatRecords(outs[0].Schema(), outs)
	if err != nil {
		return nil, fmt.Errorf("%s output: %w", op, err)
	}
	return rec2, nil
}

// project keeps (or drops) the named columns.
func project(rec arrow.Record, cols []string, drop bool) (arrow.Record, error) {
	schema := rec.Schema()
	want := map[string]bool{}
	for _, c := range cols {
		if _, ok := schema.FieldsByName(c); !ok {
			return nil, fmt.Errorf("%w: no column %q (have %v)", ErrInvalidArgument, c, fieldNames(schema))
		}
		want[c] = true
	}
	var idx []int
	if drop {
		for i, f := range schema.Fields() {
			if !want[f.Name] {
				idx = append(idx, i)
			}
		}
	} else {
		for _, c := range cols {
			idx = append(idx, schema.FieldIndices(c)[0])
		}
	}
	fields := make([]arrow.Field, len(idx))
	arrs := make([]arrow.Array, len(idx))
	for i, j := range idx {
		fields[i], arrs[i] = schema.Field(j), rec.Column(j)
	}
	return array.NewRecord(arrow.NewSchema(fields, nil), arrs, rec.NumRows()), nil
}

func fieldNames(s *arrow.Schema) []string {
	out := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		out[i] = f.Name
	}
	return out
}
