package arena

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Writer is a read-write mapping of an arena, opened by a client on the
// same node (a worker or a driver) to fill objects it created with the
// raylet's CreateObject, so a large Put is one copy into shared memory
// instead of a stream through a socket. A client writes only the range the
// raylet reserved for it, and only until it seals or aborts the object.
type Writer struct {
	data []byte
}

// OpenWriter maps the arena file at path read-write (MAP_SHARED).
func OpenWriter(path string) (*Writer, error) {
	data, err := mapFile(path, os.O_RDWR, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return nil, err
	}
	return &Writer{data: data}, nil
}

// Range returns the size bytes at off for writing, without copying.
func (w *Writer) Range(off, size int64) ([]byte, error) {
	if w.data == nil {
		return nil, fmt.Errorf("arena: writer closed")
	}
	if off < 0 || size < 0 || off > int64(len(w.data))-size {
		return nil, fmt.Errorf("arena: range [%d, +%d) outside an arena of %d bytes", off, size, len(w.data))
	}
	return w.data[off : off+size : off+size], nil
}

// Size is the mapped size in bytes.
func (w *Writer) Size() int64 { return int64(len(w.data)) }

// Close unmaps the arena. Close is idempotent.
func (w *Writer) Close() error {
	if w.data == nil {
		return nil
	}
	err := unix.Munmap(w.data)
	w.data = nil
	return err
}
