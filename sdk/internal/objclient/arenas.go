package objclient

import (
	"sync"

	"github.com/manta-ray/manta/objectstore/arena"
)

// arenas caches this process's mappings of node arenas: one per arena
// path, kept until the client closes (mapping a multi-GiB file per object
// would cost more than the copy it saves).
type arenas struct {
	// mu is held shared by every access to mapped bytes and exclusively by
	// close, which unmaps them: an access never outlives its mapping.
	mu sync.RWMutex
	// openMu guards the maps and closed.
	openMu  sync.Mutex
	closed  bool
	writers map[string]*arena.Writer
	readers map[string]*arena.Reader
}

// writer returns the cached writable mapping of path; mu is held shared.
func (a *arenas) writer(path string) (*arena.Writer, error) {
	a.openMu.Lock()
	defer a.openMu.Unlock()
	if a.closed {
		return nil, ErrClosed
	}
	if w := a.writers[path]; w != nil {
		return w, nil
	}
	w, err := arena.OpenWriter(path)
	if err != nil {
		return nil, err
	}
	if a.writers == nil {
		a.writers = map[string]*arena.Writer{}
	}
	a.writers[path] = w
	return w, nil
}

// reader returns the cached read-only mapping of path; mu is held shared.
func (a *arenas) reader(path string) (*arena.Reader, error) {
	a.openMu.Lock()
	defer a.openMu.Unlock()
	if a.closed {
		return nil, ErrClosed
	}
	if r := a.readers[path]; r != nil {
		return r, nil
	}
	r, err := arena.OpenReader(path)
	if err != nil {
		return nil, err
	}
	if a.readers == nil {
		a.readers = map[string]*arena.Reader{}
	}
	a.readers[path] = r
	return r, nil
}

// holds says whether b is a view of one of the arenas this process mapped.
func (a *arenas) holds(b []byte) bool {
	a.openMu.Lock()
	defer a.openMu.Unlock()
	for _, r := range a.readers {
		if r.Holds(b) {
			return true
		}
	}
	return false
}

// close unmaps every arena once no access is in progress.
func (a *arenas) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.openMu.Lock()
	defer a.openMu.Unlock()
	a.closed = true
	for _, w := range a.writers {
		w.Close()
	}
	for _, r := range a.readers {
		r.Close()
	}
	a.writers, a.readers = nil, nil
}
