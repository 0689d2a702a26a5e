package ray

import (
	"sync"

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
}

// submitUnlessCancelled runs submit unless id was cancelled, atomically
// with cancel's mark: a task is either submitted before the mark (and the
// submitter then has it to cancel) or never.
func (tt *taskTable) submitUnlessCancelled(id ids.TaskID, submit func()) bool {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if _, ok := tt.cancelled[id]; ok {
		return false
	}
	submit()
	return true
}

func (tt *taskTable) markCancelled(id ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.cancelled == nil {
		tt.cancelled = map[ids.TaskID]struct{}{}
	}
	tt.cancelled[id] = struct{}{}
}

func (tt *taskTable) unmarkCancelled(id ids.TaskID) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	delete(tt.cancelled, id)
}

func (tt *taskTable) isCancelled(id ids.TaskID) bool {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	_, ok := tt.cancelled[id]
	return ok
}

// ended forgets a task that completed (with a value or an error).
func (tt *taskTable) ended(t *task) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if len(tt.cancelled) > 0 {
		delete(tt.cancelled, t.st.ID)
	}
	if kids := tt.children[t.parent]; kids != nil {
		delete(kids, t.st.ID)
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
	kids[child] = struct{}{}
}

// takeChildren returns the unfinished tasks parent submitted and forgets
// them (as its children: they are being cancelled, or it ended).
func (tt *taskTable) takeChildren(parent ids.TaskID) []ids.TaskID {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	kids := tt.children[parent]
	delete(tt.children, parent)
	out := make([]ids.TaskID, 0, len(kids))
	for k := range kids {
		out = append(out, k)
	}
	return out
}
