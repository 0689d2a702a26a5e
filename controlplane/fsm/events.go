package fsm

import pb "github.com/manta-ray/manta/proto/controlpb"

// eventRing is the recent change log that watchers resume from. It is
// derived from applies and is not replicated state: after a restore it
// starts empty at the snapshot's index.
type eventRing struct {
	buf  []*pb.Event
	head int
	n    int
	// complete says every event with index > complete is still held.
	complete uint64
}

func newEventRing(capacity int) eventRing {
	return eventRing{buf: make([]*pb.Event, capacity)}
}

func (r *eventRing) add(e *pb.Event) {
	if r.n == len(r.buf) {
		old := r.buf[r.head]
		r.complete = old.Index
		r.buf[r.head] = e
		r.head = (r.head + 1) % len(r.buf)
		return
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
}

// since returns the events with index > from whose kind is wanted, and
// false when some of them are no longer held.
func (r *eventRing) since(from uint64, want func(pb.EventKind) bool) ([]*pb.Event, bool) {
	if from < r.complete {
		return nil, false
	}
	// Events are held in index order: binary-search the first one after from.
	lo, hi := 0, r.n
	for lo < hi {
		mid := (lo + hi) / 2
		if r.buf[(r.head+mid)%len(r.buf)].Index > from {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	var out []*pb.Event
	for i := lo; i < r.n; i++ {
		e := r.buf[(r.head+i)%len(r.buf)]
		if e.Index > from && want(e.Kind) {
			out = append(out, e)
		}
	}
	return out, true
}

func (r *eventRing) restart(at uint64) {
	for i := range r.buf {
		r.buf[i] = nil
	}
	r.head, r.n, r.complete = 0, 0, at
}
