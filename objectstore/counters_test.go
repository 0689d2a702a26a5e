package objectstore

import (
	"bytes"
	"testing"
)

// TestCountersCountSpillsAndRestores fills a small store past its
// capacity, so primaries spill, then reads the first one back.
func TestCountersCountSpillsAndRestores(t *testing.T) {
	s := newShared(t, 1<<20, spillFiles)
	const size = 400 << 10
	for i := range 4 {
		if err := s.Put(oid(i), Object{Data: pattern(size, i)}); err != nil {
			t.Fatal(err)
		}
	}
	c := s.Counters()
	if c.Spills < 2 || c.SpilledBytes != c.Spills*size {
		t.Fatalf("after 1.6 MiB into a 1 MiB store: %+v", c)
	}
	if c.Restores != 0 {
		t.Fatalf("restores before any read: %+v", c)
	}
	o, err := s.Get(oid(0))
	if err != nil || !bytes.Equal(o.Data, pattern(size, 0)) {
		t.Fatalf("read of the spilled object: %v", err)
	}
	if c2 := s.Counters(); c2.Restores != 1 || c2.RestoredBytes != size {
		t.Fatalf("after reading a spilled object back: %+v", c2)
	}
}
