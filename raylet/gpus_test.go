package raylet

import (
	"slices"
	"testing"

	"github.com/manta-ray/manta/raylet/resources"
)

func TestGPUSlots(t *testing.T) {
	g := newGPUSlots(resources.Set{resources.GPU: 4})
	a := g.take(2)
	b := g.take(2)
	if !slices.Equal(a, []int32{0, 1}) || !slices.Equal(b, []int32{2, 3}) {
		t.Fatalf("take(2) twice = %v, %v; want [0 1] [2 3]", a, b)
	}
	if c := g.take(1); c != nil {
		t.Fatalf("take(1) with none free = %v; want nil", c)
	}
	g.put(a)
	if c := g.take(1); !slices.Equal(c, []int32{0}) {
		t.Fatalf("after put, take(1) = %v; want [0]", c)
	}
	if c := g.take(0.5); c != nil {
		t.Fatalf("a fractional request got indices %v", c)
	}
	var none *gpuSlots
	none.put([]int32{1}) // a raylet that never granted: no panic
}
