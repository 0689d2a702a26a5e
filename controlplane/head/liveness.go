package head

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
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
	// load is each node's waiting lease requests and object count, the
	// autoscaler's demand (autoscaler.go).
	load map[string]nodeLoad
}

type nodeLoad struct {
	demand  []*pb.ResourceDemand
	objects int64
}

func newLiveness(h *Head) *liveness { return &liveness{h: h} }

func (l *liveness) run(ctx context.Context) {
	l.mu.Lock()
	l.leading, l.since = true, time.Now()
	l.last, l.avail, l.load = map[string]time.Time{}, map[string]map[string]float64{}, map[string]nodeLoad{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.leading, l.last, l.avail, l.load = false, nil, nil, nil
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
	l.last[nodeID] = time.Now()
	l.avail[nodeID] = avail
	return nil
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
