package data

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
)

// Go cannot ship closures to workers, so a dataset's user functions are
// registered by name when the program starts (a package-level var, as
// ray.Func1 is) and steps of a plan carry only the name; every worker runs
// the same binary and finds the same function:
//
//	var double = data.MapBatchesFn("double", func(ctx context.Context, b arrow.Record) (arrow.Record, error) { ... })
//	...
//	ds.MapBatches(double, data.BatchSize(1024))

// MapFunc is a registered row-to-row function (Dataset.Map).
type MapFunc struct{ name string }

// FilterFunc is a registered row predicate (Dataset.Filter).
type FilterFunc struct{ name string }

// FlatMapFunc is a registered row-to-rows function (Dataset.FlatMap).
type FlatMapFunc struct{ name string }

// BatchFunc is a registered batch-to-batch function (Dataset.MapBatches).
type BatchFunc struct{ name string }

// BatchClass is a registered stateful batch function (Dataset.MapBatches
// with ActorPool): each actor of the pool builds its function once (load
// a model, a lookup table) and runs every batch it gets through it.
type BatchClass struct{ name string }

// ColumnFunc is a registered function computing a new column of a batch
// (Dataset.AddColumn).
type ColumnFunc struct{ name string }

// Name is the function's registered name.
func (f MapFunc) Name() string { return f.name }

// Name is the function's registered name.
func (f FilterFunc) Name() string { return f.name }

// Name is the function's registered name.
func (f FlatMapFunc) Name() string { return f.name }

// Name is the function's registered name.
func (f BatchFunc) Name() string { return f.name }

// Name is the class's registered name.
func (f BatchClass) Name() string { return f.name }

// Name is the function's registered name.
func (f ColumnFunc) Name() string { return f.name }

type (
	rowFn     = func(context.Context, Row) (Row, error)
	predFn    = func(context.Context, Row) (bool, error)
	flatFn    = func(context.Context, Row) ([]Row, error)
	batchFn   = func(context.Context, arrow.Record) (arrow.Record, error)
	columnFn  = func(context.Context, arrow.Record) (arrow.Array, error)
	newBatchF = func(context.Context) (func(context.Context, arrow.Record) (arrow.Record, error), error)
)

// registry holds the functions registered at init (the only package
// state; written before main runs, read after).
var registry = struct {
	sync.RWMutex
	fns map[string]any
}{fns: map[string]any{}}

func register(name string, fn any) string {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.fns[name]; dup {
		panic(fmt.Sprintf("data: function %q registered twice", name))
	}
	registry.fns[name] = fn
	return name
}

func lookup[F any](name string) (F, error) {
	registry.RLock()
	defer registry.RUnlock()
	f, ok := registry.fns[name].(F)
	if !ok {
		return f, fmt.Errorf("%w: %q (register it in a package-level var so workers have it too)", ErrUnknownFunction, name)
	}
	return f, nil
}

// MapFn registers fn, one output row per input row, as name.
func MapFn(name string, fn func(ctx context.Context, r Row) (Row, error)) MapFunc {
	return MapFunc{register(name, rowFn(fn))}
}

// FilterFn registers fn, keeping the rows it says true of, as name.
func FilterFn(name string, fn func(ctx context.Context, r Row) (bool, error)) FilterFunc {
	return FilterFunc{register(name, predFn(fn))}
}

// FlatMapFn registers fn, any number of output rows per input row.
func FlatMapFn(name string, fn func(ctx context.Context, r Row) ([]Row, error)) FlatMapFunc {
	return FlatMapFunc{register(name, flatFn(fn))}
}

// MapBatchesFn registers fn, a batch in and a batch out, as name. The
// input batch may be a view of the object store: it is valid only during
// the call, and fn must not keep it or modify it.
func MapBatchesFn(name string, fn func(ctx context.Context, b arrow.Record) (arrow.Record, error)) BatchFunc {
	return BatchFunc{register(name, batchFn(fn))}
}

// MapBatchesClass registers a stateful batch function: newFn runs once
// per actor of the pool and returns the function that then maps its
// batches (a closure over the loaded state).
func MapBatchesClass(name string, newFn func(ctx context.Context) (func(ctx context.Context, b arrow.Record) (arrow.Record, error), error)) BatchClass {
	return BatchClass{register(name, newBatchF(newFn))}
}

// ColumnFn registers fn, which computes one new column (of the batch's
// length) from a batch, as name.
func ColumnFn(name string, fn func(ctx context.Context, b arrow.Record) (arrow.Array, error)) ColumnFunc {
	return ColumnFunc{register(name, columnFn(fn))}
}

// guard runs a user function, turning a panic into an error that names
// the operator and the row (or the first row of the batch) it was given.
func guard(op string, row int64, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s panicked at row %d of its block: %v\n%s", ErrUserFunction, op, row, p, debug.Stack())
		}
	}()
	if err := f(); err != nil {
		return fmt.Errorf("%w: %s failed at row %d of its block: %v", ErrUserFunction, op, row, err)
	}
	return nil
}
