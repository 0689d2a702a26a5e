package arena

import (
	"math/rand/v2"
	"testing"
)

func TestAllocAlignmentAndExhaustion(t *testing.T) {
	a := NewAllocator(1000) // rounds down to 960
	if a.Size() != 960 {
		t.Fatalf("size %d", a.Size())
	}
	var offs []int64
	for _, n := range []int64{1, 0, 63, 64, 65} {
		off, ok := a.Alloc(n)
		if !ok || off%Align != 0 {
			t.Fatalf("alloc %d: off %d ok %v", n, off, ok)
		}
		offs = append(offs, off)
	}
	// 1, 0, 63, 64 take a line each; 65 takes two: 6 lines used.
	if a.Used() != 6*Align {
		t.Fatalf("used %d", a.Used())
	}
	if _, ok := a.Alloc(a.Size() - a.Used() + 1); ok {
		t.Fatal("alloc beyond free space succeeded")
	}
	off, ok := a.Alloc(a.Size() - a.Used())
	if !ok {
		t.Fatal("alloc of exactly the free space failed")
	}
	if _, ok := a.Alloc(1); ok || a.LargestFree() != 0 {
		t.Fatal("full allocator granted a request")
	}
	a.Free(off, a.Size()-6*Align)
	for i, n := range []int64{1, 0, 63, 64, 65} {
		a.Free(offs[i], n)
	}
	if a.Used() != 0 || a.FreeRanges() != 1 || a.LargestFree() != a.Size() {
		t.Fatalf("after freeing all: used %d ranges %d largest %d", a.Used(), a.FreeRanges(), a.LargestFree())
	}
}

func TestAllocCoalescesBothNeighbours(t *testing.T) {
	a := NewAllocator(10 * Align)
	var o [10]int64
	for i := range o {
		o[i], _ = a.Alloc(Align)
	}
	a.Free(o[1], Align)
	a.Free(o[3], Align)
	if a.FreeRanges() != 2 {
		t.Fatalf("ranges %d, want 2 holes", a.FreeRanges())
	}
	a.Free(o[2], Align) // joins 1..3
	if a.FreeRanges() != 1 || a.LargestFree() != 3*Align {
		t.Fatalf("ranges %d largest %d", a.FreeRanges(), a.LargestFree())
	}
	a.Free(o[9], Align)
	a.Free(o[8], Align) // joins with the next
	if a.FreeRanges() != 2 || a.LargestFree() != 3*Align {
		t.Fatalf("ranges %d largest %d", a.FreeRanges(), a.LargestFree())
	}
}

func TestAllocFragmentationFirstFitReusesHoles(t *testing.T) {
	a := NewAllocator(100 * Align)
	var o [100]int64
	for i := range o {
		o[i], _ = a.Alloc(Align)
	}
	for i := 0; i < 100; i += 2 { // free every other line: 50 free lines, none adjacent
		a.Free(o[i], Align)
	}
	if a.FreeRanges() != 50 || a.LargestFree() != Align {
		t.Fatalf("ranges %d largest %d", a.FreeRanges(), a.LargestFree())
	}
	if _, ok := a.Alloc(2 * Align); ok {
		t.Fatal("a two-line request fit into one-line holes")
	}
	if off, ok := a.Alloc(Align); !ok || off != 0 {
		t.Fatalf("first fit should take the lowest hole, got %d %v", off, ok)
	}
}

func TestAllocDoubleFreePanics(t *testing.T) {
	a := NewAllocator(4 * Align)
	off, _ := a.Alloc(Align)
	a.Free(off, Align)
	defer func() {
		if recover() == nil {
			t.Fatal("double free did not panic")
		}
	}()
	a.Free(off, Align)
}

// TestAllocRandomAgainstModel checks, over random churn, that no two live
// ranges overlap, all are aligned, and the free list stays coalesced.
func TestAllocRandomAgainstModel(t *testing.T) {
	const lines = 4096
	a := NewAllocator(lines * Align)
	owner := make([]int, lines) // 0 = free, else the allocation's tag
	type alloc struct{ off, n int64 }
	live := map[int]alloc{}
	r := rand.New(rand.NewPCG(1, 2))
	for step := 1; step < 20000; step++ {
		if len(live) > 0 && r.IntN(2) == 0 {
			for tag, al := range live {
				a.Free(al.off, al.n)
				for l := al.off / Align; l < (al.off+RoundUp(al.n))/Align; l++ {
					owner[l] = 0
				}
				delete(live, tag)
				break
			}
			continue
		}
		n := int64(r.IntN(20*Align) + 1)
		off, ok := a.Alloc(n)
		if !ok {
			if a.LargestFree() >= RoundUp(n) {
				t.Fatalf("step %d: refused %d with a %d hole", step, n, a.LargestFree())
			}
			continue
		}
		if off%Align != 0 {
			t.Fatalf("unaligned %d", off)
		}
		for l := off / Align; l < (off+RoundUp(n))/Align; l++ {
			if owner[l] != 0 {
				t.Fatalf("step %d: line %d given twice", step, l)
			}
			owner[l] = step
		}
		live[step] = alloc{off, n}
	}
	var used int64
	for _, al := range live {
		used += RoundUp(al.n)
	}
	if used != a.Used() {
		t.Fatalf("used %d, model %d", a.Used(), used)
	}
	for i := 1; i < len(a.free); i++ {
		if a.free[i-1].off+a.free[i-1].size >= a.free[i].off {
			t.Fatalf("free list not sorted and coalesced at %d: %v %v", i, a.free[i-1], a.free[i])
		}
	}
}

func TestAllocTruncateKeepsLiveRanges(t *testing.T) {
	a := NewAllocator(100 * Align)
	o1, _ := a.Alloc(10 * Align)
	o2, _ := a.Alloc(10 * Align)
	a.Free(o1, 10*Align)
	a.Truncate(30 * Align)
	if a.Size() != 30*Align || a.Used() != 10*Align || a.LargestFree() != 10*Align || a.FreeRanges() != 2 {
		t.Fatalf("size %d used %d largest %d ranges %d", a.Size(), a.Used(), a.LargestFree(), a.FreeRanges())
	}
	if _, ok := a.Alloc(11 * Align); ok {
		t.Fatal("allocated past the truncated size")
	}
	a.Truncate(20 * Align) // the tail span goes entirely
	if a.FreeRanges() != 1 || a.Size() != 20*Align {
		t.Fatalf("ranges %d size %d", a.FreeRanges(), a.Size())
	}
	a.Free(o2, 10*Align)
	if a.Used() != 0 || a.LargestFree() != 20*Align {
		t.Fatalf("used %d largest %d", a.Used(), a.LargestFree())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("truncating over an allocated range did not panic")
		}
	}()
	a.Alloc(20 * Align)
	a.Truncate(10 * Align)
}
