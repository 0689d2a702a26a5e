package arena

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reader is a read-only mapping of an arena, opened by a worker on the
// same node to read objects in place. The raylet tells the worker an
// object's (offset, size) and pins it for as long as the worker reads.
type Reader struct {
	data []byte
}

// OpenReader maps the arena file at path read-only. Pages are not faulted
// in here: a worker usually reads a few objects of a large arena, and View
// populates just the range it returns.
func OpenReader(path string) (*Reader, error) {
	data, err := mapFile(path, os.O_RDONLY, unix.PROT_READ)
	if err != nil {
		return nil, err
	}
	return &Reader{data: data}, nil
}

// mapFile maps the whole arena file at path MAP_SHARED, opened with flag
// and mapped with prot.
func mapFile(path string, flag, prot int) ([]byte, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("arena: %w", err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("arena: %w", err)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("arena: %s is empty", path)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("arena: mmap %s: %w", path, err)
	}
	return data, nil
}

// View returns the size bytes at off without copying. The slice is backed
// by the shared mapping: writing to it faults, and it is valid only while
// the raylet keeps the object pinned and the Reader open.
func (r *Reader) View(off, size int64) ([]byte, error) {
	if r.data == nil {
		return nil, fmt.Errorf("arena: reader closed")
	}
	if off < 0 || size < 0 || off > int64(len(r.data))-size {
		return nil, fmt.Errorf("arena: range [%d, +%d) outside an arena of %d bytes", off, size, len(r.data))
	}
	v := r.data[off : off+size : off+size]
	if size > 0 {
		// One madvise maps the whole range instead of one fault per page; an
		// older kernel without MADV_POPULATE_READ just faults lazily.
		page := int64(os.Getpagesize())
		lo := off / page * page
		_ = unix.Madvise(r.data[lo:off+size], unix.MADV_POPULATE_READ)
	}
	return v, nil
}

// Size is the mapped size in bytes.
func (r *Reader) Size() int64 { return int64(len(r.data)) }

// Close unmaps the arena. Close is idempotent.
func (r *Reader) Close() error {
	if r.data == nil {
		return nil
	}
	err := unix.Munmap(r.data)
	r.data = nil
	return err
}

// Holds says whether b's bytes lie inside this mapping (b is a view from
// View rather than a copy).
func (r *Reader) Holds(b []byte) bool {
	if r.data == nil || len(b) == 0 {
		return false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(r.data)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= base && p+uintptr(len(b)) <= base+uintptr(len(r.data))
}
