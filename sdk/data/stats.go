package data

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
)

// execStats is what one execution did, per stage.
type execStats struct {
	mu     sync.Mutex
	start  time.Time
	end    time.Time
	stages []*stageStats
	peak   int64
}

// stageStats counts one stage's output.
type stageStats struct {
	label               string
	blocks, rows, bytes int64
	first, last         time.Time
}

func newExecStats() *execStats { return &execStats{start: time.Now()} }

func (e *execStats) stage(label string) *stageStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := &stageStats{label: label}
	e.stages = append(e.stages, s)
	return s
}

func (e *execStats) began(s *stageStats) {
	e.mu.Lock()
	if s.first.IsZero() {
		s.first = time.Now()
	}
	e.mu.Unlock()
}

func (e *execStats) ended(s *stageStats) {
	e.mu.Lock()
	s.last = time.Now()
	e.mu.Unlock()
}

func (s *stageStats) add(m blockMeta) {
	// Called by the stage's one collector; read after the execution.
	s.blocks++
	s.rows += m.Rows
	s.bytes += m.Bytes
}

func (e *execStats) finish(peak int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.end = time.Now()
	e.peak = peak
}

// String is a table: one line per operator (fused steps share a line).
func (e *execStats) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "execution: %v, peak bytes of blocks in the store %s\n", e.end.Sub(e.start).Round(time.Millisecond), humanize.IBytes(uint64(e.peak)))
	for _, s := range e.stages {
		wall := time.Duration(0)
		if !s.first.IsZero() {
			wall = s.last.Sub(s.first)
		}
		rate := ""
		if wall > 0 {
			rate = fmt.Sprintf(", %.0f rows/s", float64(s.rows)/wall.Seconds())
		}
		fmt.Fprintf(&b, "  %s: %v, %d blocks, %d rows, %s%s\n", s.label, wall.Round(time.Millisecond), s.blocks, s.rows, humanize.IBytes(uint64(s.bytes)), rate)
	}
	return b.String()
}
