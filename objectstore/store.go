// Package objectstore holds a node's objects: the values too large to
// travel inline with a task's reply or spec. Memory keeps them in the
// raylet's heap; Shared keeps them in a shared-memory arena that workers
// map read-only (package arena), spills primary copies to disk (package
// spill) and drops secondary copies LRU. Both implement Store; Shared also
// implements ZeroCopy, the in-place surface the raylet and workers use.
package objectstore

import (
	"fmt"
	"sync"

	"github.com/manta-ray/manta/internal/ids"
)

// Object is a stored value and its encoding (a rayletpb.Format).
type Object struct {
	Data   []byte
	Format int32
}

// Store is a node's object store. Objects are immutable: a second Put of
// the same ID keeps the first value (a retried task reproduces it).
type Store interface {
	Put(id ids.ObjectID, obj Object) error
	Get(id ids.ObjectID) (Object, error)
	Delete(id ids.ObjectID)
	// Stats returns the number of objects and their bytes.
	Stats() (objects, bytes int64)
}

// ZeroCopy is a Store whose objects can be written and read in place, and
// located in a shared arena by workers on the same node. Callers that can
// use it type-assert a Store; Memory does not implement it.
type ZeroCopy interface {
	Store
	// Create reserves an object's bytes for the caller to fill; Seal
	// publishes it, Abort drops it.
	Create(id ids.ObjectID, size int64, o CreateOptions) ([]byte, error)
	Seal(id ids.ObjectID) error
	Abort(id ids.ObjectID)
	// Acquire pins an object (restoring it if spilled) until View.Release.
	Acquire(id ids.ObjectID) (*View, error)
	Locate(id ids.ObjectID) Location
	Locations() []Location
	// ArenaPath is the file a worker maps with arena.OpenReader.
	ArenaPath() string
	Usage() Usage
	Close() error
}

// Memory is a Store in the process's memory.
type Memory struct {
	mu    sync.RWMutex
	objs  map[ids.ObjectID]Object
	bytes int64
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{objs: map[ids.ObjectID]Object{}} }

func (m *Memory) Put(id ids.ObjectID, obj Object) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[id]; ok {
		return nil
	}
	m.objs[id] = obj
	m.bytes += int64(len(obj.Data))
	return nil
}

func (m *Memory) Get(id ids.ObjectID) (Object, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	o, ok := m.objs[id]
	if !ok {
		return Object{}, fmt.Errorf("%w: %s", ErrObjectNotFound, id)
	}
	return o, nil
}

func (m *Memory) Delete(id ids.ObjectID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if o, ok := m.objs[id]; ok {
		m.bytes -= int64(len(o.Data))
		delete(m.objs, id)
	}
}

func (m *Memory) Stats() (int64, int64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.objs)), m.bytes
}
