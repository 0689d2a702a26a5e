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
	budget map[string]*heartbeatBudget

	// The view log lets a raylet's view refresh get only what changed
	// (ListNodes with a position): epoch names this leadership's log,
	// seq counts changes of free resources, changes lists them in seq
	// order, and a position older than floor gets the whole list.
	epoch   uint64
	seq     uint64
	floor   uint64
	changes []viewChange
}

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

// heartbeatBudget is a token bucket: tokens refill at heartbeatRate.
type heartbeatBudget struct {
	tokens float64
	at     time.Time
}

// take spends one token at now, reporting false when none is left.
func (b *heartbeatBudget) take(now time.Time) bool {
	b.tokens = min(heartbeatBurst, b.tokens+now.Sub(b.at).Seconds()*heartbeatRate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func newLiveness(h *Head) *liveness { return &liveness{h: h} }

func (l *liveness) run(ctx context.Context) {
	l.mu.Lock()
	l.leading, l.since = true, time.Now()
	l.last, l.avail, l.budget = map[string]time.Time{}, map[string]map[string]float64{}, map[string]*heartbeatBudget{}
	l.epoch, l.seq, l.floor, l.changes = rand.Uint64()|1, 0, 0, nil
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.leading, l.last, l.avail, l.budget, l.changes = false, nil, nil, nil, nil
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
		b = &heartbeatBudget{tokens: heartbeatBurst, at: now}
		l.budget[nodeID] = b
	}
	if !b.take(now) {
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
func (l *liveness) decorate(nodes []*pb.NodeInfo) []*pb.NodeInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*pb.NodeInfo, len(nodes))
	for i, n := range nodes {
		c := proto.Clone(n).(*pb.NodeInfo)
		if t, ok := l.last[n.NodeId]; ok {
			c.LastHeartbeatUnixNano = t.UnixNano()
			c.Available = l.avail[n.NodeId]
		}
		out[i] = c
	}
	return out
}
