package arena

import (
	"fmt"
	"sort"
)

// Allocator hands out Align-aligned ranges of an arena: first fit over a
// free list kept in address order, coalescing a freed range with both
// neighbours. Address order makes first fit pack objects toward the start
// and leaves one large tail, which keeps fragmentation low for the usual
// put/free churn; when a request still finds no hole the store evicts or
// spills objects and retries (objects are never moved, since readers in
// other processes hold their offsets). Not safe for concurrent use: the
// store serialises calls under its lock.
type Allocator struct {
	size int64
	used int64
	free []span // sorted by off, never adjacent (always coalesced)
}

type span struct{ off, size int64 }

// NewAllocator manages [0, size) (size rounded down to Align).
func NewAllocator(size int64) *Allocator {
	size = size / Align * Align
	a := &Allocator{size: size}
	if size > 0 {
		a.free = []span{{0, size}}
	}
	return a
}

// RoundUp is the bytes an object of n bytes occupies; zero-sized objects
// still take one line so each has a distinct offset.
func RoundUp(n int64) int64 {
	if n <= 0 {
		return Align
	}
	return (n + Align - 1) / Align * Align
}

// Alloc reserves RoundUp(n) bytes and returns their offset, or false when
// no free range is large enough.
func (a *Allocator) Alloc(n int64) (int64, bool) {
	n = RoundUp(n)
	for i := range a.free {
		s := &a.free[i]
		if s.size < n {
			continue
		}
		off := s.off
		if s.size == n {
			a.free = append(a.free[:i], a.free[i+1:]...)
		} else {
			s.off += n
			s.size -= n
		}
		a.used += n
		return off, true
	}
	return 0, false
}

// Free returns the range [off, off+RoundUp(n)) obtained from Alloc. It
// panics on a range that overlaps free space: a double free would hand the
// same bytes to two objects, which must never go unnoticed.
func (a *Allocator) Free(off, n int64) {
	n = RoundUp(n)
	if off < 0 || off%Align != 0 || off+n > a.size {
		panic(fmt.Sprintf("arena: free of bad range [%d, +%d) in %d bytes", off, n, a.size))
	}
	i := sort.Search(len(a.free), func(i int) bool { return a.free[i].off >= off })
	if (i < len(a.free) && a.free[i].off < off+n) || (i > 0 && a.free[i-1].off+a.free[i-1].size > off) {
		panic(fmt.Sprintf("arena: double free of [%d, +%d)", off, n))
	}
	a.used -= n
	mergePrev := i > 0 && a.free[i-1].off+a.free[i-1].size == off
	mergeNext := i < len(a.free) && off+n == a.free[i].off
	switch {
	case mergePrev && mergeNext:
		a.free[i-1].size += n + a.free[i].size
		a.free = append(a.free[:i], a.free[i+1:]...)
	case mergePrev:
		a.free[i-1].size += n
	case mergeNext:
		a.free[i].off = off
		a.free[i].size += n
	default:
		a.free = append(a.free, span{})
		copy(a.free[i+1:], a.free[i:])
		a.free[i] = span{off, n}
	}
}

// Size is the bytes under management.
func (a *Allocator) Size() int64 { return a.size }

// Used is the bytes allocated (rounded sizes).
func (a *Allocator) Used() int64 { return a.used }

// LargestFree is the largest request Alloc would grant now.
func (a *Allocator) LargestFree() int64 {
	var m int64
	for _, s := range a.free {
		m = max(m, s.size)
	}
	return m
}

// FreeRanges is the number of separate free ranges (1 = unfragmented).
func (a *Allocator) FreeRanges() int { return len(a.free) }

// Truncate shrinks the managed range to [0, size) (rounded down to Align).
// Every byte beyond size must be free: the store calls it when the file
// system cannot back more of the arena than it already committed, and
// nothing was ever allocated past that mark. It panics otherwise.
func (a *Allocator) Truncate(size int64) {
	size = size / Align * Align
	if size >= a.size {
		return
	}
	last := len(a.free) - 1
	if last < 0 || a.free[last].off+a.free[last].size != a.size || a.free[last].off > size {
		panic(fmt.Sprintf("arena: truncate to %d over allocated bytes", size))
	}
	if a.free[last].off == size {
		a.free = a.free[:last]
	} else {
		a.free[last].size = size - a.free[last].off
	}
	a.size = size
}
