package data

import (
	"context"
	"fmt"
	"sync"

	"github.com/manta-ray/manta/sdk/ray"
)

// Dataset is a lazy plan over a distributed collection of Arrow record
// batches (blocks) that live in the cluster's object store: a source and
// the operators applied to it. Transforms return a new Dataset at once;
// nothing runs until a consumer (Count, Take, Iter, Materialize, Write...)
// executes the plan as a stream (see the package doc). A Dataset is
// immutable and safe to use from several goroutines.
type Dataset struct {
	src    *source
	ops    []op
	budget int64 // bytes of blocks in flight; 0: the default
	stats  *statsHolder
	prog   progressMode
}

// blockRef is a block in the store and what the driver knows of it.
type blockRef struct {
	Ref  ray.ObjectRef[[]byte]
	Meta blockMeta
}

// source is where a plan's blocks come from: read tasks, or blocks
// already stored (FromItems, FromArrow, Materialize, an all-to-all step).
type source struct {
	label  string
	reads  []readSpec
	blocks []blockRef
	err    error // a failure building the source, reported when it runs
	owned  bool  // blocks made by the execution itself (released when consumed)
}

type opKind uint8

const (
	opStep  opKind = iota + 1 // a map-like step, fused with its neighbours
	opPool                    // MapBatches on an actor pool
	opLimit                   // the first n rows
	opAll                     // an all-to-all step: a barrier
)

// op is one operator of the plan.
type op struct {
	kind  opKind
	step  step
	conc  int   // tasks in flight, or actors of a pool (0: default)
	limit int64 // opLimit
	all   *allToAll
}

// allToAll is a step that needs all of its input before any output: it
// runs as map and reduce tasks over the materialized input blocks.
type allToAll struct {
	label       string
	passThrough bool // its output holds input blocks (Union)
	run         func(ctx context.Context, x *execution, in []blockRef) ([]blockRef, error)
}

func newDataset(src *source) *Dataset {
	return &Dataset{src: src, stats: &statsHolder{}}
}

// with is d with one more operator.
func (d *Dataset) with(o op) *Dataset {
	nd := *d
	nd.ops = append(append([]op(nil), d.ops...), o)
	nd.stats = &statsHolder{}
	return &nd
}

// WithMemoryBudget caps the bytes of blocks a streaming execution keeps
// in the object store at once (default a quarter of the node's store):
// reads wait while the blocks in flight are over it.
func (d *Dataset) WithMemoryBudget(bytes int64) *Dataset {
	nd := *d
	nd.budget = bytes
	return &nd
}

// WithProgress turns per-operator progress bars on stderr on or off
// (default: on when stderr is a terminal).
func (d *Dataset) WithProgress(on bool) *Dataset {
	nd := *d
	nd.prog = progressOff
	if on {
		nd.prog = progressOn
	}
	return &nd
}

// Option is an option of a transform or consumer.
type Option func(*options)

type options struct {
	batchSize   int
	concurrency int
}

func newOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// BatchSize is the rows per batch a MapBatches function or IterBatches
// gets (default: a whole block per call; IterBatches: 1024).
func BatchSize(n int) Option { return func(o *options) { o.batchSize = n } }

// Concurrency is how many tasks of a MapBatches step run at once, or, for
// a BatchClass, the size of its actor pool (default 2 actors).
func Concurrency(n int) Option { return func(o *options) { o.concurrency = n } }

// Map applies fn to every row.
func (d *Dataset) Map(fn MapFunc) *Dataset {
	return d.with(op{kind: opStep, step: step{Kind: stepMap, Fn: fn.name}})
}

// Filter keeps the rows fn says true of.
func (d *Dataset) Filter(fn FilterFunc) *Dataset {
	return d.with(op{kind: opStep, step: step{Kind: stepFilter, Fn: fn.name}})
}

// FlatMap replaces every row with the rows fn returns for it.
func (d *Dataset) FlatMap(fn FlatMapFunc) *Dataset {
	return d.with(op{kind: opStep, step: step{Kind: stepFlatMap, Fn: fn.name}})
}

// Batcher is a MapBatches function: a BatchFunc (run by tasks) or a
// BatchClass (run by an actor pool).
type Batcher interface{ batcher() (string, bool) }

func (f BatchFunc) batcher() (string, bool)  { return f.name, false }
func (f BatchClass) batcher() (string, bool) { return f.name, true }

// MapBatches applies fn to batches of rows (BatchSize, default a block):
// a BatchFunc runs in tasks (Concurrency of them at once), a BatchClass
// in an actor pool of Concurrency actors, each of which builds the
// function once.
func (d *Dataset) MapBatches(fn Batcher, opts ...Option) *Dataset {
	o := newOptions(opts)
	name, class := fn.batcher()
	s := step{Kind: stepBatches, Fn: name, BatchSize: o.batchSize}
	if class {
		return d.with(op{kind: opPool, step: s, conc: max(o.concurrency, 0)})
	}
	return d.with(op{kind: opStep, step: s, conc: o.concurrency})
}

// AddColumn adds a column named name computed by fn from each batch.
func (d *Dataset) AddColumn(name string, fn ColumnFunc) *Dataset {
	return d.with(op{kind: opStep, step: step{Kind: stepAddColumn, Fn: fn.name, Col: name}})
}

// Select keeps the named columns, in that order.
func (d *Dataset) Select(cols ...string) *Dataset {
	return d.with(op{kind: opStep, step: step{Kind: stepSelect, Cols: cols}})
}

// DropColumns removes the named columns.
func (d *Dataset) DropColumns(cols ...string) *Dataset {
	return d.with(op{kind: opStep, step: step{Kind: stepDrop, Cols: cols}})
}

// Limit keeps the first n rows; the reads upstream stop once it has them.
func (d *Dataset) Limit(n int64) *Dataset {
	return d.with(op{kind: opLimit, limit: max(n, 0)})
}

// statsHolder keeps the stats of a dataset's last execution.
type statsHolder struct {
	mu   sync.Mutex
	last *execStats
}

// Stats describes the dataset's last execution: per operator, its time,
// blocks, rows and bytes, and the peak bytes of blocks in flight.
func (d *Dataset) Stats() string {
	d.stats.mu.Lock()
	defer d.stats.mu.Unlock()
	if d.stats.last == nil {
		return "not executed yet"
	}
	return d.stats.last.String()
}

// String describes the plan.
func (d *Dataset) String() string {
	s := d.src.label
	for _, o := range d.ops {
		switch o.kind {
		case opStep, opPool:
			s += " -> " + o.step.label()
		case opLimit:
			s += fmt.Sprintf(" -> Limit(%d)", o.limit)
		case opAll:
			s += " -> " + o.all.label
		}
	}
	return s
}
