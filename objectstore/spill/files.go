package spill

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Files spills each object to its own file in dir: one write(2), one
// read(2), unlink to delete. No index, no compaction, no garbage.
type Files struct {
	dir string
}

// OpenFiles uses dir (created if missing) for spill files.
func OpenFiles(dir string) (*Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spill: %w", err)
	}
	return &Files{dir: dir}, nil
}

func (f *Files) path(key []byte) string { return filepath.Join(f.dir, hex.EncodeToString(key)) }

func (f *Files) Write(key, data []byte) error {
	p := f.path(key)
	tmp := p + ".tmp"
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	_, werr := fd.Write(data)
	cerr := fd.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		// Rename makes a half-written file invisible to ReadInto.
		werr = os.Rename(tmp, p)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		if isNoSpace(werr) {
			return diskFull("file write", len(data), werr)
		}
		return fmt.Errorf("spill: write of %d bytes: %w", len(data), werr)
	}
	return nil
}

func (f *Files) ReadInto(key, dst []byte) error {
	fd, err := os.Open(f.path(key))
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotSpilled
	}
	if err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	defer fd.Close()
	if st, err := fd.Stat(); err != nil || st.Size() != int64(len(dst)) {
		return fmt.Errorf("spill: %s holds %d bytes, want %d (%v)", f.path(key), sizeOf(st), len(dst), err)
	}
	if _, err := io.ReadFull(fd, dst); err != nil {
		return fmt.Errorf("spill: read %s: %w", f.path(key), err)
	}
	return nil
}

func (f *Files) Delete(key []byte) error {
	err := os.Remove(f.path(key))
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotSpilled
	}
	return err
}

func (f *Files) Location(key []byte) string { return f.path(key) }

func (f *Files) Close() error { return nil }

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return -1
	}
	return st.Size()
}
