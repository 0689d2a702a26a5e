// Package lineage is the owner's side of lineage: a Recorder batches the
// records of the tasks an owner submits (and their updates and releases)
// into the Raft-replicated control store, and tells the owner when a task's
// record is committed, so its outputs may be handed to others. It also
// renders lineage graphs for the admin CLI (render.go).
//
// Use from an owner (the SDK):
//
//	rec := lineage.NewRecorder(cpClient, lineage.Options{Logger: log})
//	defer rec.Close()
//	rec.Record(ctx, &controlpb.TaskRecord{TaskId: id[:], JobId: job, Function: "f", NumReturns: 1, ...})
//	rec.Update(ctx, &controlpb.TaskUpdate{TaskId: id[:], Attempt: 1, State: controlpb.TaskState_TASK_RUNNING, NodeId: n})
//	// before an output of id reaches anyone but the owner:
//	rec.WaitCommitted(ctx, id)
//	// when the owner drops its last reference:
//	rec.Release(ctx, objectID)
package lineage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Writer is what a Recorder sends batches through; *cpclient.Client is one.
type Writer interface {
	RecordLineage(ctx context.Context, req *pb.RecordLineageRequest) (*pb.RecordLineageResponse, error)
}

var _ Writer = (*cpclient.Client)(nil)

// ErrClosed is returned by a Recorder's methods after Close.
var ErrClosed = errors.New("lineage: recorder closed")

// Options configure a Recorder; the zero value is usable.
type Options struct {
	// FlushInterval is the longest a queued item waits before its batch
	// is sent; default 10ms.
	FlushInterval time.Duration
	// MaxBatch is the most items (records, updates, releases) in one
	// RecordLineage call; a full batch is sent at once. Default 2048.
	MaxBatch int
	// MaxBatchBytes bounds a batch's encoded size; default 4 MiB.
	MaxBatchBytes int
	// MaxQueue is how many items may wait; Record, Update and Release
	// block beyond it (backpressure). Default 64 × MaxBatch.
	MaxQueue int
	// CloseTimeout bounds the final flush in Close; default 30s.
	CloseTimeout time.Duration
	Logger       *zap.Logger
}

func (o *Options) setDefaults() {
	if o.FlushInterval <= 0 {
		o.FlushInterval = 10 * time.Millisecond
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 2048
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 4 << 20
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 64 * o.MaxBatch
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Stats counts a Recorder's work.
type Stats struct {
	Batches  uint64 // RecordLineage calls that committed
	Records  uint64 // records committed
	Updates  uint64
	Releases uint64 // released objects and tasks
	Retries  uint64 // calls sent again after an Unavailable answer
}

// Recorder batches lineage writes of one owner. One batch is in flight at
// a time: that keeps the owner's writes in order (a release or an update
// never overtakes its record), and batches simply grow under load, so one
// Raft round carries up to MaxBatch items. Safe for concurrent use.
type Recorder struct {
	w   Writer
	o   Options
	log *zap.Logger

	mu      sync.Mutex
	queue   []item
	firstAt time.Time // when the oldest queued item arrived
	pending map[ids.TaskID]*pendingTask
	space   chan struct{} // closed and replaced when the queue shrinks
	closing bool
	sending bool  // a batch is in flight
	urgent  bool  // Flush asked: send without waiting FlushInterval
	err     error // the first batch that failed for good
	stats   Stats

	kick    chan struct{} // wakes the flusher; buffered 1
	flushed chan struct{} // closed and replaced after every batch
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
}

type item struct {
	rec     *pb.TaskRecord
	upd     *pb.TaskUpdate
	object  []byte
	pending *pendingTask
	size    int
}

// pendingTask is a record on its way; done closes when it committed or
// failed for good (err).
type pendingTask struct {
	done chan struct{}
	err  error
}

// NewRecorder starts a recorder writing through w. Close stops it.
func NewRecorder(w Writer, o Options) *Recorder {
	o.setDefaults()
	r := &Recorder{w: w, o: o, log: o.Logger.Named("lineage"), pending: map[ids.TaskID]*pendingTask{},
		space: make(chan struct{}), kick: make(chan struct{}, 1), flushed: make(chan struct{}), done: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	return r
}

// Record queues a task's record. Until it is committed the Recorder keeps
// it (Committed is false); re-recording a task is harmless. rec must not
// be changed after the call.
func (r *Recorder) Record(ctx context.Context, rec *pb.TaskRecord) error {
	id, err := ids.TaskFromBytes(rec.TaskId)
	if err != nil {
		return rpcerr.Wrapf(rpcerr.ErrInvalidArgument, "record: %v", err)
	}
	p := &pendingTask{done: make(chan struct{})}
	return r.enqueue(ctx, item{rec: rec, pending: p, size: recordSize(rec)}, func() { r.pending[id] = p })
}

// Update queues a report about an attempt of a recorded task.
func (r *Recorder) Update(ctx context.Context, u *pb.TaskUpdate) error {
	if _, err := ids.TaskFromBytes(u.TaskId); err != nil {
		return rpcerr.Wrapf(rpcerr.ErrInvalidArgument, "update: %v", err)
	}
	return r.enqueue(ctx, item{upd: u, size: 64 + len(u.NodeId) + len(u.Error)}, nil)
}

// recordSize estimates a record's encoded size for MaxBatchBytes: the
// bytes that vary (inline arguments, names) plus a fixed allowance, which
// is cheaper than proto.Size on every record and close enough for a bound.
func recordSize(rec *pb.TaskRecord) int {
	n := 96 + len(rec.JobId) + len(rec.Function) + len(rec.OwnerAddress) + len(rec.NodeId) + len(rec.LastError)
	for _, a := range rec.Args {
		n += 8 + len(a.Value) + len(a.ObjectId) + len(a.OwnerAddress)
	}
	for k := range rec.Resources {
		n += 12 + len(k)
	}
	for k, v := range rec.Options {
		n += 4 + len(k) + len(v)
	}
	return n
}

// Release queues the release of objects their owner no longer references;
// their lineage goes once nothing depends on it.
func (r *Recorder) Release(ctx context.Context, objects ...ids.ObjectID) error {
	for _, o := range objects {
		if o.IsPut() {
			continue // no lineage to release
		}
		if err := r.enqueue(ctx, item{object: append([]byte(nil), o[:]...), size: ids.ObjectIDSize + 2}, nil); err != nil {
			return err
		}
	}
	return nil
}

func (r *Recorder) enqueue(ctx context.Context, it item, register func()) error {
	r.mu.Lock()
	for len(r.queue) >= r.o.MaxQueue && !r.closing {
		space := r.space
		r.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	if r.closing {
		return ErrClosed
	}
	if register != nil {
		register()
	}
	if len(r.queue) == 0 {
		r.firstAt = time.Now()
	}
	r.queue = append(r.queue, it)
	if len(r.queue) == 1 || len(r.queue) == r.o.MaxBatch {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Committed reports whether no record of the task is waiting to commit:
// true once its record committed, and for a task never recorded here.
func (r *Recorder) Committed(id ids.TaskID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, waiting := r.pending[id]
	return !waiting
}

// WaitCommitted waits until the records of tasks are committed. It returns
// the error of a batch that failed for good (the records are then lost),
// or ctx's error.
func (r *Recorder) WaitCommitted(ctx context.Context, tasks ...ids.TaskID) error {
	for _, id := range tasks {
		r.mu.Lock()
		p := r.pending[id]
		if p != nil && len(r.queue) > 0 {
			// Someone waits: send now rather than after FlushInterval.
			r.urgent = true
		}
		r.mu.Unlock()
		if p == nil {
			continue
		}
		select {
		case r.kick <- struct{}{}:
		default:
		}
		select {
		case <-p.done:
			if p.err != nil {
				return p.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Flush sends everything queued now and waits until it committed.
func (r *Recorder) Flush(ctx context.Context) error {
	for {
		r.mu.Lock()
		empty, flushed := len(r.queue) == 0 && !r.sending, r.flushed
		err := r.err
		r.urgent = !empty
		r.mu.Unlock()
		if empty {
			return err
		}
		select {
		case r.kick <- struct{}{}:
		default:
		}
		select {
		case <-flushed:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return ErrClosed
		}
	}
}

// Stats returns the recorder's counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Err returns the first batch failure that was not retryable, if any.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close flushes what is queued (bounded by Options.CloseTimeout), stops the
// flusher and waits for it. Idempotent.
func (r *Recorder) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closing = true
		close(r.space) // wake blocked callers: they get ErrClosed
		r.space = make(chan struct{})
		r.mu.Unlock()
		select {
		case r.kick <- struct{}{}:
		default:
		}
		t := time.AfterFunc(r.o.CloseTimeout, r.cancel)
		<-r.done
		t.Stop()
		r.cancel()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) > 0 {
		return fmt.Errorf("lineage: closed with %d items unsent", len(r.queue))
	}
	return r.err
}

// run is the flusher: it sends a batch when MaxBatch items wait, when the
// oldest has waited FlushInterval, or when closing; one at a time.
func (r *Recorder) run() {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		r.mu.Lock()
		n, closing, hurry, age := len(r.queue), r.closing, r.closing || r.urgent, time.Since(r.firstAt)
		r.mu.Unlock()
		switch {
		case r.ctx.Err() != nil:
			r.failQueued(r.ctx.Err())
			return
		case n == 0 && closing:
			return
		case n == 0:
			select {
			case <-r.kick:
			case <-r.ctx.Done():
			}
			continue
		case n < r.o.MaxBatch && !hurry && age < r.o.FlushInterval:
			timer.Reset(r.o.FlushInterval - age)
			select {
			case <-timer.C:
			case <-r.kick:
				timer.Stop()
			case <-r.ctx.Done():
			}
			continue
		}
		r.sendBatch()
	}
}

// sendBatch takes up to MaxBatch items off the queue and writes them,
// retrying an Unavailable answer with the same request (and request ID)
// until it commits, fails for good, or the recorder is cancelled.
func (r *Recorder) sendBatch() {
	r.mu.Lock()
	var batch []item
	bytes := 0
	for len(batch) < len(r.queue) && len(batch) < r.o.MaxBatch {
		it := r.queue[len(batch)]
		if len(batch) > 0 && bytes+it.size > r.o.MaxBatchBytes {
			break
		}
		bytes += it.size
		batch = append(batch, it)
	}
	// Reslice rather than copy what stays queued (a copy per batch cost
	// 18% of an owner's CPU under a stream of small tasks); the sent slots
	// are cleared so their records can be collected, and append moves the
	// rest once the array's end is reached.
	clear(r.queue[:len(batch)])
	r.queue = r.queue[len(batch):]
	r.firstAt = time.Now()
	r.urgent = r.urgent && len(r.queue) > 0
	r.sending = true
	close(r.space)
	r.space = make(chan struct{})
	r.mu.Unlock()

	req := &pb.RecordLineageRequest{RequestId: cpclient.RequestID()}
	var st Stats
	for _, it := range batch {
		switch {
		case it.rec != nil:
			req.Records = append(req.Records, it.rec)
			st.Records++
		case it.upd != nil:
			req.Updates = append(req.Updates, it.upd)
			st.Updates++
		case it.object != nil:
			req.ReleasedObjectIds = append(req.ReleasedObjectIds, it.object)
			st.Releases++
		}
	}
	err := r.write(req, &st)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.sending = false
	if err == nil {
		st.Batches = 1
		r.stats.Batches += st.Batches
		r.stats.Records += st.Records
		r.stats.Updates += st.Updates
		r.stats.Releases += st.Releases
	} else if r.err == nil {
		r.err = err
		r.log.Error("lineage batch lost", zap.Int("items", len(batch)), zap.Error(err))
	}
	r.stats.Retries += st.Retries
	r.finishLocked(batch, err)
	close(r.flushed)
	r.flushed = make(chan struct{})
}

func (r *Recorder) write(req *pb.RecordLineageRequest, st *Stats) error {
	backoff := 20 * time.Millisecond
	for {
		_, err := r.w.RecordLineage(r.ctx, req)
		if err == nil {
			return nil
		}
		if r.ctx.Err() != nil || !retryable(err) {
			return fmt.Errorf("lineage: record %d items: %w", len(req.Records)+len(req.Updates)+len(req.ReleasedObjectIds), err)
		}
		st.Retries++
		r.log.Debug("retrying lineage batch", zap.Error(err))
		select {
		case <-time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff)))):
		case <-r.ctx.Done():
		}
		backoff = min(2*backoff, time.Second)
	}
}

func retryable(err error) bool {
	switch rpcerr.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// finishLocked tells waiters their records committed (or failed).
func (r *Recorder) finishLocked(batch []item, err error) {
	for _, it := range batch {
		p := it.pending
		if p == nil {
			continue
		}
		p.err = err
		close(p.done)
		id, _ := ids.TaskFromBytes(it.rec.TaskId)
		if r.pending[id] == p {
			delete(r.pending, id)
		}
	}
}

func (r *Recorder) failQueued(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := r.queue
	r.queue = nil
	if r.err == nil && len(batch) > 0 {
		r.err = fmt.Errorf("lineage: %d items unsent: %w", len(batch), err)
	}
	r.finishLocked(batch, r.err)
	close(r.flushed)
	r.flushed = make(chan struct{})
}
