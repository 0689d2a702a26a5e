package data

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// Range is the rows 0..n-1 of one int64 column, "id".
func Range(n int64, opts ...ReadOption) *Dataset {
	o := newReadOptions(opts)
	k := int64(o.blocks)
	if k <= 0 {
		k = max(1, (n+(128<<10)-1)/(128<<10))
	}
	k = max(1, min(k, n))
	src := &source{label: fmt.Sprintf("Range(%d)", n)}
	for i := int64(0); i < k; i++ {
		src.reads = append(src.reads, readSpec{Kind: srcRange, Lo: n * i / k, Hi: n * (i + 1) / k})
	}
	return newDataset(src)
}

// FromItems is a dataset of rows built in the driver (the columns are
// typed by the first non-nil value of each; see Row).
func FromItems(items []Row, opts ...ReadOption) *Dataset {
	o := newReadOptions(opts)
	n := len(items)
	k := o.blocks
	if k <= 0 {
		k = max(1, (n+4095)/4096)
	}
	k = max(1, min(k, n))
	src := &source{label: fmt.Sprintf("FromItems(%d)", n)}
	schema, err := inferSchema(items)
	if err != nil {
		src.err = err
		return newDataset(src)
	}
	for i := 0; i < k; i++ {
		rec, err := recordOf(schema, items[n*i/k:n*(i+1)/k])
		if err != nil {
			src.err = err
			break
		}
		b, err := encodeBlock(rec)
		if err != nil {
			src.err = err
			break
		}
		src.reads = append(src.reads, readSpec{Kind: srcBlock, Data: b})
	}
	return newDataset(src)
}

// FromArrow is a dataset of the given records, a block each. They must
// share a schema (else running it fails naming the column that differs).
func FromArrow(records ...arrow.Record) *Dataset {
	src := &source{label: fmt.Sprintf("FromArrow(%d)", len(records))}
	for i, rec := range records {
		if i > 0 {
			if err := sameSchema(records[0].Schema(), rec.Schema()); err != nil {
				src.err = fmt.Errorf("record %d: %w", i, err)
				break
			}
		}
		b, err := encodeBlock(rec)
		if err != nil {
			src.err = err
			break
		}
		src.reads = append(src.reads, readSpec{Kind: srcBlock, Data: b})
	}
	return newDataset(src)
}

// ReadCSV reads CSV files with a header line (files, or directories of
// *.csv), split into read tasks of SplitBytes. Column types are inferred
// from the first rows of the first file. Quoted fields must not hold
// line breaks (a split starts at a line).
func ReadCSV(paths []string, opts ...ReadOption) *Dataset {
	return readText(srcCSV, "ReadCSV", ".csv", csvSchema, paths, opts)
}

// ReadJSONL reads JSON-lines files (an object per line; files, or
// directories of *.jsonl), split into read tasks of SplitBytes.
func ReadJSONL(paths []string, opts ...ReadOption) *Dataset {
	return readText(srcJSONL, "ReadJSONL", ".jsonl", jsonlSchema, paths, opts)
}

func readText(kind sourceKind, label, ext string, infer func(string) ([]column, error), paths []string, opts []ReadOption) *Dataset {
	o := newReadOptions(opts)
	src := &source{label: fmt.Sprintf("%s(%v)", label, paths)}
	files, err := listFiles(paths, ext)
	if err == nil {
		var cols []column
		if cols, err = infer(files[0]); err == nil {
			src.reads, err = splitText(kind, files, cols, kind == srcCSV, o.splitBytes)
		}
	}
	src.err = err
	return newDataset(src)
}

// ReadParquet reads Parquet files (files, or directories of *.parquet), a
// read task per row group.
func ReadParquet(paths []string, opts ...ReadOption) *Dataset {
	src := &source{label: fmt.Sprintf("ReadParquet(%v)", paths)}
	files, err := listFiles(paths, ".parquet")
	if err != nil {
		src.err = err
		return newDataset(src)
	}
	for _, f := range files {
		n, err := parquetGroups(f)
		if err != nil {
			src.err = err
			break
		}
		for g := 0; g < max(n, 1); g++ {
			src.reads = append(src.reads, readSpec{Kind: srcParquet, Path: f, Lo: int64(g), Hi: int64(min(g+1, n))})
		}
	}
	return newDataset(src)
}
