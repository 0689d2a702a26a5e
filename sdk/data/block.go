package data

import (
	"bytes"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// A block is one Arrow record batch in the Arrow IPC file format: the
// bytes of an object in the store. The file format (not the stream one)
// because its reader slices column buffers straight out of the bytes
// (ipc.NewMappedFileReader), so a task reads a block in place from the
// node's shared-memory arena with no decode and no copy.

// blockMeta is what the driver learns of a block without reading it.
type blockMeta struct {
	Rows  int64
	Bytes int64
}

// encodeBlock writes rec as a block.
func encodeBlock(rec arrow.Record) ([]byte, error) {
	// Sized once: growing the buffer by doubling copied a big block
	// several times over.
	buf := bytes.NewBuffer(make([]byte, 0, recordBytes(rec)+4096))
	w, err := ipc.NewFileWriter(buf, ipc.WithSchema(rec.Schema()))
	if err != nil {
		return nil, err
	}
	if err := w.Write(rec); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// recordBytes is about the bytes of rec's buffers, padded as IPC pads.
func recordBytes(rec arrow.Record) int {
	n := 0
	var walk func(d arrow.ArrayData)
	walk = func(d arrow.ArrayData) {
		for _, b := range d.Buffers() {
			if b != nil {
				n += b.Len() + 64
			}
		}
		for _, c := range d.Children() {
			walk(c)
		}
	}
	for _, c := range rec.Columns() {
		walk(c.Data())
	}
	return n
}

// decodeBlock reads a block in place: the record's buffers are views of
// b, valid only while b is (a task's ReadOnlyBytes argument: until the
// task returns). Release is not needed for views but is harmless.
func decodeBlock(b []byte) (arrow.Record, error) {
	r, err := ipc.NewMappedFileReader(b)
	if err != nil {
		return nil, fmt.Errorf("%w: not an Arrow IPC block: %v", ErrBadBlock, err)
	}
	defer r.Close()
	schema := r.Schema()
	var recs []arrow.Record
	for i := 0; i < r.NumRecords(); i++ {
		rec, err := r.RecordAt(i)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadBlock, err)
		}
		recs = append(recs, rec)
	}
	switch len(recs) {
	case 0:
		return emptyRecord(schema), nil
	case 1:
		return recs[0], nil
	}
	return concatRecords(schema, recs)
}

// emptyRecord is a record of schema without rows.
func emptyRecord(schema *arrow.Schema) arrow.Record {
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	return b.NewRecord()
}

// concatRecords joins records of one schema; a record of another schema
// fails naming the first column that differs.
func concatRecords(schema *arrow.Schema, recs []arrow.Record) (arrow.Record, error) {
	if len(recs) == 0 {
		return emptyRecord(schema), nil
	}
	if schema == nil {
		schema = recs[0].Schema()
	}
	for _, r := range recs {
		if err := sameSchema(schema, r.Schema()); err != nil {
			return nil, err
		}
	}
	if len(recs) == 1 {
		recs[0].Retain()
		return recs[0], nil
	}
	cols := make([]arrow.Array, schema.NumFields())
	var rows int64
	for _, r := range recs {
		rows += r.NumRows()
	}
	for i := range cols {
		parts := make([]arrow.Array, len(recs))
		for j, r := range recs {
			parts[j] = r.Column(i)
		}
		c, err := array.Concatenate(parts, memory.DefaultAllocator)
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", schema.Field(i).Name, err)
		}
		cols[i] = c
	}
	return array.NewRecord(schema, cols, rows), nil
}

// sameSchema says which column differs between two schemas, if any.
func sameSchema(want, got *arrow.Schema) error {
	if want.Equal(got) {
		return nil
	}
	for i := 0; i < max(want.NumFields(), got.NumFields()); i++ {
		switch {
		case i >= want.NumFields():
			return fmt.Errorf("%w: unexpected column %q (%s)", ErrSchemaMismatch, got.Field(i).Name, got.Field(i).Type)
		case i >= got.NumFields():
			return fmt.Errorf("%w: column %q (%s) is missing", ErrSchemaMismatch, want.Field(i).Name, want.Field(i).Type)
		}
		w, g := want.Field(i), got.Field(i)
		if w.Name != g.Name || !arrow.TypeEqual(w.Type, g.Type) {
			return fmt.Errorf("%w: column %d is %q (%s) in one block and %q (%s) in another", ErrSchemaMismatch, i, w.Name, w.Type, g.Name, g.Type)
		}
	}
	return nil
}

// metaOf describes an encoded block of rec.
func metaOf(rec arrow.Record, b []byte) blockMeta {
	return blockMeta{Rows: rec.NumRows(), Bytes: int64(len(b))}
}
