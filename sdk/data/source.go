package data

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// sourceKind is what a read task reads.
type sourceKind uint8

const (
	srcRange sourceKind = iota + 1
	srcCSV
	srcJSONL
	srcParquet
	srcBlock // a block built by the driver (FromItems, FromArrow), inline
)

// column is a column of a text source's schema, fixed by the driver so
// that every read task of the dataset yields the same schema.
type column struct {
	Name string
	Type string // int64, float64, bool, string
}

// readSpec is one read task: a range of ids, or a byte range of a text
// file (whole lines: the task skips the partial line it starts in and
// reads through the line it ends in), or row groups of a Parquet file.
type readSpec struct {
	Kind      sourceKind
	Lo, Hi    int64 // range: ids; text: byte offsets; parquet: row groups
	Path      string
	Columns   []column
	HasHeader bool
	Data      []byte // srcBlock
}

// ReadOption is an option of the Read sources.
type ReadOption func(*readOptions)

type readOptions struct {
	splitBytes int64
	blocks     int
}

// SplitBytes is the size of file a read task reads (default 64 MiB).
func SplitBytes(n int64) ReadOption { return func(o *readOptions) { o.splitBytes = n } }

// Blocks is how many blocks Range and FromItems make (default: blocks of
// 128Ki rows, or 4096 items).
func Blocks(n int) ReadOption { return func(o *readOptions) { o.blocks = n } }

func newReadOptions(opts []ReadOption) readOptions {
	o := readOptions{splitBytes: 64 << 20}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// listFiles expands paths (files and directories, walked) to the files
// whose names end in ext, sorted so the plan is reproducible.
func listFiles(paths []string, ext string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadFile, err)
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := d.Name()
			if !d.IsDir() && strings.HasSuffix(name, ext) && !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "_") {
				out = append(out, q)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadFile, err)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no %s files in %v", ErrBadFile, ext, paths)
	}
	return out, nil
}

// splitText cuts each file into read tasks of about size bytes.
func splitText(kind sourceKind, files []string, cols []column, header bool, size int64) ([]readSpec, error) {
	var specs []readSpec
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadFile, err)
		}
		for lo := int64(0); lo < st.Size() || lo == 0; lo += size {
			specs = append(specs, readSpec{Kind: kind, Lo: lo, Hi: min(lo+size, st.Size()), Path: f, Columns: cols, HasHeader: header})
			if st.Size() == 0 {
				break
			}
		}
	}
	return specs, nil
}

// inferText reads the first lines of a text file to fix its schema: a
// column is int64 if every value seen parses as one, else float64, else
// bool, else string.
func inferColumns(names []string, samples [][]string) []column {
	cols := make([]column, len(names))
	for i, n := range names {
		t := "int64"
		for _, s := range samples {
			if i >= len(s) || s[i] == "" {
				continue
			}
			v := s[i]
			switch t {
			case "int64":
				if _, err := strconv.ParseInt(v, 10, 64); err == nil {
					continue
				}
				t = "float64"
				fallthrough
			case "float64":
				if _, err := strconv.ParseFloat(v, 64); err == nil {
					continue
				}
				t = "bool"
				fallthrough
			case "bool":
				if _, err := strconv.ParseBool(v); err == nil {
					continue
				}
				t = "string"
			}
		}
		cols[i] = column{Name: n, Type: t}
	}
	return cols
}

func arrowType(t string) arrow.DataType {
	switch t {
	case "int64":
		return arrow.PrimitiveTypes.Int64
	case "float64":
		return arrow.PrimitiveTypes.Float64
	case "bool":
		return arrow.FixedWidthTypes.Boolean
	}
	return arrow.BinaryTypes.String
}

func schemaOf(cols []column) *arrow.Schema {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = arrow.Field{Name: c.Name, Type: arrowType(c.Type), Nullable: true}
	}
	return arrow.NewSchema(fields, nil)
}

// csvSchema reads a CSV file's header and first rows.
func csvSchema(path string) ([]column, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFile, err)
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: no header: %v", ErrBadFile, path, err)
	}
	var samples [][]string
	for len(samples) < 1000 {
		rec, err := r.Read()
		if err != nil {
			break
		}
		samples = append(samples, rec)
	}
	return inferColumns(header, samples), nil
}

// jsonlSchema reads the first lines of a JSON-lines file.
func jsonlSchema(path string) ([]column, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFile, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	var names []string
	seen := map[string]int{}
	var samples [][]string
	for n := 0; sc.Scan() && n < 1000; n++ {
		obj, err := parseJSONLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrBadFile, path, n+1, err)
		}
		if obj == nil {
			continue
		}
		row := make([]string, len(names))
		for k, v := range obj {
			i, ok := seen[k]
			if !ok {
				i = len(names)
				seen[k] = i
				names = append(names, k)
				row = append(row, "")
			}
			row[i] = jsonText(v)
		}
		samples = append(samples, row)
	}
	idx := make([]int, len(names))
	for i := range idx {
		idx[i] = i
	}
	// Columns in name order, as rows' schemas are.
	sort.Slice(idx, func(a, b int) bool { return names[idx[a]] < names[idx[b]] })
	sorted := make([]string, len(names))
	for i, j := range idx {
		sorted[i] = names[j]
	}
	re := make([][]string, len(samples))
	for s, row := range samples {
		re[s] = make([]string, len(names))
		for i, j := range idx {
			if j < len(row) {
				re[s][i] = row[j]
			}
		}
	}
	return inferColumns(sorted, re), nil
}

func parseJSONLine(line []byte) (map[string]any, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func jsonText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		if _, err := strconv.ParseFloat(x, 64); err == nil {
			return "\x00" + x // a quoted number stays a string
		}
		if _, err := strconv.ParseBool(x); err == nil {
			return "\x00" + x
		}
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// readLines returns the whole lines of the byte range [lo, hi) of a file:
// a range owns the lines that start in it.
func readLines(path string, lo, hi int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFile, err)
	}
	defer f.Close()
	start := lo
	if lo > 0 {
		// Start after the first newline at or after lo-1: the line that
		// straddles lo belongs to the previous range.
		if _, err := f.Seek(lo-1, io.SeekStart); err != nil {
			return nil, err
		}
		br := bufio.NewReader(f)
		skipped, err := br.ReadBytes('\n')
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		start = lo - 1 + int64(len(skipped))
	}
	if start >= hi && lo > 0 {
		return nil, nil
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return nil, err
	}
	br := bufio.NewReader(f)
	var out bytes.Buffer
	pos := start
	for pos < hi || (hi == lo && lo == 0) {
		line, err := br.ReadBytes('\n')
		out.Write(line)
		pos += int64(len(line))
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// readSource runs a read task.
func readSource(ctx context.Context, s readSpec) (arrow.Record, error) {
	switch s.Kind {
	case srcRange:
		b := array.NewInt64Builder(memory.DefaultAllocator)
		defer b.Release()
		b.Reserve(int(s.Hi - s.Lo))
		for i := s.Lo; i < s.Hi; i++ {
			b.UnsafeAppend(i)
		}
		col := b.NewArray()
		schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
		return array.NewRecord(schema, []arrow.Array{col}, s.Hi-s.Lo), nil
	case srcCSV:
		return readCSV(s)
	case srcJSONL:
		return readJSONL(s)
	case srcParquet:
		return readParquet(ctx, s)
	case srcBlock:
		return decodeBlock(s.Data)
	}
	return nil, fmt.Errorf("%w: source kind %d", ErrInvalidArgument, s.Kind)
}

func readCSV(s readSpec) (arrow.Record, error) {
	text, err := readLines(s.Path, s.Lo, s.Hi)
	if err != nil {
		return nil, err
	}
	schema := schemaOf(s.Columns)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	r := csv.NewReader(bytes.NewReader(text))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	first := s.Lo == 0 && s.HasHeader
	for line := 1; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s (bytes %d-%d): %v", ErrBadFile, s.Path, s.Lo, s.Hi, err)
		}
		if first {
			first = false
			continue
		}
		if len(rec) != len(s.Columns) {
			return nil, fmt.Errorf("%w: %s (bytes %d-%d): a row of %d fields, the header has %d", ErrSchemaMismatch, s.Path, s.Lo, s.Hi, len(rec), len(s.Columns))
		}
		for i, v := range rec {
			if err := appendText(b.Field(i), s.Columns[i], v); err != nil {
				return nil, fmt.Errorf("%s (bytes %d-%d): %w", s.Path, s.Lo, s.Hi, err)
			}
		}
	}
	return b.NewRecord(), nil
}

// appendText appends a text field to a column of the inferred type.
func appendText(b array.Builder, c column, v string) error {
	if v == "" && c.Type != "string" {
		b.AppendNull()
		return nil
	}
	switch c.Type {
	case "int64":
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: column %q is int64 but holds %q", ErrSchemaMismatch, c.Name, v)
		}
		b.(*array.Int64Builder).Append(x)
	case "float64":
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%w: column %q is float64 but holds %q", ErrSchemaMismatch, c.Name, v)
		}
		b.(*array.Float64Builder).Append(x)
	case "bool":
		x, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%w: column %q is bool but holds %q", ErrSchemaMismatch, c.Name, v)
		}
		b.(*array.BooleanBuilder).Append(x)
	default:
		b.(*array.StringBuilder).Append(strings.TrimPrefix(v, "\x00"))
	}
	return nil
}

func readJSONL(s readSpec) (arrow.Record, error) {
	text, err := readLines(s.Path, s.Lo, s.Hi)
	if err != nil {
		return nil, err
	}
	schema := schemaOf(s.Columns)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for n, line := range bytes.Split(text, []byte("\n")) {
		obj, err := parseJSONLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: %s (bytes %d-%d) line %d: %v", ErrBadFile, s.Path, s.Lo, s.Hi, n+1, err)
		}
		if obj == nil {
			continue
		}
		for k := range obj {
			if _, ok := schema.FieldsByName(k); !ok {
				return nil, fmt.Errorf("%w: %s (bytes %d-%d) line %d: column %q is not in the schema %v", ErrSchemaMismatch, s.Path, s.Lo, s.Hi, n+1, k, fieldNames(schema))
			}
		}
		for i, c := range s.Columns {
			v := jsonText(obj[c.Name])
			if obj[c.Name] == nil {
				b.Field(i).AppendNull()
				continue
			}
			if err := appendText(b.Field(i), c, v); err != nil {
				return nil, fmt.Errorf("%s line %d: %w", s.Path, n+1, err)
			}
		}
	}
	return b.NewRecord(), nil
}

// parquetGroups is the number of row groups of a Parquet file.
func parquetGroups(path string) (int, error) {
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrBadFile, path, err)
	}
	defer rdr.Close()
	return rdr.NumRowGroups(), nil
}

func readParquet(ctx context.Context, s readSpec) (rec arrow.Record, err error) {
	defer func() {
		// The Parquet decoder panics on some corrupt files.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s is corrupt: %v", ErrBadFile, s.Path, p)
		}
	}()
	rdr, err := file.OpenParquetFile(s.Path, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadFile, s.Path, err)
	}
	defer rdr.Close()
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, memory.DefaultAllocator)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadFile, s.Path, err)
	}
	groups := make([]int, 0, s.Hi-s.Lo)
	for g := s.Lo; g < s.Hi; g++ {
		groups = append(groups, int(g))
	}
	cols := make([]int, rdr.MetaData().Schema.NumColumns())
	for i := range cols {
		cols[i] = i
	}
	tbl, err := fr.ReadRowGroups(ctx, cols, groups)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is corrupt: %v", ErrBadFile, s.Path, err)
	}
	defer tbl.Release()
	tr := array.NewTableReader(tbl, tbl.NumRows()+1)
	defer tr.Release()
	var recs []arrow.Record
	for tr.Next() {
		r := tr.Record()
		r.Retain()
		recs = append(recs, r)
	}
	return concatRecords(tbl.Schema(), recs)
}
