package data

import (
	"context"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/manta-ray/manta/sdk/ray"
)

// readBlock fetches a block into the driver (a copy) and decodes it.
func readBlock(ctx context.Context, b blockRef) (arrow.Record, error) {
	data, err := ray.Get(ctx, b.Ref)
	if err != nil {
		return nil, err
	}
	return decodeBlock(data)
}

// Count runs the plan and counts its rows.
func (d *Dataset) Count(ctx context.Context) (int64, error) {
	var n int64
	err := d.execute(ctx, nil, func(b blockRef, owned bool) error {
		n += b.Meta.Rows
		if owned {
			b.Ref.Release()
		}
		return nil
	})
	return n, err
}

// Take returns the first n rows.
func (d *Dataset) Take(ctx context.Context, n int64) ([]Row, error) {
	var rows []Row
	err := d.Limit(n).execute(ctx, nil, func(b blockRef, owned bool) error {
		rec, err := readBlock(ctx, b)
		if owned {
			b.Ref.Release()
		}
		if err != nil {
			return err
		}
		rows = append(rows, rowsOf(rec)...)
		return nil
	})
	return rows, err
}

// TakeAll returns every row.
func (d *Dataset) TakeAll(ctx context.Context) ([]Row, error) {
	var rows []Row
	for r, err := range d.Iter(ctx) {
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// Schema runs the plan up to its first block and returns its schema.
func (d *Dataset) Schema(ctx context.Context) (*arrow.Schema, error) {
	var schema *arrow.Schema
	err := d.execute(ctx, nil, func(b blockRef, owned bool) error {
		rec, err := readBlock(ctx, b)
		if owned {
			b.Ref.Release()
		}
		if err != nil {
			return err
		}
		schema = rec.Schema()
		return errStop
	})
	return schema, err
}

// IterBatches runs the plan and yields its rows in batches of BatchSize
// (default 1024; a batch does not span blocks), in order. Stopping the
// loop early stops the execution. The batches are the caller's.
func (d *Dataset) IterBatches(ctx context.Context, opts ...Option) iter.Seq2[arrow.Record, error] {
	size := int64(newOptions(opts).batchSize)
	if size <= 0 {
		size = 1024
	}
	return func(yield func(arrow.Record, error) bool) {
		err := d.execute(ctx, nil, func(b blockRef, owned bool) error {
			rec, err := readBlock(ctx, b)
			if owned {
				b.Ref.Release()
			}
			if err != nil {
				return err
			}
			for lo := int64(0); lo < rec.NumRows(); lo += size {
				if !yield(rec.NewSlice(lo, min(lo+size, rec.NumRows())), nil) {
					return errStop
				}
			}
			return nil
		})
		if err != nil {
			yield(nil, err)
		}
	}
}

// Iter runs the plan and yields its rows in order.
func (d *Dataset) Iter(ctx context.Context) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		for b, err := range d.IterBatches(ctx, BatchSize(4096)) {
			if err != nil {
				yield(nil, err)
				return
			}
			for _, r := range rowsOf(b) {
				if !yield(r, nil) {
					return
				}
			}
		}
	}
}

// Materialize runs the plan and keeps its blocks in the object store: the
// dataset returned reads them instead of running the plan again.
func (d *Dataset) Materialize(ctx context.Context) (*Dataset, error) {
	var blocks []blockRef
	err := d.execute(ctx, nil, func(b blockRef, _ bool) error {
		blocks = append(blocks, b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	m := newDataset(&source{label: "Materialized", blocks: blocks})
	m.budget, m.prog = d.budget, d.prog
	if blocks == nil {
		m.src.blocks = []blockRef{}
	}
	m.stats = d.stats
	return m, nil
}

// WriteParquet writes the dataset to dir, a Parquet file per block
// (part-NNNNNN.parquet), streaming: each block is written by the task
// that made it. A complete directory has a _SUCCESS file; the part files
// of an earlier write to dir are removed first.
func (d *Dataset) WriteParquet(ctx context.Context, dir string) error {
	return d.write(ctx, &writer{Dir: dir, Format: "parquet"})
}

// WriteCSV writes the dataset to dir, a CSV file (with a header) per
// block, as WriteParquet does.
func (d *Dataset) WriteCSV(ctx context.Context, dir string) error {
	return d.write(ctx, &writer{Dir: dir, Format: "csv"})
}

func (d *Dataset) write(ctx context.Context, w *writer) error {
	abs, err := filepath.Abs(w.Dir)
	if err != nil {
		return err
	}
	w.Dir = abs
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	ents, err := os.ReadDir(abs)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if n := e.Name(); n == successFile || strings.HasPrefix(n, "part-") || strings.HasPrefix(n, ".tmp-part-") {
			if err := os.Remove(filepath.Join(abs, n)); err != nil {
				return err
			}
		}
	}
	err = d.execute(ctx, w, func(b blockRef, owned bool) error {
		if owned {
			b.Ref.Release()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(abs, successFile), nil, 0o644)
}
