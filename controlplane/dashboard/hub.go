package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// subscriberBuffer is how many frames an event stream may fall behind
// before frames are dropped for it; pages use frames as "look again"
// signals, so a dropped one costs only a later refresh.
const subscriberBuffer = 32

// hub fans the dashboard's frames out to every open event stream and
// keeps the latest of each kind for streams that open later.
type hub struct {
	log *zap.Logger

	mu     sync.Mutex
	subs   map[chan []byte]struct{}
	closed bool
	change changeMsg
	heads  []byte // the latest "heads" frame
}

// changeMsg is the "change" event: the control-plane watch moved.
type changeMsg struct {
	// Index is the Raft index the serving head has applied up to.
	Index uint64 `json:"index"`
	// Events counts the changes seen since the dashboard started.
	Events uint64 `json:"events"`
	Reset  bool   `json:"reset,omitempty"`
	// Kinds are what changed in this batch ("node", "actor", ...).
	Kinds []string `json:"kinds"`
}

func newHub(log *zap.Logger) *hub {
	return &hub{log: log, subs: map[chan []byte]struct{}{}, change: changeMsg{Kinds: []string{}}}
}

func frame(event string, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{}`)
	}
	return []byte(fmt.Sprintf("event: %s\ndata: %s\n\n", event, b))
}

// subscribe returns a channel of frames, starting with the latest state;
// it is closed when the hub closes. cancel unsubscribes.
func (h *hub) subscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, subscriberBuffer)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return ch, func() {}
	}
	ch <- frame("change", h.change)
	if h.heads != nil {
		ch <- h.heads
	}
	h.subs[ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
	}
}

func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *hub) broadcastLocked(f []byte) {
	for ch := range h.subs {
		select {
		case ch <- f:
		default: // a slow page misses a signal, not the state
		}
	}
}

// applied records a watch batch and tells every page.
func (h *hub) applied(r *pb.WatchResponse) {
	kinds := map[string]bool{}
	for _, e := range r.Events {
		kinds[kindName(e.Kind)] = true
	}
	msg := changeMsg{Index: r.Index, Reset: r.Reset_, Kinds: make([]string, 0, len(kinds))}
	for k := range kinds {
		msg.Kinds = append(msg.Kinds, k)
	}
	sort.Strings(msg.Kinds)
	h.mu.Lock()
	defer h.mu.Unlock()
	msg.Events = h.change.Events + uint64(len(r.Events))
	h.change = msg
	h.broadcastLocked(frame("change", msg))
}

func (h *hub) latestChange() changeMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.change
}

func (h *hub) setHeads(v headsView) {
	f := frame("heads", v)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.heads = f
	h.broadcastLocked(f)
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}

func kindName(k pb.EventKind) string {
	switch k {
	case pb.EventKind_EVENT_NODE:
		return "node"
	case pb.EventKind_EVENT_JOB:
		return "job"
	case pb.EventKind_EVENT_KV:
		return "kv"
	case pb.EventKind_EVENT_HEAD:
		return "head"
	case pb.EventKind_EVENT_ACTOR:
		return "actor"
	case pb.EventKind_EVENT_JOB_SUBMISSION:
		return "submission"
	}
	return "other"
}

// watch follows the control plane from the serving head and feeds the
// hub until ctx ends; cpclient resumes the stream across reconnects.
func (d *Dashboard) watch(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := d.cfg.Client.Watch(ctx, &pb.WatchRequest{FromIndex: d.hub.latestChange().Index}, func(r *pb.WatchResponse) error {
			backoff = 100 * time.Millisecond
			d.hub.applied(r)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		d.log.Debug("dashboard watch ended; again", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// headView is one head's Raft state as the overview shows it.
type headView struct {
	ID           string `json:"id"`
	Address      string `json:"address"`
	Role         string `json:"role"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// Lag is how far this head's applied index trails the leader's commit
	// index; absent without a leader.
	Lag           *uint64 `json:"lag,omitempty"`
	LastContactMs int64   `json:"last_contact_ms"`
	QuorumProblem string  `json:"quorum_problem,omitempty"`
	Error         string  `json:"error,omitempty"`
	// Suffrage is the head's vote in the Raft configuration (Voter,
	// Nonvoter), as the answering heads list their peers.
	Suffrage string `json:"suffrage,omitempty"`
	// Self marks the head serving this dashboard.
	Self bool `json:"self,omitempty"`
}

type headsView struct {
	Heads  []headView `json:"heads"`
	Leader string     `json:"leader"`
	// Self is the ID of the head serving the page.
	Self string `json:"self"`
	At   int64  `json:"at_ms"`
}

// pollHeads asks every head for its Raft state each StatusInterval while
// a page is open (Status is not in the watch: commit indexes move on
// every write).
func (d *Dashboard) pollHeads(ctx context.Context) {
	t := time.NewTicker(d.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if d.hub.subscribers() == 0 {
			continue
		}
		d.hub.setHeads(d.heads(ctx))
	}
}

// heads gathers every head's own view, one attempt each.
func (d *Dashboard) heads(ctx context.Context) headsView {
	ctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	return headsFrom(d.cfg.Client.StatusAll(ctx), d.cfg.Client.Addresses())
}

func headsFrom(all []cpclient.HeadStatus, self []string) headsView {
	isSelf := map[string]bool{}
	for _, a := range self {
		isSelf[a] = true
	}
	idByAddr := map[string]string{}
	suffrage := map[string]string{}
	for _, hs := range all {
		for _, hi := range hs.Status.GetHeads() {
			idByAddr[hi.GrpcAddress] = hi.Id
		}
		for _, p := range hs.Status.GetPeers() {
			suffrage[p.Id] = p.Suffrage
		}
	}
	v := headsView{Heads: []headView{}, At: time.Now().UnixMilli()}
	var leaderCommit uint64
	var leaderTerm uint64
	seen := map[string]bool{}
	for _, hs := range all {
		st := hs.Status
		if st == nil {
			v.Heads = append(v.Heads, headView{ID: idByAddr[hs.Address], Address: hs.Address, Role: "Unreachable",
				Error: shortError(hs.Err), Self: isSelf[hs.Address]})
			continue
		}
		if seen[st.HeadId] {
			continue
		}
		seen[st.HeadId] = true
		hv := headView{ID: st.HeadId, Address: st.GrpcAddress, Role: st.RaftState, Term: st.Term,
			LastIndex: st.LastIndex, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
			LastContactMs: st.LastContactMillis, QuorumProblem: st.QuorumProblem,
			Self: isSelf[hs.Address] || isSelf[st.GrpcAddress]}
		if hv.Self {
			v.Self = st.HeadId
		}
		if st.RaftState == "Leader" && st.Term >= leaderTerm {
			leaderTerm, leaderCommit, v.Leader = st.Term, st.CommitIndex, st.HeadId
		}
		v.Heads = append(v.Heads, hv)
	}
	for i := range v.Heads {
		v.Heads[i].Suffrage = suffrage[v.Heads[i].ID]
	}
	if v.Leader != "" {
		for i := range v.Heads {
			h := &v.Heads[i]
			if h.Error == "" {
				lag := uint64(0)
				if leaderCommit > h.AppliedIndex {
					lag = leaderCommit - h.AppliedIndex
				}
				h.Lag = &lag
			}
		}
	}
	sort.SliceStable(v.Heads, func(i, j int) bool {
		if v.Heads[i].ID != v.Heads[j].ID {
			return v.Heads[i].ID < v.Heads[j].ID
		}
		return v.Heads[i].Address < v.Heads[j].Address
	})
	return v
}

// shortError keeps what a reader of the heads table needs from a dial
// error: gRPC's "transport: Error while dialing ..." ends with the cause.
func shortError(err error) string {
	if err == nil {
		return "no answer"
	}
	s := err.Error()
	for _, cause := range []string{"connection refused", "no route to host", "i/o timeout", "context deadline exceeded"} {
		if strings.Contains(s, cause) {
			return cause
		}
	}
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
