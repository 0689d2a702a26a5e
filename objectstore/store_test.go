package objectstore

import (
	"errors"
	"testing"

	"github.com/manta-ray/manta/internal/ids"
)

func TestMemoryPutGetDelete(t *testing.T) {
	s := NewMemory()
	id := ids.ReturnID(ids.DriverTaskID("j"), 1)
	if _, err := s.Get(id); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("get of a missing object: %v", err)
	}
	if err := s.Put(id, Object{Data: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	_ = s.Put(id, Object{Data: []byte("second")}) // immutable: ignored
	o, err := s.Get(id)
	if err != nil || string(o.Data) != "abc" {
		t.Fatalf("get: %q %v", o.Data, err)
	}
	if n, b := s.Stats(); n != 1 || b != 3 {
		t.Fatalf("stats %d %d", n, b)
	}
	s.Delete(id)
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Fatalf("stats after delete %d %d", n, b)
	}
}
