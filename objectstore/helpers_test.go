package objectstore

import (
	"fmt"

	"github.com/manta-ray/manta/internal/ids"
)

// spillID spills one object and frees its memory now, for tests and
// benchmarks that need an object on disk without filling the store.
func (s *Shared) spillID(id ids.ObjectID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objs[id]
	if !ok || !e.inMem || !e.sealed {
		return fmt.Errorf("%w: %s", ErrObjectNotFound, id)
	}
	if e.onDisk {
		s.freeMemLocked(e)
		return nil
	}
	if s.spiller == nil {
		return fmt.Errorf("spilling is off")
	}
	return s.spillLocked(e)
}

// dumpLRU describes the objects in memory, for failure messages.
func (s *Shared) dumpLRU() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out string
	for el := s.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*entry)
		out += fmt.Sprintf("%s %+v\n", e.id, *e)
	}
	return out
}

// quiesce waits until no spill or restore is in flight (the background
// spill loop may still be writing an object the test already deleted).
func (s *Shared) quiesce() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.inflight > 0 {
		s.changed.Wait()
	}
}
