package head

import (
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// maxEventsPerMessage bounds one WatchResponse.
const maxEventsPerMessage = 1024

// Watch streams changes from this head's store, in index order. A watcher
// that reconnects to any head with the last index it saw resumes without a
// gap; one that is too far behind gets a reset with the current state.
func (a *api) Watch(req *pb.WatchRequest, stream pb.ControlPlane_WatchServer) error {
	h := a.h
	want := kindFilter(req.Kinds)
	from := req.FromIndex
	first := true
	for {
		ch, _ := h.fsm.Changed()
		events, idx, ok := h.fsm.EventsSince(from, want)
		if !ok || (first && from == 0) {
			reset := h.resetEvents(want)
			if err := sendChunks(stream, true, idx, reset); err != nil {
				return err
			}
			from = idx
		} else if len(events) > 0 {
			last := events[len(events)-1].Index
			if err := sendChunks(stream, false, last, events); err != nil {
				return err
			}
			from = last
		} else if idx > from {
			// Nothing wanted up to idx: start the next look there, not at
			// the last wanted event. Otherwise a watcher of rare kinds
			// (raylets watch jobs) rescans every KV and node change since
			// its last job event on every apply; with a thousand of them
			// that was half the leader's CPU.
			from = idx
		}
		first = false
		select {
		case <-ch:
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-h.ctx.Done():
			return ErrShuttingDown
		}
	}
}

// sendChunks sends events in messages of bounded size; a reset spans
// several messages, the first flagged reset.
func sendChunks(stream pb.ControlPlane_WatchServer, reset bool, index uint64, events []*pb.Event) error {
	for {
		n := min(len(events), maxEventsPerMessage)
		if err := stream.Send(&pb.WatchResponse{Reset_: reset, Index: index, Events: events[:n]}); err != nil {
			return rpcerr.ToStatus(err)
		}
		events, reset = events[n:], false
		if len(events) == 0 {
			return nil
		}
	}
}

func kindFilter(kinds []pb.EventKind) func(pb.EventKind) bool {
	if len(kinds) == 0 {
		return func(pb.EventKind) bool { return true }
	}
	set := map[pb.EventKind]bool{}
	for _, k := range kinds {
		set[k] = true
	}
	return func(k pb.EventKind) bool { return set[k] }
}

// resetEvents describes the current state of the wanted kinds as events.
func (h *Head) resetEvents(want func(pb.EventKind) bool) []*pb.Event {
	var out []*pb.Event
	if want(pb.EventKind_EVENT_HEAD) {
		for _, hi := range h.fsm.Heads() {
			out = append(out, &pb.Event{Kind: pb.EventKind_EVENT_HEAD, Head: hi})
		}
	}
	if want(pb.EventKind_EVENT_NODE) {
		for _, n := range h.fsm.Nodes() {
			out = append(out, &pb.Event{Kind: pb.EventKind_EVENT_NODE, Node: n})
		}
	}
	if want(pb.EventKind_EVENT_JOB) {
		for _, j := range h.fsm.Jobs() {
			out = append(out, &pb.Event{Kind: pb.EventKind_EVENT_JOB, Job: j})
		}
	}
	if want(pb.EventKind_EVENT_JOB_SUBMISSION) {
		for _, j := range h.fsm.Submissions() {
			out = append(out, &pb.Event{Kind: pb.EventKind_EVENT_JOB_SUBMISSION, Submission: j})
		}
	}
	if want(pb.EventKind_EVENT_PLACEMENT_GROUP) {
		for _, g := range h.fsm.PlacementGroups() {
			out = append(out, &pb.Event{Kind: pb.EventKind_EVENT_PLACEMENT_GROUP, PlacementGroup: g})
		}
	}
	if want(pb.EventKind_EVENT_ACTOR) {
		for _, a := range h.fsm.Actors() {
			out = append(out, &pb.Event{Kind: pb.EventKind_EVENT_ACTOR, Actor: a})
		}
	}
	if want(pb.EventKind_EVENT_KV) {
		for _, ns := range h.fsm.KVNamespaces() {
			keys, _ := h.fsm.KVList(ns, "")
			for _, k := range keys {
				out = append(out, &pb.Event{Kind: pb.EventKind_EVENT_KV, KvNamespace: ns, KvKey: k})
			}
		}
	}
	return out
}
