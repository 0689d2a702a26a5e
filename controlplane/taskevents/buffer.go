// Package taskevents is the leader's task event buffer, manta's version of
// Ray's GCS task manager: the state changes owners and raylets report for
// every task attempt, merged per (task, attempt), bounded by a task count,
// and soft state: it is never written to Raft. A head keeps one while it
// leads; a new leader starts empty with a new random epoch, and reporters
// that see the epoch change re-send what they still hold, so the new
// leader's view is rebuilt. What the bound or the reporters dropped is
// counted and said in every listing.
package taskevents

import (
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/controlplane/statefilter"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Defaults, as Ray's: the GCS keeps 100k tasks, and the State API returns
// 100 rows unless asked for more and never more than 10k in one reply.
const (
	DefaultMaxTasks = 100_000
	DefaultLimit    = 100
	DefaultMaxLimit = 10_000
	// DefaultRebuildWindow is how long after a leader change listings warn
	// that reporters may still be re-sending (a few of their flushes).
	DefaultRebuildWindow = 3 * time.Second
)

// TaskIDSize is the length of a task ID (ids.TaskID).
const TaskIDSize = 16

var (
	ErrNotFound   = rpcerr.New(codes.NotFound, "TASK_NOT_FOUND", "task not found")
	ErrBadTaskID  = rpcerr.New(codes.InvalidArgument, "BAD_TASK_ID", "invalid task ID")
	ErrBadColumns = rpcerr.New(codes.InvalidArgument, "BAD_TASK_EVENT_COLUMNS", "malformed task event columns")
	ErrBadToken   = rpcerr.New(codes.InvalidArgument, "BAD_PAGE_TOKEN", "invalid page token")
)

// Schema is what tasks can be filtered on (Ray's TaskState column names).
var Schema = statefilter.Schema{
	"task_id": statefilter.String, "attempt_number": statefilter.Int, "name": statefilter.String,
	"state": statefilter.String, "job_id": statefilter.String, "actor_id": statefilter.String,
	"type": statefilter.String, "func_or_class_name": statefilter.String, "parent_task_id": statefilter.String,
	"node_id": statefilter.String, "worker_id": statefilter.String, "worker_pid": statefilter.Int,
	"error_type": statefilter.String,
	// ray_state is the state as Ray names it (CANCELED is FAILED), for
	// Ray's clients.
	"ray_state": statefilter.String,
}

// Config bounds a Buffer; zero values take the defaults.
type Config struct {
	MaxTasks      int
	MaxLimit      int
	RebuildWindow time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

type key struct {
	id      [TaskIDSize]byte
	attempt int32
}

type resource struct {
	name  string
	value float64
}

// entry is one task attempt, kept compact: the buffer holds 100k of them.
type entry struct {
	key
	seq                                uint64
	parent                             []byte
	job, actor, fn, name, node, worker string
	errType, errMsg, stack, callSite   string
	resources                          []resource
	ts                                 [8]int64
	pid                                int32
	typ                                pb.TaskType
	state                              pb.TaskEventState
	removed                            bool
}

func terminal(s pb.TaskEventState) bool {
	return s == pb.TaskEventState_FINISHED || s == pb.TaskEventState_FAILED || s == pb.TaskEventState_CANCELED
}

// Buffer is the leader's task event store. It is safe for concurrent use.
type Buffer struct {
	cfg Config

	mu       sync.Mutex
	epoch    string
	started  time.Time
	byKey    map[key]*entry
	order    []*entry // by seq; evicted entries stay as holes until compaction
	holes    int
	finished []*entry // in the order they finished; the first evicted
	finHead  int
	seq      uint64
	dropped  uint64            // attempts this buffer evicted
	lost     map[string]uint64 // by job: evicted here plus dropped by reporters
	lostSum  uint64
	intern   map[string]string
	shapes   map[resource][]resource
	parents  map[[TaskIDSize]byte][]byte
}

// New returns an empty buffer with no epoch (Reset gives it one).
func New(cfg Config) *Buffer {
	if cfg.MaxTasks <= 0 {
		cfg.MaxTasks = DefaultMaxTasks
	}
	if cfg.MaxLimit <= 0 {
		cfg.MaxLimit = DefaultMaxLimit
	}
	if cfg.RebuildWindow == 0 {
		cfg.RebuildWindow = DefaultRebuildWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &Buffer{cfg: cfg}
	b.clearLocked()
	return b
}

func (b *Buffer) clearLocked() {
	b.byKey = map[key]*entry{}
	b.order, b.holes, b.finished, b.finHead = nil, 0, nil, 0
	b.dropped, b.lostSum = 0, 0
	b.lost = map[string]uint64{}
	b.intern = map[string]string{}
	b.shapes = map[resource][]resource{}
	b.parents = map[[TaskIDSize]byte][]byte{}
}

// Reset empties the buffer and starts a new epoch (a new leadership).
func (b *Buffer) Reset(epoch string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clearLocked()
	b.epoch, b.started = epoch, b.cfg.Now()
}

// Clear drops everything and the epoch (leadership lost).
func (b *Buffer) Clear() { b.Reset("") }

// Epoch is the current epoch, "" when the buffer is not in use.
func (b *Buffer) Epoch() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.epoch
}

// Len is the number of task attempts held.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byKey)
}

// Report merges a batch and adds what the reporter dropped; it returns the
// attempts this buffer has dropped in its epoch.
func (b *Buffer) Report(events []*pb.TaskEvent, droppedByJob map[string]uint64) (uint64, error) {
	return b.ReportColumns(events, nil, droppedByJob)
}

// ReportColumns is Report with more events as columns (columns.go); a
// malformed report is refused whole.
func (b *Buffer) ReportColumns(events []*pb.TaskEvent, cols *pb.TaskEventColumns, droppedByJob map[string]uint64) (uint64, error) {
	for _, ev := range events {
		if len(ev.TaskId) != TaskIDSize {
			return 0, rpcerr.Wrapf(ErrBadTaskID, "task_id is %d bytes, want %d", len(ev.TaskId), TaskIDSize)
		}
	}
	n, err := columnsLen(cols)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		b.mergeLocked(ev)
	}
	eachColumn(cols, n, b.mergeLocked)
	for job, n := range droppedByJob {
		b.lost[b.str(job)] += n
		b.lostSum += n
	}
	return b.dropped, nil
}

func (b *Buffer) str(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := b.intern[s]; ok {
		return v
	}
	b.intern[s] = s
	return s
}

func (b *Buffer) mergeLocked(ev *pb.TaskEvent) {
	var k key
	copy(k.id[:], ev.TaskId)
	k.attempt = ev.Attempt
	e := b.byKey[k]
	if e == nil {
		for len(b.byKey) >= b.cfg.MaxTasks {
			b.evictLocked()
		}
		b.seq++
		e = &entry{key: k, seq: b.seq}
		b.byKey[k] = e
		b.order = append(b.order, e)
	}
	set := func(dst *string, v string, intern bool) {
		if v != "" {
			if intern {
				v = b.str(v)
			}
			*dst = v
		}
	}
	if len(ev.ParentTaskId) == TaskIDSize {
		e.parent = b.parentLocked(ev.ParentTaskId)
	}
	set(&e.job, ev.JobId, true)
	set(&e.actor, ev.ActorId, true)
	set(&e.fn, ev.FuncOrClassName, true)
	set(&e.name, ev.Name, true)
	set(&e.node, ev.NodeId, true)
	set(&e.worker, ev.WorkerId, false)
	set(&e.errType, ev.ErrorType, true)
	set(&e.errMsg, ev.ErrorMessage, false)
	set(&e.stack, ev.Stack, false)
	set(&e.callSite, ev.CallSite, false)
	if ev.WorkerPid != 0 {
		e.pid = ev.WorkerPid
	}
	if ev.Type != pb.TaskType_TASK_TYPE_UNSPECIFIED {
		e.typ = ev.Type
	}
	if len(ev.RequiredResources) > 0 {
		e.resources = b.shapeLocked(ev.RequiredResources)
	}
	for s, t := range ev.StateUnixNano {
		if s > 0 && s < len(e.ts) && t != 0 {
			e.ts[s] = t
		}
	}
	// A merge never goes back: events of one attempt may arrive out of
	// order (a re-send after a newer report), and the furthest state wins.
	was := e.state
	if ev.State > e.state {
		e.state = ev.State
	}
	if terminal(e.state) && !terminal(was) {
		b.finished = append(b.finished, e)
	}
}

// shapeLocked returns a resource shape, shared by every entry with the
// same one-resource shape (nearly every task's): merging is on the path
// of every reported task.
func (b *Buffer) shapeLocked(m map[string]float64) []resource {
	if len(m) == 1 {
		for n, v := range m {
			if s, ok := b.shapes[resource{n, v}]; ok {
				return s
			}
			s := []resource{{b.str(n), v}}
			if len(b.shapes) < maxShapes {
				b.shapes[resource{s[0].name, v}] = s
			}
			return s
		}
	}
	s := make([]resource, 0, len(m))
	for n, v := range m {
		s = append(s, resource{b.str(n), v})
	}
	// Insertion sort: shapes have a handful of resources.
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].name < s[j-1].name; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// parentLocked returns a parent task ID shared by the entries of its
// children (a driver's tasks all have the same parent).
func (b *Buffer) parentLocked(id []byte) []byte {
	var k [TaskIDSize]byte
	copy(k[:], id)
	if p, ok := b.parents[k]; ok {
		return p
	}
	p := append([]byte(nil), id...)
	if len(b.parents) < maxShapes {
		b.parents[k] = p
	}
	return p
}

// maxShapes bounds the shared one-resource shapes (fractional CPUs could
// otherwise grow the table without bound).
const maxShapes = 1024

// evictLocked drops the attempt that finished first, or the oldest one
// when none has finished.
func (b *Buffer) evictLocked() {
	var victim *entry
	for b.finHead < len(b.finished) {
		e := b.finished[b.finHead]
		b.finished[b.finHead] = nil
		b.finHead++
		if !e.removed {
			victim = e
			break
		}
	}
	if b.finHead > 1024 && b.finHead*2 > len(b.finished) {
		b.finished = append([]*entry(nil), b.finished[b.finHead:]...)
		b.finHead = 0
	}
	if victim == nil {
		for _, e := range b.order {
			if !e.removed {
				victim = e
				break
			}
		}
	}
	if victim == nil {
		return
	}
	victim.removed = true
	delete(b.byKey, victim.key)
	b.holes++
	b.dropped++
	b.lost[victim.job]++
	b.lostSum++
	if b.holes > 1024 && b.holes*2 > len(b.order) {
		kept := make([]*entry, 0, len(b.order)-b.holes)
		for _, e := range b.order {
			if !e.removed {
				kept = append(kept, e)
			}
		}
		b.order, b.holes = kept, 0
	}
}

func (e *entry) field(k string) any {
	switch k {
	case "task_id":
		return hex.EncodeToString(e.id[:])
	case "attempt_number":
		return e.attempt
	case "name":
		return e.displayName()
	case "state":
		return e.state.String()
	case "ray_state":
		if e.state == pb.TaskEventState_CANCELED {
			return pb.TaskEventState_FAILED.String()
		}
		return e.state.String()
	case "job_id":
		return e.job
	case "actor_id":
		return e.actor
	case "type":
		return e.typ.String()
	case "func_or_class_name":
		return e.fn
	case "parent_task_id":
		return hex.EncodeToString(e.parent)
	case "node_id":
		return e.node
	case "worker_id":
		return e.worker
	case "worker_pid":
		return e.pid
	case "error_type":
		return e.errType
	}
	return nil
}

func (e *entry) displayName() string {
	if e.name != "" {
		return e.name
	}
	return e.fn
}

func (e *entry) proto() *pb.TaskEvent {
	ev := &pb.TaskEvent{TaskId: append([]byte(nil), e.id[:]...), Attempt: e.attempt, JobId: e.job,
		ParentTaskId: e.parent, ActorId: e.actor, FuncOrClassName: e.fn, Type: e.typ, State: e.state,
		NodeId: e.node, WorkerId: e.worker, WorkerPid: e.pid, ErrorType: e.errType, ErrorMessage: e.errMsg,
		Stack: e.stack, CallSite: e.callSite, Name: e.name}
	for s := len(e.ts) - 1; s > 0; s-- {
		if e.ts[s] != 0 {
			ev.StateUnixNano = append([]int64(nil), e.ts[:s+1]...)
			break
		}
	}
	if len(e.resources) > 0 {
		ev.RequiredResources = make(map[string]float64, len(e.resources))
		for _, r := range e.resources {
			ev.RequiredResources[r.name] = r.value
		}
	} else if e.typ == pb.TaskType_NORMAL_TASK {
		// Reporters leave a normal task's default shape out.
		ev.RequiredResources = map[string]float64{"CPU": 1}
	}
	return ev
}

// warningsLocked says why a listing may be incomplete.
func (b *Buffer) warningsLocked() []string {
	var w []string
	if b.lostSum > 0 {
		w = append(w, fmt.Sprintf("%d task attempts are missing: %d dropped by this head's bound of %d tasks, %d by owners' buffers",
			b.lostSum, b.dropped, b.cfg.MaxTasks, b.lostSum-b.dropped))
	}
	if age := b.cfg.Now().Sub(b.started); b.epoch != "" && age < b.cfg.RebuildWindow {
		w = append(w, fmt.Sprintf("the leader changed %s ago; owners are still re-sending task events, so the list may be incomplete",
			age.Round(time.Millisecond)))
	}
	return w
}

// List returns one page of the attempts that pass the filters, oldest
// first.
func (b *Buffer) List(req *pb.ListTasksRequest) (*pb.ListTasksResponse, error) {
	if err := Schema.Check(req.Filters); err != nil {
		return nil, err
	}
	var after uint64
	if req.PageToken != "" {
		v, err := strconv.ParseUint(req.PageToken, 10, 64)
		if err != nil {
			return nil, rpcerr.Wrapf(ErrBadToken, "page_token %q", req.PageToken)
		}
		after = v
	}
	limit := int(req.Limit)
	if limit <= 0 {
		limit = DefaultLimit
	}
	var warnings []string
	if limit > b.cfg.MaxLimit {
		warnings = append(warnings, fmt.Sprintf("limit %d capped at the maximum of %d; use the page token for more", limit, b.cfg.MaxLimit))
		limit = b.cfg.MaxLimit
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	resp := &pb.ListTasksResponse{Total: uint64(len(b.byKey)), NumDropped: b.lostSum, Epoch: b.epoch, Limit: int32(limit)}
	resp.Warnings = append(warnings, b.warningsLocked()...)
	start := sort.Search(len(b.order), func(i int) bool { return b.order[i].seq > after })
	matched := uint64(0)
	for _, e := range b.order[start:] {
		if e.removed || !Schema.Match(req.Filters, e.field) {
			continue
		}
		matched++
		if len(resp.Tasks) < limit {
			resp.Tasks = append(resp.Tasks, e.proto())
			if len(resp.Tasks) == limit {
				resp.NextPageToken = strconv.FormatUint(e.seq, 10)
			}
		}
	}
	if matched <= uint64(limit) {
		resp.NextPageToken = ""
	}
	resp.NumFiltered = matched
	return resp, nil
}

// Get returns every attempt of a task.
func (b *Buffer) Get(taskID string) (*pb.GetTaskResponse, error) {
	raw, err := hex.DecodeString(taskID)
	if err != nil || len(raw) != TaskIDSize {
		return nil, rpcerr.Wrapf(ErrBadTaskID, "task_id %q is not %d hex bytes", taskID, TaskIDSize)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var k key
	copy(k.id[:], raw)
	resp := &pb.GetTaskResponse{Warnings: b.warningsLocked()}
	// Attempts are few and usually numbered from 0; a scan of the order
	// would cost a full pass per Get.
	for a, misses := int32(0), 0; misses < 16; a++ {
		k.attempt = a
		if e := b.byKey[k]; e != nil {
			resp.Attempts = append(resp.Attempts, e.proto())
			misses = 0
		} else {
			misses++
		}
	}
	if len(resp.Attempts) == 0 {
		msg := fmt.Sprintf("no task %s in the task event buffer", taskID)
		if len(resp.Warnings) > 0 {
			msg += " (" + resp.Warnings[0] + ")"
		}
		return nil, rpcerr.Wrapf(ErrNotFound, "%s", msg)
	}
	return resp, nil
}

// Summarize counts the attempts that pass the filters by function (or
// actor class and method) and state.
func (b *Buffer) Summarize(req *pb.SummarizeTasksRequest) (*pb.SummarizeTasksResponse, error) {
	if err := Schema.Check(req.Filters); err != nil {
		return nil, err
	}
	type group struct {
		fn  string
		typ pb.TaskType
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	resp := &pb.SummarizeTasksResponse{NumDropped: b.lostSum, Warnings: b.warningsLocked()}
	by := map[group]*pb.TaskSummary{}
	for _, e := range b.order {
		if e.removed || !Schema.Match(req.Filters, e.field) {
			continue
		}
		g := group{e.fn, e.typ}
		s := by[g]
		if s == nil {
			s = &pb.TaskSummary{FuncOrClassName: e.fn, Type: e.typ, StateCounts: map[string]uint64{}}
			by[g] = s
		}
		s.StateCounts[e.state.String()]++
		resp.Total++
	}
	for _, s := range by {
		resp.Summaries = append(resp.Summaries, s)
	}
	sort.Slice(resp.Summaries, func(i, j int) bool {
		a, c := resp.Summaries[i], resp.Summaries[j]
		if a.FuncOrClassName != c.FuncOrClassName {
			return a.FuncOrClassName < c.FuncOrClassName
		}
		return a.Type < c.Type
	})
	return resp, nil
}

// Counts are the attempts held by state, and what this epoch has lost
// (evicted here or dropped by reporters), for the metrics.
type Counts struct {
	Epoch   string
	ByState map[pb.TaskEventState]int
	Lost    uint64
}

// Counts walks the buffer once; a scrape every few seconds over the
// default 100k attempts costs about a millisecond.
func (b *Buffer) Counts() Counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := Counts{Epoch: b.epoch, ByState: map[pb.TaskEventState]int{}, Lost: b.lostSum}
	for _, e := range b.byKey {
		c.ByState[e.state]++
	}
	return c
}
