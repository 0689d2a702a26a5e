// Package logmonitor keeps worker output on a raylet's disk and reads it
// back: each worker's stdout and stderr go to one size-bounded, rotated
// file (RotatingFile, named by FileName), and Monitor streams the lines of
// a job, a worker, a task or an actor from those files, attributed by the
// workerlog markers in them, following new output and new workers. Readers
// only ever read files, so a slow reader falls behind in the file instead
// of holding up the worker that writes it.
package logmonitor

import (
	"context"
	"fmt"
	"time"
)

// Query selects lines. At most one of WorkerID, TaskID and ActorID; JobID
// may narrow any of them. The zero Query is every worker's output.
type Query struct {
	JobID    string
	WorkerID string
	TaskID   string // lines printed while the task ran (its markers' attempts)
	ActorID  string // lines printed by the actor's worker once it became the actor
	// Tail is how many of the last kept lines of each worker to send before
	// following; negative sends every kept line.
	Tail int
	// Follow keeps streaming new lines (and new workers' files) until the
	// context ends or, for WorkerID, the worker has exited and its output
	// has been read.
	Follow bool
}

// Monitor reads the worker logs of one node.
type Monitor struct {
	// Dir is the node's worker log directory.
	Dir string
	// Alive says whether a worker may still write its file; once it says
	// no, the file is complete (the pool closes the file before it forgets
	// the worker). Nil: every worker is alive.
	Alive func(workerID string) bool
	// Poll is how often a follower looks for new output; default 100ms.
	Poll time.Duration
}

// MaxTail caps Query.Tail: the lines held back while catching up are
// buffered, one worker at a time.
const MaxTail = 100_000

// Batch bounds: a batch is sent once it holds this many lines or bytes.
const (
	batchLines = 512
	batchBytes = 1 << 20
	// pollBudget bounds the bytes read from one file per poll, so one
	// chatty worker does not starve the others of a job.
	pollBudget = 1 << 20
)

// Stream sends the lines q selects, in batches, to send (which may block:
// the monitor then just reads later). It returns nil when done (not
// following, or the followed worker ended), ErrNoLogs when a worker, task
// or actor has no output here, or ctx's or send's error.
func (m *Monitor) Stream(ctx context.Context, q Query, send func([]Line) error) error {
	n := 0
	for _, s := range []string{q.WorkerID, q.TaskID, q.ActorID} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w: name at most one of worker, task and actor", ErrBadQuery)
	}
	q.Tail = min(q.Tail, MaxTail)
	poll := m.Poll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	s := &stream{m: m, q: q, send: send, fls: map[string]*follower{}, gone: map[string]bool{}}
	defer s.closeAll()
	if err := s.discover(true); err != nil {
		return err
	}
	if err := s.flush(); err != nil {
		return err
	}
	switch {
	case q.WorkerID != "" && len(s.fls) == 0:
		return fmt.Errorf("%w: worker %s", ErrNoLogs, q.WorkerID)
	case q.TaskID != "" && !s.seen:
		return fmt.Errorf("%w: no output of task %s", ErrNoLogs, q.TaskID)
	case q.ActorID != "" && !s.seen:
		return fmt.Errorf("%w: no output of actor %s", ErrNoLogs, q.ActorID)
	}
	if !q.Follow {
		for _, fl := range s.fls {
			fl.flush(s.emit)
		}
		return s.flush()
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := s.discover(false); err != nil {
			return err
		}
		if err := s.pollAll(); err != nil {
			return err
		}
		if q.WorkerID != "" && len(s.fls) == 0 {
			return nil
		}
	}
}

type stream struct {
	m    *Monitor
	q    Query
	send func([]Line) error

	fls   map[string]*follower // by path
	gone  map[string]bool      // files read to their end: never reopened
	seen  bool                 // a marker of q's task or actor was read
	batch []Line
	bytes int
	ring  *ring // non-nil while catching up with Tail ≥ 0
}

func (s *stream) wants(f File) bool {
	return (s.q.JobID == "" || f.JobID == s.q.JobID) && (s.q.WorkerID == "" || f.WorkerID == s.q.WorkerID)
}

func (s *stream) matches(l *Line) bool {
	switch {
	case s.q.TaskID != "":
		return l.TaskID == s.q.TaskID
	case s.q.ActorID != "":
		return l.ActorID == s.q.ActorID
	}
	return true
}

func (s *stream) onMarker(fl *follower) {
	if (s.q.TaskID != "" && fl.attr.TaskID == s.q.TaskID) || (s.q.ActorID != "" && fl.attr.ActorID == s.q.ActorID) {
		s.seen = true
	}
}

// emit adds a line to the tail ring while catching up, else to the batch.
// A batch that fills is sent at the next flushIfFull.
func (s *stream) emit(l Line) {
	if !s.matches(&l) {
		return
	}
	if s.ring != nil {
		s.ring.add(l)
		return
	}
	s.batch = append(s.batch, l)
	s.bytes += len(l.Text)
}

func (s *stream) flushIfFull() error {
	if len(s.batch) >= batchLines || s.bytes >= batchBytes {
		return s.flush()
	}
	return nil
}

func (s *stream) flush() error {
	if len(s.batch) == 0 {
		return nil
	}
	err := s.send(s.batch)
	s.batch, s.bytes = nil, 0
	return err
}

// discover opens the files of workers not seen yet. The first time, each
// is read to its current end and only its last Tail lines are kept; files
// that appear later are new output and are read whole.
func (s *stream) discover(first bool) error {
	files, err := ListFiles(s.m.Dir)
	if err != nil {
		return err
	}
	for _, f := range files {
		if !s.wants(f) || s.fls[f.Path] != nil || s.gone[f.Path] {
			continue
		}
		fl, err := openFollower(f, s.onMarker)
		if err != nil {
			continue // removed meanwhile
		}
		s.fls[f.Path] = fl
		if !first || s.q.Tail < 0 {
			if err := s.drain(fl); err != nil {
				return err
			}
			continue
		}
		s.ring = newRing(s.q.Tail)
		for {
			k, err := fl.poll(pollBudget, s.emit)
			if err != nil {
				s.ring = nil
				return err
			}
			if k == 0 {
				break
			}
		}
		r := s.ring
		s.ring = nil
		for _, l := range r.lines() {
			s.batch = append(s.batch, l)
			s.bytes += len(l.Text)
			if err := s.flushIfFull(); err != nil {
				return err
			}
		}
	}
	return nil
}

// drain reads fl to its current end, sending full batches on the way.
func (s *stream) drain(fl *follower) error {
	for {
		k, err := fl.poll(pollBudget, s.emit)
		if err != nil {
			return err
		}
		if err := s.flushIfFull(); err != nil {
			return err
		}
		if k == 0 {
			return nil
		}
	}
}

// pollAll reads what is new in every followed file, and retires the files
// of workers that have exited once they are read to the end.
func (s *stream) pollAll() error {
	for path, fl := range s.fls {
		k, err := fl.poll(pollBudget, s.emit)
		if err != nil {
			return err
		}
		if err := s.flushIfFull(); err != nil {
			return err
		}
		if k > 0 || s.m.Alive == nil || s.m.Alive(fl.file.WorkerID) {
			continue
		}
		// Exited: the file is complete; read what came since the poll.
		if err := s.drain(fl); err != nil {
			return err
		}
		fl.flush(s.emit)
		fl.close()
		delete(s.fls, path)
		s.gone[path] = true
	}
	return s.flush()
}

func (s *stream) closeAll() {
	for _, fl := range s.fls {
		fl.close()
	}
}

// ring keeps the last n lines.
type ring struct {
	n   int
	buf []Line
	pos int
}

func newRing(n int) *ring { return &ring{n: n} }

func (r *ring) add(l Line) {
	if r.n == 0 {
		return
	}
	if len(r.buf) < r.n {
		r.buf = append(r.buf, l)
		return
	}
	r.buf[r.pos] = l
	r.pos = (r.pos + 1) % r.n
}

func (r *ring) lines() []Line {
	return append(append([]Line(nil), r.buf[r.pos:]...), r.buf[:r.pos]...)
}
