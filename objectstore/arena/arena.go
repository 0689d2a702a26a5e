// Package arena is the shared-memory half of a node's object store: one
// file under /dev/shm mapped MAP_SHARED by the raylet (read-write) and by
// its workers (read-only), and the allocator that carves it into objects.
// Workers import only this package, so they do not link the spill engine.
package arena

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Align is the alignment of every object: a cache line, so objects never
// share one and vectorised readers start on a boundary.
const Align = 64

// Map is the raylet's read-write mapping of the arena file. It owns the
// file: Close unmaps it and removes it. The whole capacity is mapped at
// once (address space is cheap), but its pages are reserved and faulted in
// only up to a high-water mark that Commit raises in steps as the
// allocator hands out higher offsets: a raylet that holds 100 MiB of
// objects holds ~100 MiB of memory, not its capacity. Not safe for
// concurrent use: the store calls Commit under its lock.
type Map struct {
	path      string
	f         *os.File // kept open for fallocate as the arena grows
	data      []byte
	committed int64 // bytes [0, committed) are reserved and faulted in
	prefault  time.Duration
}

// CommitStep is the granularity the committed part of an arena grows by:
// large enough that a stream of small objects commits rarely, small enough
// that an idle raylet holds little memory.
const CommitStep = 64 << 20

// ErrNoSpace is a Commit the file system cannot back (a full /dev/shm).
var ErrNoSpace = errors.New("arena: no space left for the arena's pages")

// DefaultDir is /dev/shm when it exists (tmpfs: the pages are memory) and
// os.TempDir otherwise, where the arena still works but may touch disk.
func DefaultDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// prefix starts every default arena name; the owner's PID follows it.
const prefix = "manta-objects-"

// DefaultPath is a fresh arena file name in DefaultDir, unique per process.
func DefaultPath() string {
	return filepath.Join(DefaultDir(), fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), time.Now().UnixNano()))
}

// RemoveStale deletes default-named arenas in dir whose owning process is
// gone. A raylet that crashes cannot remove its arena, and a tmpfs file of
// 30 % of RAM left behind would starve the next one. It returns the paths
// removed.
func RemoveStale(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		var pid, nanos int64
		if _, err := fmt.Sscanf(e.Name(), prefix+"%d-%d", &pid, &nanos); err != nil || pid <= 0 {
			continue
		}
		if pid == int64(os.Getpid()) || !errors.Is(unix.Kill(int(pid), 0), unix.ESRCH) {
			continue // ours, or the owner still runs (EPERM: alive, someone else's)
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err == nil {
			removed = append(removed, p)
		}
	}
	return removed, nil
}

// Create makes the arena file at path (which must not exist), sized to
// size bytes rounded up to a page, and maps it. No page is committed yet:
// Commit reserves and faults them in as objects need them.
func Create(path string, size int64) (*Map, error) {
	if size <= 0 {
		return nil, fmt.Errorf("arena: size %d must be positive", size)
	}
	page := int64(os.Getpagesize())
	size = (size + page - 1) / page * page
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("arena: %w", err)
	}
	fail := func(err error) (*Map, error) {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, err
	}
	// A sparse file: readers and writers see the whole capacity, yet tmpfs
	// holds only the pages Commit reserved.
	if err := f.Truncate(size); err != nil {
		return fail(fmt.Errorf("arena: %w", err))
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("arena: mmap %d bytes: %w", size, err))
	}
	return &Map{path: path, f: f, data: data}, nil
}

// Commit makes sure the bytes [0, end) are backed: it reserves the tmpfs
// pages (fallocate, so a full /dev/shm fails here with ErrNoSpace instead
// of killing the process with SIGBUS on a later write) and pre-faults them,
// since first writes into fresh tmpfs pages run at ~1.5 GB/s against
// ~20 GB/s into present ones (baselines row 3). The mark grows to end
// rounded up to CommitStep (capped at the size); it never shrinks.
func (m *Map) Commit(end int64) error {
	if end <= m.committed {
		return nil
	}
	if m.data == nil {
		return fmt.Errorf("arena: closed")
	}
	size := int64(len(m.data))
	if end > size {
		return fmt.Errorf("arena: commit of %d bytes beyond an arena of %d", end, size)
	}
	page := int64(os.Getpagesize())
	target := min(size, (end+CommitStep-1)/CommitStep*CommitStep)
	start := time.Now()
	err := m.reserve(m.committed, target)
	if errors.Is(err, ErrNoSpace) && target > end {
		// The full step does not fit; what this object needs may.
		target = (end + page - 1) / page * page
		err = m.reserve(m.committed, target)
	}
	if err != nil {
		return err
	}
	prefault(m.data[m.committed:target], page)
	m.committed = target
	m.prefault += time.Since(start)
	return nil
}

func (m *Map) reserve(from, to int64) error {
	err := unix.Fallocate(int(m.f.Fd()), 0, from, to-from)
	switch {
	case err == nil, errors.Is(err, unix.EOPNOTSUPP):
		// A file system without fallocate (not tmpfs): pages come on demand.
		return nil
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.ENOMEM):
		return fmt.Errorf("%w: reserve [%d, %d) of %s: %v", ErrNoSpace, from, to, m.path, err)
	}
	return fmt.Errorf("arena: reserve [%d, %d) of %s: %w", from, to, m.path, err)
}

// prefault installs writable page-table entries for data.
// MADV_POPULATE_WRITE (Linux 5.14) does it in the kernel; MAP_POPULATE on a
// shared mapping only read-faults, so older kernels get one write per page
// (safe: the pages are reserved, and fresh ones read as zero).
func prefault(data []byte, page int64) {
	if len(data) == 0 {
		return
	}
	if unix.Madvise(data, unix.MADV_POPULATE_WRITE) == nil {
		return
	}
	for i := int64(0); i < int64(len(data)); i += page {
		data[i] = 0
	}
}

// Path is the arena file, the name a worker passes to OpenReader.
func (m *Map) Path() string { return m.path }

// Size is the mapped size in bytes.
func (m *Map) Size() int64 { return int64(len(m.data)) }

// Bytes is the whole writable mapping; nil after Close.
func (m *Map) Bytes() []byte { return m.data }

// Committed is the bytes reserved and faulted in so far (the high-water
// mark of Commit).
func (m *Map) Committed() int64 { return m.committed }

// PrefaultTime is how long Commit spent reserving and faulting pages.
func (m *Map) PrefaultTime() time.Duration { return m.prefault }

// Close unmaps the arena and removes its file. Slices obtained from Bytes
// must not be used afterwards. Close is idempotent.
func (m *Map) Close() error {
	if m.data == nil {
		return nil
	}
	err := unix.Munmap(m.data)
	m.data = nil
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(m.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}
