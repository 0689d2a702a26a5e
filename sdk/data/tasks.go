package data

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/manta-ray/manta/sdk/ray"
)

// The remote functions every dataset runs: generic tasks that receive the
// names of the steps to apply, so one registered function serves any
// fused chain of a user's registered transforms.

// stageSpec is what a fused stage task applies to its block.
type stageSpec struct {
	Steps []step
	Index int64   // the block's position in its stage's output (file names)
	Write *writer // a final write to files, if any
}

// readStage is a read task with the steps fused after it.
type readStage struct {
	Src   readSpec
	Stage stageSpec
}

var (
	// readTask reads a source split and applies the fused steps.
	readTask = ray.Func1x2("data.Read", func(ctx context.Context, s readStage) ([]byte, blockMeta, error) {
		rec, err := readSource(ctx, s.Src)
		if err != nil {
			return nil, blockMeta{}, err
		}
		return finishStage(ctx, rec, s.Stage)
	})
	// mapTask applies fused steps to a block, read in place.
	mapTask = ray.Func2x2("data.Map", func(ctx context.Context, s stageSpec, in ray.ReadOnlyBytes) ([]byte, blockMeta, error) {
		rec, err := decodeBlock(in)
		if err != nil {
			return nil, blockMeta{}, err
		}
		return finishStage(ctx, rec, s)
	})
	// metaTask describes a block (an actor pool's output).
	metaTask = ray.Func1("data.Meta", func(ctx context.Context, in ray.ReadOnlyBytes) (blockMeta, error) {
		rec, err := decodeBlock(in)
		if err != nil {
			return blockMeta{}, err
		}
		return blockMeta{Rows: rec.NumRows(), Bytes: int64(len(in))}, nil
	})
	// gatherTask builds a block from row ranges of other blocks
	// (Repartition, Split, Limit, Zip).
	gatherTask = ray.Func1x2("data.Gather", func(ctx context.Context, parts []slice) ([]byte, blockMeta, error) {
		rec, err := gather(ctx, parts)
		if err != nil {
			return nil, blockMeta{}, err
		}
		return finish(rec)
	})
)

// finishStage applies a stage's steps and encodes (or writes) the result.
func finishStage(ctx context.Context, rec arrow.Record, s stageSpec) ([]byte, blockMeta, error) {
	rec, err := applySteps(ctx, rec, s.Steps)
	if err != nil {
		return nil, blockMeta{}, err
	}
	if s.Write != nil {
		if err := s.Write.write(rec, s.Index); err != nil {
			return nil, blockMeta{}, err
		}
		// What is written does not stay in the store: the block is empty.
		return nil, blockMeta{Rows: rec.NumRows()}, nil
	}
	return finish(rec)
}

func finish(rec arrow.Record) ([]byte, blockMeta, error) {
	b, err := encodeBlock(rec)
	if err != nil {
		return nil, blockMeta{}, err
	}
	return b, metaOf(rec, b), nil
}

// slice is rows [Lo, Hi) of a block.
type slice struct {
	Ref    ray.ObjectRef[[]byte]
	Lo, Hi int64
}

// gather concatenates row ranges of blocks (fetched: they may live on
// other nodes).
func gather(ctx context.Context, parts []slice) (arrow.Record, error) {
	var recs []arrow.Record
	var schema *arrow.Schema
	for _, p := range parts {
		b, err := ray.Get(ctx, p.Ref)
		if err != nil {
			return nil, err
		}
		rec, err := decodeBlock(b)
		if err != nil {
			return nil, err
		}
		if schema == nil {
			schema = rec.Schema()
		}
		recs = append(recs, rec.NewSlice(p.Lo, p.Hi))
	}
	if schema == nil {
		return emptyRecord(arrow.NewSchema(nil, nil)), nil
	}
	return concatRecords(schema, recs)
}

// batchPool is an actor of a MapBatches actor pool: it holds the function
// its class built once (a loaded model, a table).
type batchPool struct {
	fn    batchFn
	class string
}

var (
	poolActor = ray.Actor1("data.BatchPool", func(ctx context.Context, class string) (*batchPool, error) {
		newFn, err := lookup[newBatchF](class)
		if err != nil {
			return nil, err
		}
		var fn batchFn
		if err := guard("MapBatches("+class+") constructor", 0, func() (err error) { fn, err = newFn(ctx); return err }); err != nil {
			return nil, err
		}
		return &batchPool{fn: fn, class: class}, nil
	})
	// poolApply runs the pool's function (the stage's first step) and the
	// steps fused after it.
	poolApply = ray.Method2(poolActor, "Apply", func(p *batchPool, ctx context.Context, s stageSpec, in []byte) ([]byte, error) {
		rec, err := decodeBlock(in)
		if err != nil {
			return nil, err
		}
		if len(s.Steps) == 0 {
			return nil, fmt.Errorf("%w: an actor pool stage without its step", ErrInvalidArgument)
		}
		rec, err = applyStep(ctx, rec, s.Steps[0], p.fn)
		if err != nil {
			return nil, err
		}
		s.Steps = s.Steps[1:]
		b, _, err := finishStage(ctx, rec, s)
		return b, err
	})
)
