package objectstore

// Counters are a Shared store's cumulative counts since it opened, for
// metrics (Usage has the levels).
type Counters struct {
	Spills        int64 // primary copies written to disk
	SpilledBytes  int64
	Restores      int64 // spilled objects read back into the arena
	RestoredBytes int64
}

// Counters returns the store's cumulative counts.
func (s *Shared) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}
