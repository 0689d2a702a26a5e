package raylet

// GPU indices per lease, as Ray's resource instances: the node's GPU
// quantity says how many leases may hold GPUs, these say which ones, so
// that concurrent leases get disjoint devices and CUDA_VISIBLE_DEVICES
// in their workers does not overlap. Whole GPUs only: a fractional
// request is counted in the quantity but gets no index (its worker
// sees every device, as before).

import (
	"math"

	"github.com/manta-ray/manta/raylet/resources"
)

// gpuSlots is the node's GPU indices, under Raylet.mu.
type gpuSlots struct {
	busy []bool // by index
}

func newGPUSlots(total resources.Set) *gpuSlots {
	return &gpuSlots{busy: make([]bool, int(math.Floor(total[resources.GPU])))}
}

// take assigns the lowest free indices to a request of n GPUs; nil when
// n is not a whole number or, defensively, when too few are free (the
// quantity check should have prevented it).
func (g *gpuSlots) take(n float64) []int32 {
	if n < 1 || n != math.Trunc(n) {
		return nil
	}
	var out []int32
	for i, b := range g.busy {
		if len(out) == int(n) {
			break
		}
		if !b {
			out = append(out, int32(i))
		}
	}
	if len(out) < int(n) {
		return nil
	}
	for _, i := range out {
		g.busy[i] = true
	}
	return out
}

// put frees indices taken by take.
func (g *gpuSlots) put(ids []int32) {
	if g == nil {
		return
	}
	for _, i := range ids {
		if int(i) < len(g.busy) {
			g.busy[i] = false
		}
	}
}
