package head

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// liveness is the leader's soft state about nodes: when each last
// heartbeat arrived and what resources it said were free. A new leader
// starts it empty and gives every node NodeGrace before judging it.
type liveness struct {
	h  *Head
	mu sync.Mutex
	// leading is false outside the node-liveness routine: heartbeats are
	// then refused so no node is judged on a stale clock.
	leading bool
	since   time.Time // when this leadership's liveness began
	last    map[string]time.Time
	avail   map[string]map[string]float64
	// budget is each node's heartbeat allowance (a token bucket), so a
	// node that floods heartbeats is refused cheaply instead of taking the
	// leader's time from the others.
	budget map[string]*tokenBucket

	// The view log lets a raylet's view refresh get only what changed
	// (ListNodes with a position): epoch names this leadership's log,
	// seq counts changes of free resources, changes lists them in seq
	// order, and a position older than floor gets the whole list.
	epoch   uint64
	seq     uint64
	floor   uint64
	changes []viewChange
	// alive is the last whole list of alive nodes answered, shared by the
	// refreshes that ask for it while nothing changed (a thousand raylets
	// starting, or coming back after a failover, each ask once).
	alive      aliveList
	wholeLists tokenBucket
	// load is each node's waiting lease requests and object count, the
	// autoscaler's demand (autoscaler.go).
	load map[string]nodeLoad
}

type nodeLoad struct {
	demand  []*pb.ResourceDemand
	objects int64
}

// aliveList is a whole-list answer and the position it was made at.
type aliveList struct {
	epoch, seq, index uint64
	at                time.Time
	nodes             []*pb.NodeInfo
}

// aliveListMaxAge bounds how stale the heartbeat times of a shared list
// may be.
const aliveListMaxAge = time.Second

type viewChange struct {
	seq  uint64
	node string
}

// maxViewChanges bounds the view log; a raylet further behind gets the
// whole list.
const maxViewChanges = 1 << 16

// A raylet heartbeats every 500ms and within 50ms of a change of its free
// resources: at most ~20/s. Twice that, with a burst of as many, is never
// refused to a well-behaved node.
const (
	heartbeatRate  = 40.0 // per second, per node
	heartbeatBurst = 40.0
)

// tokenBucket: tokens refill at rate a second, up
// to burst.
type tokenBucket struct {
	tokens float64
	at     time.Time
}

// take spends one token at now, reporting false when none is left.
func (b *tokenBucket) take(now time.Time, rate, burst float64) bool {
	if b.at.IsZero() {
		b.tokens, b.at = burst, now
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Whole lists of alive nodes the leader answers a second, beyond those
// shared from its cache: after a failover every raylet asks for one at
// once, and a thousand answers of a thousand nodes each (tens of MB,
// through followers that forward them) starved heartbeats and Raft's own
// traffic. A raylet refused keeps its view and asks again at its next
// refresh.
const (
	wholeListRate  = 100.0
	wholeListBurst = 50.0
)

func newLiveness(h *Head) *liveness { return &liveness{h: h} }

func (l *liveness) run(ctx context.Context) {
	l.mu.Lock()
	l.leading, l.since = true, time.Now()
	l.last, l.avail, l.budget = map[string]time.Time{}, map[string]map[string]float64{}, map[string]*tokenBucket{}
	l.load = map[string]nodeLoad{}
	l.epoch, l.seq, l.floor, l.changes = rand.Uint64()|1, 0, 0, nil
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.leading, l.last, l.avail, l.budget, l.changes, l.alive = false, nil, nil, nil, nil, aliveList{}
		l.load = nil
		l.wholeLists = tokenBucket{}
		l.mu.Unlock()
	}()
	tick := max(l.h.cfg.NodeTimeout/10, 20*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range l.expired(time.Now()) {
			reason := fmt.Sprintf("missed heartbeats for %s", l.h.cfg.NodeTimeout)
			_, err := l.h.applier.Apply(ctx, fsm.CmdMarkNodeDead, "", &pb.MarkNodeDeadCommand{NodeId: id, Reason: reason})
			if err != nil {
				l.h.log.Warn("mark node dead", zap.String("node", id), zap.Error(err))
				continue
			}
			l.h.log.Warn("node marked dead", zap.String("node", id), zap.String("reason", reason))
		}
	}
}

// expired lists alive nodes whose last heartbeat (or, if none arrived under
// this leader, the start of its grace period) is older than the timeout.
func (l *liveness) expired(now time.Time) []string {
	nodes := l.h.fsm.Nodes()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, n := range nodes {
		if n.State != pb.NodeState_NODE_ALIVE {
			continue
		}
		last, ok := l.last[n.NodeId]
		if !ok {
			last = l.since.Add(l.h.cfg.NodeGrace - l.h.cfg.NodeTimeout)
		}
		if now.Sub(last) > l.h.cfg.NodeTimeout {
			out = append(out, n.NodeId)
		}
	}
	return out
}

// heartbeat records a node's heartbeat on the leader.
func (l *liveness) heartbeat(nodeID string, avail map[string]float64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leading {
		return ErrNotLeader
	}
	now := time.Now()
	b := l.budget[nodeID]
	if b == nil {
		b = &tokenBucket{}
		l.budget[nodeID] = b
	}
	if !b.take(now, heartbeatRate, heartbeatBurst) {
		return rpcerr.Wrapf(ErrHeartbeatRateLimited, "node %s sends more than %.0f heartbeats/s", nodeID, heartbeatRate)
	}
	l.last[nodeID] = now
	if old, ok := l.avail[nodeID]; !ok || !maps.Equal(old, avail) {
		l.seq++
		l.changes = append(l.changes, viewChange{seq: l.seq, node: nodeID})
		if len(l.changes) > maxViewChanges {
			half := len(l.changes) / 2
			l.floor = l.changes[half-1].seq
			l.changes = append(l.changes[:0:0], l.changes[half:]...)
		}
	}
	l.avail[nodeID] = avail
	return nil
}

// mayListAll spends one of the whole lists the leader may answer now.
func (l *liveness) mayListAll() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wholeLists.take(time.Now(), wholeListRate, wholeListBurst)
}

// viewPosition is where the view log stands, for a whole-list answer.
func (l *liveness) viewPosition() (epoch, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch, l.seq
}

// changedSince lists the nodes whose free resources changed after seq of
// epoch, and the current position; ok is false when the log cannot tell
// (another leadership's epoch, or too old).
func (l *liveness) changedSince(epoch, seq uint64) (nodes []string, now uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leading || epoch != l.epoch || seq < l.floor || seq > l.seq {
		return nil, 0, false
	}
	i := sort.Search(len(l.changes), func(i int) bool { return l.changes[i].seq > seq })
	for _, c := range l.changes[i:] {
		nodes = append(nodes, c.node)
	}
	return nodes, l.seq, true
}

// decorate returns copies of nodes with the leader's soft state filled in.
// The copies are made outside the lock: heartbeats must not wait behind a
// list of a thousand nodes being cloned.
func (l *liveness) decorate(nodes []*pb.NodeInfo) []*pb.NodeInfo {
	type soft struct {
		last  time.Time
		avail map[string]float64
		ok    bool
	}
	s := make([]soft, len(nodes))
	l.mu.Lock()
	for i, n := range nodes {
		if t, ok := l.last[n.NodeId]; ok {
			s[i] = soft{last: t, avail: l.avail[n.NodeId], ok: true}
		}
	}
	l.mu.Unlock()
	out := make([]*pb.NodeInfo, len(nodes))
	for i, n := range nodes {
		c := proto.Clone(n).(*pb.NodeInfo)
		if s[i].ok {
			// The heartbeat's map is never modified once stored.
			c.LastHeartbeatUnixNano = s[i].last.UnixNano()
			c.Available = s[i].avail
		}
		out[i] = c
	}
	return out
}

// freeSince looks up, for each node, the free resources of its latest
// heartbeat and when the leader received it (zero if none yet). The maps
// are shared, never modified: the placer reads them without a copy (the
// clones of decorate cost more than a placement itself at 1,000 nodes).
func (l *liveness) freeSince(nodes []*pb.NodeInfo, avail []map[string]float64, at []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, n := range nodes {
		avail[i], at[i] = l.avail[n.NodeId], l.last[n.NodeId]
	}
}

// report records a node's load (from its heartbeat) on the leader.
func (l *liveness) report(nodeID string, ld nodeLoad) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.load != nil {
		l.load[nodeID] = ld
	}
}

// loads returns the reported load of the given nodes.
func (l *liveness) loads(alive map[string]bool) map[string]nodeLoad {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]nodeLoad, len(l.load))
	for id, ld := range l.load {
		if alive[id] {
			out[id] = ld
		}
	}
	return out
}
