package data

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// writer writes each block of a dataset to its own file in Dir. A block's
// file is named by its position in the stream, and written to a temporary
// name then renamed: a retried task (its node died) rewrites the same
// file instead of adding one, so no row is written twice. The driver
// writes _SUCCESS last, so a directory without it is known incomplete.
type writer struct {
	Dir    string
	Format string // parquet, csv
}

// successFile marks a complete output directory.
const successFile = "_SUCCESS"

func (w *writer) path(index int64) string {
	return filepath.Join(w.Dir, fmt.Sprintf("part-%06d.%s", index, w.Format))
}

func (w *writer) write(rec arrow.Record, index int64) error {
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return err
	}
	final := w.path(index)
	tmp, err := os.CreateTemp(w.Dir, ".tmp-"+filepath.Base(final)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	switch w.Format {
	case "parquet":
		props := parquet.NewWriterProperties(parquet.WithMaxRowGroupLength(1 << 20))
		fw, err := pqarrow.NewFileWriter(rec.Schema(), tmp, props, pqarrow.DefaultWriterProps())
		if err != nil {
			tmp.Close()
			return err
		}
		if err := fw.Write(rec); err != nil {
			fw.Close()
			return err
		}
		if err := fw.Close(); err != nil { // closes tmp too
			return err
		}
	case "csv":
		if err := writeCSV(tmp, rec); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
	default:
		tmp.Close()
		return fmt.Errorf("%w: format %q", ErrInvalidArgument, w.Format)
	}
	return os.Rename(tmp.Name(), final)
}

func writeCSV(f *os.File, rec arrow.Record) error {
	cw := csv.NewWriter(f)
	if err := cw.Write(fieldNames(rec.Schema())); err != nil {
		return err
	}
	row := make([]string, rec.NumCols())
	for i := 0; i < int(rec.NumRows()); i++ {
		for c := range row {
			row[c] = textOf(valueAt(rec.Column(c), i))
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func textOf(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return x
	case []byte:
		return string(x)
	case bool:
		return strconv.FormatBool(x)
	}
	return fmt.Sprint(v)
}
