package fsm

import (
	"bytes"
	"container/heap"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// The lineage table: for every task whose outputs may still be needed, the
// spec to run it again. Owners write records in batches (lineage.Recorder);
// any head can read them, so whichever head leads can drive reconstruction.
//
// A record goes when
//   - garbage: every return object is released by its owner AND no live
//     record takes one of its outputs as an argument; dropping a record
//     makes its producers' outputs unreferenced in turn, so it cascades;
//   - its job ends (FinishJob);
//   - the store is over its bound (LineageCommand.max_bytes/max_records):
//     finished records first, oldest first, then the oldest unfinished.
//     Evicted task IDs are remembered (MaxLineageEvicted of them) so a
//     later reconstruction can say "lineage evicted" rather than "unknown".

// Defaults of the bound, used when a command carries none. The leader stamps
// its configured bound into every LineageCommand, so heads never disagree.
const (
	DefaultMaxLineageBytes   = 256 << 20
	DefaultMaxLineageRecords = 1 << 20
)

// MaxLineageEvicted bounds the memory of evicted task IDs. It shapes
// replicated state, so it is a constant.
const MaxLineageEvicted = 1 << 16

// lineageTable holds the records and what is derived from them. Only
// records, evicted and evictions are replicated (in snapshots); the rest is
// rebuilt from them on restore.
type lineageTable struct {
	records map[ids.TaskID]*pb.TaskRecord
	size    map[ids.TaskID]uint64 // proto.Size of each record, as accounted
	bytes   uint64
	jobs    map[string]*jobLineage
	// deps counts, per producing task, the live records' reference
	// arguments to its outputs. The producer need not be recorded.
	deps      map[ids.TaskID]int
	order     evictHeap
	evicted   evictedRing
	evictions uint64
	// owners indexes the records by owner address, rebuilding those with
	// a rebuild under way (adoption.go); both derived.
	owners     map[string]map[ids.TaskID]struct{}
	rebuilding map[ids.TaskID]struct{}
}

type jobLineage struct {
	tasks map[ids.TaskID]struct{}
	bytes uint64
}

func newLineageTable() lineageTable {
	return lineageTable{
		records:    map[ids.TaskID]*pb.TaskRecord{},
		size:       map[ids.TaskID]uint64{},
		jobs:       map[string]*jobLineage{},
		deps:       map[ids.TaskID]int{},
		evicted:    evictedRing{cap: MaxLineageEvicted},
		owners:     map[string]map[ids.TaskID]struct{}{},
		rebuilding: map[ids.TaskID]struct{}{},
	}
}

// evictKey orders records for eviction: finished ones (class 0) by the
// index they finished at, then unfinished ones (class 1) by the index they
// were recorded at; the task ID breaks ties. Every part is replicated, so a
// restored head evicts the same records as one that applied the whole log.
type evictKey struct {
	class uint8
	index uint64
	id    ids.TaskID
}

func keyOf(id ids.TaskID, r *pb.TaskRecord) evictKey {
	if finished(r.State) {
		return evictKey{0, r.FinishedIndex, id}
	}
	return evictKey{1, r.RecordIndex, id}
}

func (a evictKey) less(b evictKey) bool {
	if a.class != b.class {
		return a.class < b.class
	}
	if a.index != b.index {
		return a.index < b.index
	}
	return string(a.id[:]) < string(b.id[:])
}

// evictHeap holds keys lazily: a key whose record is gone or has another
// key now is skipped when popped, and the heap is rebuilt when stale keys
// outnumber live ones.
type evictHeap []evictKey

func (h evictHeap) Len() int           { return len(h) }
func (h evictHeap) Less(i, j int) bool { return h[i].less(h[j]) }
func (h evictHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *evictHeap) Push(x any)        { *h = append(*h, x.(evictKey)) }
func (h *evictHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	*h = old[:len(old)-1]
	return k
}

// evictedRing remembers the most recently evicted task IDs.
type evictedRing struct {
	cap   int
	set   map[ids.TaskID]struct{}
	order []ids.TaskID // oldest first
}

func (e *evictedRing) add(id ids.TaskID) {
	if e.set == nil {
		e.set = map[ids.TaskID]struct{}{}
	}
	if _, ok := e.set[id]; ok {
		return
	}
	if len(e.order) >= e.cap {
		delete(e.set, e.order[0])
		e.order = e.order[1:]
	}
	e.order = append(e.order, id)
	e.set[id] = struct{}{}
}

func (e *evictedRing) has(id ids.TaskID) bool {
	_, ok := e.set[id]
	return ok
}

func finished(s pb.TaskState) bool {
	return s == pb.TaskState_TASK_FINISHED || s == pb.TaskState_TASK_FAILED
}

// ---- apply ------------------------------------------------------------------

func applyLineage(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.LineageCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	l := &f.lineage
	var recorded uint64
	for _, r := range cmd.Records {
		id, err := ids.TaskFromBytes(r.TaskId)
		if err != nil {
			return errResult(rpcerr.Wrapf(ErrBadCommand, "record: %v", err))
		}
		var superseded []ids.TaskID
		if old, ok := l.records[id]; ok {
			if old.OwnerAddress == r.OwnerAddress || r.OwnerAddress == "" {
				continue // a retry or a re-record: the first one stands
			}
			// Another owner: task IDs are derived from the parent task's, so
			// a parent run again by another worker (its first worker died)
			// submits children with the same IDs. The new owner's record
			// stands: the refs in use name it.
			superseded = l.remove(id)
		}
		if !f.jobKeepsLineageLocked(r.JobId) {
			continue // its job ended: nothing will ask for this lineage
		}
		// The decoded command is this Apply's own: its record is stored
		// as is, not copied (one allocation less per record).
		// Fields unknown to this version are dropped, as a copy would.
		n := r
		n.ProtoReflect().SetUnknown(nil)
		n.SubmittedUnixNano, n.FinishedUnixNano = c.timeNanos, 0
		n.RecordIndex, n.FinishedIndex = c.index, 0
		n.Released = nil
		n.AdoptedUnixNano, n.Rebuilder, n.RebuildUnixNano = 0, "", 0
		if (f.dead.by[n.OwnerAddress] != nil && !f.isDriverLocked(n.OwnerAddress)) || f.jobRetainedLocked(n.JobId) {
			// Its owner was declared dead before its record arrived.
			n.AdoptedUnixNano = c.timeNanos
		}
		if n.State == pb.TaskState_TASK_STATE_UNSPECIFIED {
			n.State = pb.TaskState_TASK_SUBMITTED
		}
		if finished(n.State) {
			n.FinishedUnixNano, n.FinishedIndex = c.timeNanos, c.index
		}
		l.insert(id, n)
		recorded++
		l.collect(superseded)
	}
	for _, u := range cmd.Updates {
		id, err := ids.TaskFromBytes(u.TaskId)
		if err != nil {
			return errResult(rpcerr.Wrapf(ErrBadCommand, "update: %v", err))
		}
		old, ok := l.records[id]
		if !ok || u.Attempt < old.Attempts {
			continue // released, evicted, or about an older attempt
		}
		n := shallowRecord(old)
		n.Attempts = u.Attempt
		if u.State != pb.TaskState_TASK_STATE_UNSPECIFIED {
			n.State = u.State
		}
		if u.NodeId != "" {
			n.NodeId = u.NodeId
		}
		if u.Error != "" {
			n.LastError = u.Error
		}
		if finished(n.State) {
			n.Rebuilder, n.RebuildUnixNano = "", 0 // a rebuild, if any, is over
		}
		if finished(n.State) && !finished(old.State) {
			n.FinishedUnixNano, n.FinishedIndex = c.timeNanos, c.index
		} else if !finished(n.State) {
			n.FinishedUnixNano, n.FinishedIndex = 0, 0
		}
		l.replace(id, n)
	}
	var gcCandidates []ids.TaskID
	for _, b := range cmd.ReleasedObjectIds {
		o, err := ids.ObjectFromBytes(b)
		if err != nil {
			return errResult(rpcerr.Wrapf(ErrBadCommand, "release: %v", err))
		}
		if o.IsPut() {
			continue // Put objects have no lineage
		}
		id := o.Task()
		old, ok := l.records[id]
		if !ok || o.Index() == 0 || int64(o.Index()) > int64(old.NumReturns) || isReleased(old, o.Index()) {
			continue
		}
		n := shallowRecord(old)
		n.Released = insertSorted(old.Released, o.Index())
		l.replace(id, n)
		gcCandidates = append(gcCandidates, id)
	}
	for _, b := range cmd.ReleasedTaskIds {
		id, err := ids.TaskFromBytes(b)
		if err != nil {
			return errResult(rpcerr.Wrapf(ErrBadCommand, "release: %v", err))
		}
		old, ok := l.records[id]
		if !ok {
			continue
		}
		if len(old.Released) != int(old.NumReturns) {
			n := shallowRecord(old)
			n.Released = make([]uint32, old.NumReturns)
			for i := range n.Released {
				n.Released[i] = uint32(i + 1)
			}
			l.replace(id, n)
		}
		gcCandidates = append(gcCandidates, id)
	}
	l.collect(gcCandidates)
	l.enforce(cmd.MaxBytes, cmd.MaxRecords)
	return &pb.CommandResult{Count: recorded}
}

// dropJobLineageLocked drops every record of an ended job.
func (f *FSM) dropJobLineageLocked(jobID string) {
	l := &f.lineage
	j := l.jobs[jobID]
	if j == nil {
		return
	}
	tasks := make([]ids.TaskID, 0, len(j.tasks))
	for id := range j.tasks {
		tasks = append(tasks, id)
	}
	sortTaskIDs(tasks)
	var producers []ids.TaskID
	for _, id := range tasks {
		producers = append(producers, l.remove(id)...)
	}
	l.collect(producers) // producers in other jobs may be garbage now
}

func (l *lineageTable) insert(id ids.TaskID, r *pb.TaskRecord) {
	l.records[id] = r
	sz := uint64(proto.Size(r))
	l.size[id] = sz
	l.bytes += sz
	j := l.jobs[r.JobId]
	if j == nil {
		j = &jobLineage{tasks: map[ids.TaskID]struct{}{}}
		l.jobs[r.JobId] = j
	}
	j.tasks[id] = struct{}{}
	j.bytes += sz
	l.index(id, r)
	var buf [4]ids.TaskID // most tasks take few refs: no allocation
	for _, p := range appendRefProducers(buf[:0], r) {
		l.deps[p]++
	}
	heap.Push(&l.order, keyOf(id, r))
}

// index and unindex keep the derived owner and rebuild indexes.
func (l *lineageTable) index(id ids.TaskID, r *pb.TaskRecord) {
	if r.OwnerAddress != "" {
		m := l.owners[r.OwnerAddress]
		if m == nil {
			m = map[ids.TaskID]struct{}{}
			l.owners[r.OwnerAddress] = m
		}
		m[id] = struct{}{}
	}
	if r.Rebuilder != "" {
		l.rebuilding[id] = struct{}{}
	}
}

func (l *lineageTable) unindex(id ids.TaskID, r *pb.TaskRecord) {
	if m := l.owners[r.OwnerAddress]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(l.owners, r.OwnerAddress)
		}
	}
	delete(l.rebuilding, id)
}

// replace stores a new version of a record (same task, job and args).
func (l *lineageTable) replace(id ids.TaskID, r *pb.TaskRecord) {
	old := l.records[id]
	l.records[id] = r
	l.unindex(id, old)
	l.index(id, r)
	sz := uint64(proto.Size(r))
	l.bytes = l.bytes - l.size[id] + sz
	j := l.jobs[r.JobId]
	j.bytes = j.bytes - l.size[id] + sz
	l.size[id] = sz
	if k := keyOf(id, r); k != keyOf(id, old) {
		heap.Push(&l.order, k)
		l.maybeCompact()
	}
}

// remove drops a record and returns the producers of its reference args
// (whose outputs it no longer holds).
func (l *lineageTable) remove(id ids.TaskID) []ids.TaskID {
	r, ok := l.records[id]
	if !ok {
		return nil
	}
	delete(l.records, id)
	l.unindex(id, r)
	sz := l.size[id]
	delete(l.size, id)
	l.bytes -= sz
	if j := l.jobs[r.JobId]; j != nil {
		delete(j.tasks, id)
		j.bytes -= sz
		if len(j.tasks) == 0 {
			delete(l.jobs, r.JobId)
		}
	}
	producers := refProducers(r)
	for _, p := range producers {
		if l.deps[p]--; l.deps[p] <= 0 {
			delete(l.deps, p)
		}
	}
	l.maybeCompact()
	return producers
}

// collect drops the candidates that are garbage, and then their producers
// that became garbage, with a worklist rather than recursion (chains of
// tasks may be long).
func (l *lineageTable) collect(work []ids.TaskID) {
	for len(work) > 0 {
		id := work[len(work)-1]
		work = work[:len(work)-1]
		r, ok := l.records[id]
		if !ok || l.deps[id] > 0 || len(r.Released) != int(r.NumReturns) {
			continue
		}
		work = append(work, l.remove(id)...)
	}
}

// enforce evicts records while the table is over its bound.
func (l *lineageTable) enforce(maxBytes, maxRecords uint64) {
	if maxBytes == 0 {
		maxBytes = DefaultMaxLineageBytes
	}
	if maxRecords == 0 {
		maxRecords = DefaultMaxLineageRecords
	}
	for (l.bytes > maxBytes || uint64(len(l.records)) > maxRecords) && l.order.Len() > 0 {
		k := heap.Pop(&l.order).(evictKey)
		r, ok := l.records[k.id]
		if !ok || keyOf(k.id, r) != k {
			continue // stale key
		}
		producers := l.remove(k.id)
		l.evicted.add(k.id)
		l.evictions++
		l.collect(producers)
	}
}

// maybeCompact rebuilds the eviction heap once stale keys outnumber live
// ones, so it stays proportional to the table.
func (l *lineageTable) maybeCompact() {
	if len(l.order) > 2*len(l.records)+1024 {
		l.rebuildOrder()
	}
}

func (l *lineageTable) rebuildOrder() {
	l.order = l.order[:0]
	for id, r := range l.records {
		l.order = append(l.order, keyOf(id, r))
	}
	heap.Init(&l.order)
}

// refProducers lists the tasks whose outputs r takes as arguments, one per
// reference (Put objects have no producer record and are skipped).
func refProducers(r *pb.TaskRecord) []ids.TaskID { return appendRefProducers(nil, r) }

// appendRefProducers is refProducers appending to out.
func appendRefProducers(out []ids.TaskID, r *pb.TaskRecord) []ids.TaskID {
	for _, a := range r.Args {
		if len(a.ObjectId) == 0 {
			continue
		}
		o, err := ids.ObjectFromBytes(a.ObjectId)
		if err != nil || o.IsPut() {
			continue
		}
		out = append(out, o.Task())
	}
	return out
}

func isReleased(r *pb.TaskRecord, idx uint32) bool {
	i := sort.Search(len(r.Released), func(i int) bool { return r.Released[i] >= idx })
	return i < len(r.Released) && r.Released[i] == idx
}

func insertSorted(s []uint32, v uint32) []uint32 {
	i := sort.Search(len(s), func(i int) bool { return s[i] >= v })
	out := make([]uint32, 0, len(s)+1)
	out = append(out, s[:i]...)
	out = append(out, v)
	return append(out, s[i:]...)
}

func sortTaskIDs(s []ids.TaskID) {
	sort.Slice(s, func(i, j int) bool { return string(s[i][:]) < string(s[j][:]) })
}

// shallowRecord copies a record's fields into a new message; the args,
// resources and options it shares are never mutated, so copying them deeply
// (inline values may be large) would buy nothing.
func shallowRecord(r *pb.TaskRecord) *pb.TaskRecord {
	return &pb.TaskRecord{
		TaskId: r.TaskId, JobId: r.JobId, Function: r.Function, Args: r.Args, NumReturns: r.NumReturns,
		OwnerAddress: r.OwnerAddress, Resources: r.Resources, MaxRetries: r.MaxRetries, Options: r.Options,
		Attempts: r.Attempts, State: r.State, NodeId: r.NodeId, LastError: r.LastError,
		SubmittedUnixNano: r.SubmittedUnixNano, FinishedUnixNano: r.FinishedUnixNano, Released: r.Released,
		RecordIndex: r.RecordIndex, FinishedIndex: r.FinishedIndex,
		AdoptedUnixNano: r.AdoptedUnixNano, Rebuilder: r.Rebuilder, RebuildUnixNano: r.RebuildUnixNano,
	}
}

// ---- snapshot ---------------------------------------------------------------

func (l *lineageTable) snapshot(s *pb.Snapshot) {
	tasks := make([]ids.TaskID, 0, len(l.records))
	for id := range l.records {
		tasks = append(tasks, id)
	}
	sortTaskIDs(tasks)
	for _, id := range tasks {
		s.Lineage = append(s.Lineage, l.records[id])
	}
	for _, id := range l.evicted.order {
		s.LineageEvicted = append(s.LineageEvicted, append([]byte(nil), id[:]...))
	}
	s.LineageEvictions = l.evictions
}

func (l *lineageTable) restore(s *pb.Snapshot) error {
	for _, r := range s.Lineage {
		id, err := ids.TaskFromBytes(r.TaskId)
		if err != nil {
			return err
		}
		l.insert(id, r)
	}
	for _, b := range s.LineageEvicted {
		id, err := ids.TaskFromBytes(b)
		if err != nil {
			return err
		}
		l.evicted.add(id)
	}
	l.evictions = s.LineageEvictions
	return nil
}

// ---- reads ------------------------------------------------------------------

// LineageTask returns a task's record: ErrLineageEvicted when the bound
// dropped it, ErrLineageNotFound when it is not recorded.
func (f *FSM) LineageTask(id ids.TaskID) (*pb.TaskRecord, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.lineageTaskLocked(id)
}

func (f *FSM) lineageTaskLocked(id ids.TaskID) (*pb.TaskRecord, error) {
	if r, ok := f.lineage.records[id]; ok {
		return r, nil
	}
	if f.lineage.evicted.has(id) {
		return nil, rpcerr.Wrapf(ErrLineageEvicted, "task %s", id)
	}
	return nil, rpcerr.Wrapf(ErrLineageNotFound, "task %s", id)
}

// LineageGraph is the answer to Lineage: the records that made an object,
// the producing task first, each once.
type LineageGraph struct {
	Records []*pb.TaskRecord
	Evicted []ids.TaskID // producers of reference args the bound dropped
	Missing []ids.TaskID // producers of reference args not recorded
}

// Lineage walks from the task that produced o through the producers of
// its reference arguments, breadth first, at most maxDepth levels (0: no
// limit). An object made by Put has no lineage (ErrMadeByPut).
func (f *FSM) Lineage(o ids.ObjectID, maxDepth int) (LineageGraph, error) {
	if o.IsPut() {
		return LineageGraph{}, rpcerr.Wrapf(ErrMadeByPut, "object %s", o)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	root, err := f.lineageTaskLocked(o.Task())
	if err != nil {
		return LineageGraph{}, err
	}
	g := LineageGraph{Records: []*pb.TaskRecord{root}}
	seen := map[ids.TaskID]bool{o.Task(): true}
	level := []*pb.TaskRecord{root}
	for depth := 1; len(level) > 0 && (maxDepth <= 0 || depth < maxDepth); depth++ {
		var next []*pb.TaskRecord
		for _, r := range level {
			for _, p := range refProducers(r) {
				if seen[p] {
					continue
				}
				seen[p] = true
				switch pr, ok := f.lineage.records[p]; {
				case ok:
					next = append(next, pr)
				case f.lineage.evicted.has(p):
					g.Evicted = append(g.Evicted, p)
				default:
					g.Missing = append(g.Missing, p)
				}
			}
		}
		g.Records = append(g.Records, next...)
		level = next
	}
	return g, nil
}

// LineageStats summarises the table.
func (f *FSM) LineageStats() *pb.LineageStatsResponse {
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := &f.lineage
	s := &pb.LineageStatsResponse{Records: uint64(len(l.records)), Bytes: l.bytes, Evictions: l.evictions}
	for job, j := range l.jobs {
		s.Jobs = append(s.Jobs, &pb.JobLineageStats{JobId: job, Records: uint64(len(j.tasks)), Bytes: j.bytes})
	}
	sort.Slice(s.Jobs, func(i, k int) bool { return s.Jobs[i].JobId < s.Jobs[k].JobId })
	// Oldest by Raft index; records of one write tie, broken by task ID so
	// every head (and every call) names the same one.
	var oldest ids.TaskID
	found := false
	for id, r := range l.records {
		if !found {
			oldest, found = id, true
			continue
		}
		o := l.records[oldest]
		if r.RecordIndex < o.RecordIndex || (r.RecordIndex == o.RecordIndex && bytes.Compare(id[:], oldest[:]) < 0) {
			oldest = id
		}
	}
	if found {
		s.OldestTaskId = append([]byte(nil), oldest[:]...)
		s.OldestSubmittedUnixNano = l.records[oldest].SubmittedUnixNano
	}
	return s
}
