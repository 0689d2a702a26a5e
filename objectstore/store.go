// Package objectstore holds a node's objects: the values too large to
// travel inline with a task's reply or spec. This first store keeps them in
// the raylet's memory; the object-store issue replaces it behind the same
// interface with shared memory, spilling and reference counting.
package objectstore

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
)

// ErrObjectNotFound is a Get of an object the store does not hold.
var ErrObjectNotFound = rpcerr.New(codes.NotFound, "OBJECT_NOT_FOUND", "object not found")

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
