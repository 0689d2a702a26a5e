package cpbench

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// applyStats summarises the leader's group commit from its registry: Raft
// entries proposed, mean writes per entry, mean entry round trip.
type applyStats struct {
	Entries   uint64
	Commands  float64
	ApplySecs float64
}

func (s applyStats) sub(o applyStats) applyStats {
	return applyStats{s.Entries - o.Entries, s.Commands - o.Commands, s.ApplySecs - o.ApplySecs}
}

func (s applyStats) String() string {
	if s.Entries == 0 {
		return "entries=0"
	}
	return fmt.Sprintf("entries=%d writes/entry=%.1f entry_rtt=%.2fms", s.Entries, s.Commands/float64(s.Entries),
		1000*s.ApplySecs/float64(s.Entries))
}

func gatherApplyStats(g prometheus.Gatherer) applyStats {
	var s applyStats
	mfs, err := g.Gather()
	if err != nil {
		return s
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			switch {
			case strings.HasSuffix(mf.GetName(), "raft_apply_batch_commands"):
				s.Entries, s.Commands = h.GetSampleCount(), h.GetSampleSum()
			case strings.HasSuffix(mf.GetName(), "raft_apply_duration_seconds"):
				s.ApplySecs = h.GetSampleSum()
			}
		}
	}
	return s
}
