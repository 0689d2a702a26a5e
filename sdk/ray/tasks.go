package ray

import (
	"sync"
	"sync/atomic"

	"github.com/manta-ray/manta/internal/ids"
)

// taskTable is the part of the owner's task manager that cancel needs:
// the tasks cancelled and not ended yet, and, in a worker, the tasks each
// running task submitted (for a recursive cancel). It has its own lock,
// held only for map operations.
type taskTable struct {
	mu        sync.Mutex
	cancelled map[ids.TaskID]struct{}
	children  map[ids.TaskID]map[ids.TaskID]struct{}
	// entries counts both maps' entries, so that the common case (no
	// cancel, no nested task) takes no lock per task.
	entries atomic.Int64
}

func (tt *taskTable) markCancelled(id ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.cancelled == nil {
		tt.cancelled = map[ids.TaskID]struct{}{}
	}
	if _, ok := tt.cancelled[id]; !ok {
		tt.cancelled[id] = struct{}{}
		tt.entries.Add(1)
	}
}

func (tt *taskTable) unmarkCancelled(id ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if _, ok := tt.cancelled[id]; ok {
		delete(tt.cancelled, id)
		tt.entries.Add(-1)
	}
}

func (tt *taskTable) isCancelled(id ids.TaskID) bool {
	if tt.entries.Load() == 0 {
		return false
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	_, ok := tt.cancelled[id]
	return ok
}

// ended forgets a task that completed (with a value or an error).
func (tt *taskTable) ended(t *task) {
	if tt.entries.Load() == 0 {
		return
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if _, ok := tt.cancelled[t.st.ID]; ok {
		delete(tt.cancelled, t.st.ID)
		tt.entries.Add(-1)
	}
	if kids := tt.children[t.parent]; kids != nil {
		if _, ok := kids[t.st.ID]; ok {
			delete(kids, t.st.ID)
			tt.entries.Add(-1)
		}
	}
}

// addChild notes that running task parent submitted child.
func (tt *taskTable) addChild(parent, child ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.children == nil {
		tt.children = map[ids.TaskID]map[ids.TaskID]struct{}{}
	}
	kids := tt.children[parent]
	if kids == nil {
		kids = map[ids.TaskID]struct{}{}
		tt.children[parent] = kids
	}
	if _, ok := kids[child]; !ok {
		kids[child] = struct{}{}
		tt.entries.Add(1)
	}
}

// takeChildren returns the unfinished tasks parent submitted and forgets
// them (as its children: they are being cancelled, or it ended).
func (tt *taskTable) takeChildren(parent ids.TaskID) []ids.TaskID {
	if tt.entries.Load() == 0 {
		return nil
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	kids := tt.children[parent]
	if len(kids) == 0 {
		return nil
	}
	delete(tt.children, parent)
	tt.entries.Add(-int64(len(kids)))
	out := make([]ids.TaskID, 0, len(kids))
	for k := range kids {
		out = append(out, k)
	}
	return out
}
