// Package taskevents is the owner's side of the State API's task events:
// the task manager and the receiver Add a state change as it happens, and a
// Reporter sends them to the control plane in batches, off the task path.
// It keeps the latest state of its recent tasks, so when the leader's
// buffer epoch changes (a new leader starts empty) or a send failed, it
// re-sends them and the new leader's view is rebuilt; what it had to drop
// by its bounds it counts and reports, so listings say they are partial.
package taskevents

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	cpte "github.com/manta-ray/manta/controlplane/taskevents"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Sender is the control plane as the reporter sees it (cpclient.Client).
type Sender interface {
	ReportTaskEvents(ctx context.Context, req *pb.ReportTaskEventsRequest) (*pb.ReportTaskEventsResponse, error)
}

// Config configures a Reporter; zero values take the defaults.
type Config struct {
	Sender Sender
	// FlushInterval is how often pending events are sent; default 1s.
	FlushInterval time.Duration
	// BatchSize is the most task states one RPC carries; default 1000.
	BatchSize int
	// FlushAt flushes before the interval once this many events are
	// queued; default 20000. (Each flush merges a task's events into one,
	// so rarer flushes send less.)
	FlushAt int
	// MaxPending bounds events not yet sent; the oldest are dropped (and
	// counted) beyond it. Default 100000, as Ray's worker-side buffer.
	MaxPending int
	// MaxRecent bounds the tasks whose latest state is kept for re-sending
	// to a new leader. Default 10000.
	MaxRecent int
	// SendTimeout bounds one send; default 5s.
	SendTimeout time.Duration
	Logger      *zap.Logger
}

func (c *Config) setDefaults() {
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 100_000
	}
	if c.FlushAt <= 0 {
		c.FlushAt = min(50_000, c.MaxPending/2)
	}
	if c.MaxRecent <= 0 {
		c.MaxRecent = 10_000
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Stats are a reporter's counters.
type Stats struct {
	// Added counts events; Sent and Resent count task states sent (the
	// events of one task in one flush are merged into one).
	Added, Sent, Resent, Dropped uint64
	// Epoch is the leader buffer epoch of the last reply.
	Epoch string
	// Recent is how many tasks' latest states are kept for re-sending.
	Recent int
}

// pending is an event with the time Add saw it; the flusher stamps it
// into the event, so Add allocates nothing.
type pending struct {
	ev    *pb.TaskEvent // nil for a bare state change (State, Ended)
	k     key
	state pb.TaskEventState
	at    int64
	// Ended's: where the attempt ran, and since when.
	where *Where
	runAt int64
}

// Where an attempt ran: its node, worker and the worker's pid.
type Where struct {
	Node, Worker string
	Pid          int32
}

type key struct {
	id      [16]byte
	attempt int32
}

func keyOf(ev *pb.TaskEvent) key {
	k := key{attempt: ev.Attempt}
	copy(k.id[:], ev.TaskId)
	return k
}

// recent is a task attempt's merged state as this reporter last knew it.
// Recents live in a ring of slots reused in turn, so remembering a task
// allocates nothing: the event's ID and state times point into its slot.
type recent struct {
	ev    *pb.TaskEvent
	msg   pb.TaskEvent
	light pb.TaskEvent // what wire sends for a bare state change
	k     key
	times [8]int64
	acked string // the epoch that has it, "" if none has
	dirty bool   // changed in the flush being built
	// known is the epoch that has had the task's full event; after it,
	// a bare state change is sent as task ID, state and times only.
	known string
	full  bool // a field other than the state changed since the last send
}

// Reporter batches task events to the control plane. Add is safe from any
// goroutine; Close stops it.
type Reporter struct {
	cols cpte.ColumnEncoder // the next send's columns (under sendMu)
	cfg  Config
	log  *zap.Logger

	// mu guards only the hand-off from Add to the flusher.
	mu          sync.Mutex
	queue       []pending
	spare       []pending         // the flusher's last queue, reused by the next
	droppedJobs map[string]uint64 // dropped since the last successful send
	added       uint64
	kick        chan struct{}

	// sendMu serialises flushes; the fields below are the flusher's.
	sendMu     sync.Mutex
	recent     map[key]int32 // slot of each remembered task
	slots      slotRing
	evicted    map[string]uint64
	unsentLost map[string]uint64 // dropped, not yet reported
	epoch      string
	resend     bool
	sent       uint64
	resent     uint64
	dropped    uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New starts a reporter.
func New(cfg Config) *Reporter {
	cfg.setDefaults()
	r := &Reporter{cfg: cfg, log: cfg.Logger.Named("taskevents"), droppedJobs: map[string]uint64{},
		kick: make(chan struct{}, 1), recent: map[key]int32{}, evicted: map[string]uint64{},
		unsentLost: map[string]uint64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

// Add queues a state change. It never blocks on the network: it appends
// under a short lock, and drops the oldest queued event when the queue is
// full. The reporter owns ev afterwards.
func (r *Reporter) Add(ev *pb.TaskEvent) {
	r.enqueue(pending{ev: ev, state: ev.State})
}

// AddAt is Add for a state entered at a known time (Unix ns), earlier
// than now: an owner learns when a task started running from its result.
func (r *Reporter) AddAt(ev *pb.TaskEvent, at int64) {
	r.enqueue(pending{ev: ev, state: ev.State, at: at})
}

// State queues a bare state change of a task attempt already Added (no
// field but the state and its time changes): the cheapest call, for the
// transitions after a task's first event.
func (r *Reporter) State(taskID []byte, attempt int32, s pb.TaskEventState) {
	p := pending{state: s, k: key{attempt: attempt}}
	copy(p.k.id[:], taskID)
	r.enqueue(p)
}

// Ended queues the end of an attempt already Added (s: FINISHED, or a
// bare FAILED/CANCELED), with where it ran and when it started running
// (Unix ns; 0 if unknown): the owner learns both from the answer, and
// one call per task costs less than a RUNNING event and an end. w is
// shared, not copied: pass one per lease, not one per task.
func (r *Reporter) Ended(taskID []byte, attempt int32, s pb.TaskEventState, w *Where, runAt int64) {
	p := pending{state: s, k: key{attempt: attempt}, where: w, runAt: runAt}
	copy(p.k.id[:], taskID)
	r.enqueue(p)
}

func (r *Reporter) enqueue(p pending) {
	if p.at == 0 {
		p.at = time.Now().UnixNano()
	}
	r.mu.Lock()
	r.added++
	if len(r.queue) >= r.cfg.MaxPending {
		old := r.queue[0]
		r.queue = r.queue[1:]
		job := ""
		if old.ev != nil {
			job = old.ev.JobId
		}
		r.droppedJobs[job]++
	}
	r.queue = append(r.queue, p)
	full := len(r.queue) == r.cfg.FlushAt
	r.mu.Unlock()
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

func (r *Reporter) loop() {
	defer close(r.done)
	t := time.NewTicker(r.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		case <-r.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.SendTimeout)
		if err := r.Flush(ctx); err != nil {
			r.log.Debug("task events not sent; re-sending later", zap.Error(err))
		}
		cancel()
	}
}

// Flush sends what is queued now (and re-sends recent tasks if the leader
// changed or a send failed).
func (r *Reporter) Flush(ctx context.Context) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	r.mu.Lock()
	q := r.queue
	// Swap in the previous queue's array: Add appends without growing.
	r.queue, r.spare = r.spare[:0], nil
	for job, n := range r.droppedJobs {
		r.unsentLost[job] += n
		r.dropped += n
	}
	clear(r.droppedJobs)
	r.mu.Unlock()

	// Events of one task in this flush are merged first: the leader gets
	// each changed task once, in its latest state (merging is idempotent).
	var touched []*recent
	var firstErr error
	for _, p := range q {
		if r.slots.nextIsDirty(r.cfg.MaxRecent) {
			// More tasks in this flush than the ring holds: send what is
			// merged so far before its slots are reused.
			if err := r.sendTouched(ctx, touched); err != nil && firstErr == nil {
				firstErr = err
			}
			touched = touched[:0]
		}
		rc := r.remember(p)
		if !rc.dirty {
			rc.dirty = true
			touched = append(touched, rc)
		}
	}
	clear(q)
	r.mu.Lock()
	if cap(q) <= 2*r.cfg.MaxPending {
		r.spare = q[:0]
	}
	r.mu.Unlock()
	if err := r.sendTouched(ctx, touched); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr != nil {
		return firstErr
	}
	if len(r.unsentLost) > 0 {
		// Nothing else to carry the count: say it on its own.
		epoch, err := r.send(ctx, nil)
		if err != nil {
			return err
		}
		if r.noteEpoch(epoch) {
			return r.resendAll(ctx)
		}
	}
	return nil
}

// sendTouched sends the merged states of tasks changed in this flush, or,
// after a failed send or a leader change, everything the leader lacks.
func (r *Reporter) sendTouched(ctx context.Context, touched []*recent) error {
	for _, rc := range touched {
		rc.dirty = false
	}
	if r.resend {
		return r.resendAll(ctx) // touched tasks are unacked: it sends them
	}
	var batch []*pb.TaskEvent
	for len(touched) > 0 {
		n := min(len(touched), r.cfg.BatchSize)
		batch = batch[:0]
		for _, rc := range touched[:n] {
			batch = r.add(batch, rc.wire(r.epoch))
		}
		epoch, err := r.send(ctx, batch)
		if err != nil {
			r.resend = true // what failed is in recent
			return err
		}
		if r.noteEpoch(epoch) {
			return r.resendAll(ctx)
		}
		for _, rc := range touched[:n] {
			rc.acked, rc.known, rc.full = epoch, epoch, false
		}
		r.sent += uint64(n)
		touched = touched[n:]
	}
	return nil
}

// noteEpoch records the epoch of a reply and says whether it changed (a
// new leader, whose buffer started empty). The tasks this reporter has
// already forgotten are then lost to the new leader: they are reported
// as dropped.
func (r *Reporter) noteEpoch(epoch string) bool {
	changed := r.epoch != "" && epoch != r.epoch
	if changed {
		r.log.Info("the control plane's task event buffer changed (new leader); re-sending recent tasks",
			zap.String("old_epoch", r.epoch), zap.String("epoch", epoch))
		for job, n := range r.evicted {
			r.unsentLost[job] += n
		}
	}
	r.epoch = epoch
	return changed
}

// resendAll sends the latest state of every recent task the current epoch
// may lack.
func (r *Reporter) resendAll(ctx context.Context) error {
	var todo []*recent
	r.slots.each(func(rc *recent) {
		if r.epoch == "" || rc.acked != r.epoch {
			todo = append(todo, rc)
		}
	})
	for len(todo) > 0 {
		n := min(len(todo), r.cfg.BatchSize)
		var evs []*pb.TaskEvent
		for _, rc := range todo[:n] {
			evs = r.add(evs, rc.ev)
		}
		epoch, err := r.send(ctx, evs)
		if err != nil {
			r.resend = true
			return err
		}
		if r.noteEpoch(epoch) {
			// Another leader change while re-sending: start over.
			return r.resendAll(ctx)
		}
		for _, rc := range todo[:n] {
			rc.acked, rc.known, rc.full = epoch, epoch, false
		}
		r.resent += uint64(n)
		todo = todo[n:]
	}
	r.resend = false
	return nil
}

// add puts ev in the next send: as columns when it fits (the common
// case, far cheaper to encode), else as a message in evs.
func (r *Reporter) add(evs []*pb.TaskEvent, ev *pb.TaskEvent) []*pb.TaskEvent {
	if cpte.Fits(ev) {
		r.cols.Add(ev)
		return evs
	}
	return append(evs, ev)
}

// send sends evs and the columns added since the last send.
func (r *Reporter) send(ctx context.Context, evs []*pb.TaskEvent) (string, error) {
	req := &pb.ReportTaskEventsRequest{Events: evs, Columns: r.cols.Take()}
	if len(r.unsentLost) > 0 {
		req.DroppedByJob = r.unsentLost
	}
	resp, err := r.cfg.Sender.ReportTaskEvents(ctx, req)
	if err != nil {
		return "", err
	}
	if len(req.DroppedByJob) > 0 {
		r.unsentLost = map[string]uint64{}
	}
	return resp.Epoch, nil
}

// remember merges a queued change into its task's latest state, evicting
// the oldest task beyond the bound.
func (r *Reporter) remember(p pending) *recent {
	k := p.k
	if p.ev != nil {
		k = keyOf(p.ev)
	}
	var rc *recent
	if i, ok := r.recent[k]; ok {
		rc = r.slots.at(i)
	} else {
		i, slot, reused := r.slots.take(r.cfg.MaxRecent)
		rc = slot
		if old := slot; reused {
			delete(r.recent, old.k)
			if old.acked == "" {
				// Its latest state never reached a leader: lost for good.
				// (Flush sends a changed one before its slot is taken.)
				r.unsentLost[old.ev.JobId]++
				r.dropped++
			} else {
				r.evicted[old.ev.JobId]++
			}
		}
		rc.reset(k)
		r.recent[k] = i
	}
	if p.ev != nil {
		Merge(rc.ev, p.ev)
		rc.full = true
	} else if p.state > rc.ev.State {
		rc.ev.State = p.state
	}
	if w := p.where; w != nil {
		if w.Node != "" {
			rc.ev.NodeId = w.Node
		}
		if w.Worker != "" {
			rc.ev.WorkerId = w.Worker
		}
		if w.Pid != 0 {
			rc.ev.WorkerPid = w.Pid
		}
		rc.full = true
		if p.runAt != 0 {
			SetStateTime(rc.ev, pb.TaskEventState_RUNNING, p.runAt)
		}
	}
	if st := int(p.state); st > 0 && (p.ev == nil || st >= len(p.ev.StateUnixNano) || p.ev.StateUnixNano[st] == 0) {
		SetStateTime(rc.ev, p.state, p.at)
	}
	rc.acked = ""
	return rc
}

// wire is what a send carries for the task: the full merged event, or,
// when the leader of this epoch has it and only the state moved, just the
// state and its times (the resources map and strings cost the most to
// encode, and the leader merges either the same).
func (rc *recent) wire(epoch string) *pb.TaskEvent {
	if rc.full || epoch == "" || rc.known != epoch {
		return rc.ev
	}
	rc.light.TaskId, rc.light.Attempt, rc.light.State, rc.light.StateUnixNano = rc.ev.TaskId, rc.ev.Attempt, rc.ev.State, rc.ev.StateUnixNano
	return &rc.light
}

// reset makes rc a new, empty task's.
func (rc *recent) reset(k key) {
	*rc = recent{k: k}
	rc.ev = &rc.msg
	rc.ev.TaskId, rc.ev.Attempt, rc.ev.StateUnixNano = rc.k.id[:], k.attempt, rc.times[:0]
}

// slotRing holds recents in chunks (their addresses never move) and hands
// out slots in turn: new ones until the bound, then the oldest again.
type slotRing struct {
	chunks [][]recent
	n      int32 // slots made
	next   int32 // the oldest slot, once the ring is full
}

const chunkSize = 1024

func (s *slotRing) at(i int32) *recent { return &s.chunks[i/chunkSize][i%chunkSize] }

// take returns a slot for a new task; reused says it still holds the
// oldest task, which the caller accounts for before resetting it.
func (s *slotRing) take(max int) (i int32, rc *recent, reused bool) {
	if int(s.n) < max {
		if int(s.n)%chunkSize == 0 {
			s.chunks = append(s.chunks, make([]recent, chunkSize))
		}
		i = s.n
		s.n++
		return i, s.at(i), false
	}
	i = s.next
	s.next = (s.next + 1) % s.n
	return i, s.at(i), true
}

// nextIsDirty says whether the next new task would take the slot of a
// task changed in the flush being built.
func (s *slotRing) nextIsDirty(max int) bool {
	return int(s.n) >= max && s.n > 0 && s.at(s.next).dirty
}

// each visits the recents oldest first.
func (s *slotRing) each(fn func(*recent)) {
	for j := int32(0); j < s.n; j++ {
		fn(s.at((s.next + j) % s.n))
	}
}

// Stats returns the reporter's counters.
func (r *Reporter) Stats() Stats {
	r.mu.Lock()
	added := r.added
	r.mu.Unlock()
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return Stats{Added: added, Sent: r.sent, Resent: r.resent, Dropped: r.dropped, Epoch: r.epoch, Recent: len(r.recent)}
}

// Close stops the reporter after a last flush bounded by ctx. Idempotent.
func (r *Reporter) Close(ctx context.Context) error {
	var err error
	r.once.Do(func() {
		close(r.stop)
		<-r.done
		err = r.Flush(ctx)
	})
	return err
}

// Merge folds src into dst as the leader does: set fields overwrite, state
// timestamps add up, and the state never goes back.
func Merge(dst, src *pb.TaskEvent) {
	if len(dst.TaskId) == 0 {
		dst.TaskId = src.TaskId
	}
	dst.Attempt = src.Attempt
	str := func(d *string, s string) {
		if s != "" {
			*d = s
		}
	}
	str(&dst.JobId, src.JobId)
	str(&dst.ActorId, src.ActorId)
	str(&dst.FuncOrClassName, src.FuncOrClassName)
	str(&dst.NodeId, src.NodeId)
	str(&dst.WorkerId, src.WorkerId)
	str(&dst.ErrorType, src.ErrorType)
	str(&dst.ErrorMessage, src.ErrorMessage)
	str(&dst.Stack, src.Stack)
	str(&dst.CallSite, src.CallSite)
	str(&dst.Name, src.Name)
	if len(src.ParentTaskId) > 0 {
		dst.ParentTaskId = src.ParentTaskId
	}
	if src.WorkerPid != 0 {
		dst.WorkerPid = src.WorkerPid
	}
	if src.Type != pb.TaskType_TASK_TYPE_UNSPECIFIED {
		dst.Type = src.Type
	}
	if len(src.RequiredResources) > 0 {
		dst.RequiredResources = src.RequiredResources
	}
	if src.State > dst.State {
		dst.State = src.State
	}
	for s, t := range src.StateUnixNano {
		if t != 0 {
			SetStateTime(dst, pb.TaskEventState(s), t)
		}
	}
}

// SetStateTime records when ev entered state s.
func SetStateTime(ev *pb.TaskEvent, s pb.TaskEventState, unixNano int64) {
	for len(ev.StateUnixNano) <= int(s) {
		ev.StateUnixNano = append(ev.StateUnixNano, 0)
	}
	ev.StateUnixNano[s] = unixNano
}
