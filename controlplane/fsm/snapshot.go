package fsm

import (
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Snapshot captures the state by reference: stored messages are never
// mutated in place, so Persist can encode them while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{s: f.snapshotLocked()}, nil
}

func (f *FSM) snapshotLocked() *pb.Snapshot {
	s := &pb.Snapshot{
		Index:           f.index,
		Cluster:         f.cluster,
		Heads:           sortedValues(f.heads, func(h *pb.HeadInfo) string { return h.Id }),
		Nodes:           sortedValues(f.nodes, func(n *pb.NodeInfo) string { return n.NodeId }),
		Jobs:            sortedValues(f.jobs, func(j *pb.JobInfo) string { return j.JobId }),
		NextJob:         f.nextJob,
		Dedup:           f.dedup.entries(),
		Actors:          sortedValues(f.actors, func(a *pb.ActorInfo) string { return a.ActorId }),
		Submissions:     sortedValues(f.submissions, func(j *pb.JobSubmission) string { return j.SubmissionId }),
		PlacementGroups: sortedValues(f.groups, func(g *pb.PlacementGroupInfo) string { return g.PlacementGroupId }),
		Tokens:          sortedValues(f.tokens, func(t *pb.TokenInfo) string { return t.Id }),
		DeadOwners:      f.dead.order,
		Autoscaler:      f.scaler.snapshot(),
		Serve:           f.serve.snapshot(),
	}
	f.lineage.snapshot(s)
	nss := make([]string, 0, len(f.kv))
	for ns := range f.kv {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		keys := make([]string, 0, len(f.kv[ns]))
		for k := range f.kv[ns] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			s.Kv = append(s.Kv, &pb.KVEntry{Namespace: ns, Key: k, Value: f.kv[ns][k]})
		}
	}
	return s
}

type fsmSnapshot struct{ s *pb.Snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.s)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Restore replaces the whole state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	var s pb.Snapshot
	if err := proto.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reset()
	f.index = s.Index
	f.cluster = s.Cluster
	for _, h := range s.Heads {
		f.heads[h.Id] = h
	}
	for _, n := range s.Nodes {
		f.nodes[n.NodeId] = n
	}
	for _, j := range s.Jobs {
		f.jobs[j.JobId] = j
	}
	for _, j := range s.Submissions {
		f.submissions[j.SubmissionId] = j
	}
	for _, t := range s.Tokens {
		f.tokens[t.Id] = t
		f.tokenByHash[t.Hash] = t.Id
	}
	for _, o := range s.DeadOwners {
		f.dead.add(o)
	}
	if s.NextJob > 0 {
		f.nextJob = s.NextJob
	}
	for _, e := range s.Kv {
		ns := f.kv[e.Namespace]
		if ns == nil {
			ns = map[string][]byte{}
			f.kv[e.Namespace] = ns
		}
		ns[e.Key] = e.Value
	}
	for _, a := range s.Actors {
		f.actors[a.ActorId] = a
		if a.Name != "" && a.State != pb.ActorState_DEAD {
			f.actorNames[nameKey(a.Namespace, a.Name)] = a.ActorId
		}
		if a.State == pb.ActorState_DEAD {
			f.deadActors = append(f.deadActors, deadKey{a.DeadIndex, a.ActorId})
		}
	}
	heap.Init(&f.deadActors)
	f.restoreGroups(s.PlacementGroups)
	f.scaler.restore(s.Autoscaler)
	f.serve.restore(s.Serve)
	if err := f.lineage.restore(&s); err != nil {
		return fmt.Errorf("restore lineage: %w", err)
	}
	for _, d := range s.Dedup {
		f.dedup.put(d.RequestId, d.Result)
	}
	f.events.restart(s.Index)
	f.notify()
	f.log.Info("restored snapshot", zap.Uint64("index", s.Index), zap.Int("nodes", len(s.Nodes)),
		zap.Int("jobs", len(s.Jobs)), zap.Int("kv", len(s.Kv)), zap.Int("lineage", len(s.Lineage)))
	return nil
}

// StateHash is a digest of the replicated state (not the applied index), so
// heads that applied the same log compare equal. The chaos harness checks it.
func (f *FSM) StateHash() (hash string, index uint64) {
	f.mu.RLock()
	s := f.snapshotLocked()
	f.mu.RUnlock()
	index, s.Index = s.Index, 0
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), index
}
