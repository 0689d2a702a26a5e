package fsm

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Handlers never mutate a stored message: they store a fresh one, so reads
// and snapshots may hold the old pointer without copying.

func applyInitCluster(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var ci pb.ClusterInfo
	if err := decode(body, &ci); err != nil {
		return errResult(err)
	}
	if f.cluster != nil {
		if f.cluster.ClusterId == ci.ClusterId {
			return okResult()
		}
		return errResult(rpcerr.Wrapf(ErrClusterExists, "cluster is %s", f.cluster.ClusterId))
	}
	ci.CreatedUnixNano = c.timeNanos
	f.cluster = &ci
	return okResult()
}

func applyUpsertHead(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var h pb.HeadInfo
	if err := decode(body, &h); err != nil {
		return errResult(err)
	}
	if h.Id == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "head without id"))
	}
	if old := f.heads[h.Id]; old != nil && proto.Equal(old, &h) {
		return okResult()
	}
	f.heads[h.Id] = &h
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_HEAD, Head: &h})
	return &pb.CommandResult{Flag: true}
}

func applyRemoveHead(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.RemoveHeadCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	h, ok := f.heads[cmd.Id]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrHeadNotFound, "%q", cmd.Id))
	}
	delete(f.heads, cmd.Id)
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_HEAD, Head: h, Deleted: true})
	return okResult()
}

func applyRegisterNode(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var n pb.NodeInfo
	if err := decode(body, &n); err != nil {
		return errResult(err)
	}
	if n.NodeId == "" {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "node without id"))
	}
	old := f.nodes[n.NodeId]
	if old != nil && old.State == pb.NodeState_NODE_DEAD {
		return errResult(rpcerr.Wrapf(ErrNodeDead, "node %s died (%s); a raylet that returns registers under a new ID", n.NodeId, old.DeathReason))
	}
	n.State = pb.NodeState_NODE_ALIVE
	n.Available, n.LastHeartbeatUnixNano = nil, 0 // soft state never enters the FSM
	n.RegisteredUnixNano = c.timeNanos
	if old != nil {
		n.RegisteredUnixNano = old.RegisteredUnixNano
	}
	f.nodes[n.NodeId] = &n
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_NODE, Node: &n})
	return &pb.CommandResult{Flag: old == nil}
}

func applyMarkNodeDead(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var cmd pb.MarkNodeDeadCommand
	if err := decode(body, &cmd); err != nil {
		return errResult(err)
	}
	old, ok := f.nodes[cmd.NodeId]
	if !ok {
		return errResult(rpcerr.Wrapf(ErrNodeNotFound, "%q", cmd.NodeId))
	}
	if old.State == pb.NodeState_NODE_DEAD {
		return okResult()
	}
	n := proto.Clone(old).(*pb.NodeInfo)
	n.State = pb.NodeState_NODE_DEAD
	n.DeathReason = cmd.Reason
	n.DeadUnixNano = c.timeNanos
	f.nodes[n.NodeId] = n
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_NODE, Node: n})
	f.rescheduleGroupsOfNodeLocked(c, n.NodeId)
	return &pb.CommandResult{Flag: true}
}

// JobID formats the n-th job's ID: 4 bytes in hex, as Ray's job IDs are.
func JobID(n uint32) string { return fmt.Sprintf("%08x", n) }

func applyAddJob(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var j pb.JobInfo
	if err := decode(body, &j); err != nil {
		return errResult(err)
	}
	j.JobId = JobID(f.nextJob)
	f.nextJob++
	j.State = pb.JobState_JOB_RUNNING
	j.StartUnixNano = c.timeNanos
	j.EndUnixNano = 0
	j.Retained = false // only the job's end decides
	f.jobs[j.JobId] = &j
	f.linkDriverLocked(c, &j)
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_JOB, Job: &j})
	return &pb.CommandResult{Id: j.JobId}
}

func applyFinishJob(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var req pb.FinishJobRequest
	if err := decode(body, &req); err != nil {
		return errResult(err)
	}
	if _, ok := f.jobs[req.JobId]; !ok {
		return errResult(rpcerr.Wrapf(ErrJobNotFound, "%q", req.JobId))
	}
	return &pb.CommandResult{Flag: f.finishJobLocked(c, req.JobId, req.State, req.Message)}
}

// finishJobLocked ends a running driver job: its non-detached actors die
// and its lineage goes, unless detached actors are left that may hold its
// refs: then the job is retained (adoption.go). The first end wins; it
// reports whether this one did.
func (f *FSM) finishJobLocked(c *applyCtx, jobID string, state pb.JobState, message string) bool {
	old, ok := f.jobs[jobID]
	if !ok || old.State != pb.JobState_JOB_RUNNING {
		return false
	}
	j := proto.Clone(old).(*pb.JobInfo)
	j.State = state
	if j.State == pb.JobState_JOB_STATE_UNSPECIFIED || j.State == pb.JobState_JOB_RUNNING {
		j.State = pb.JobState_JOB_SUCCEEDED
	}
	j.Message = message
	j.EndUnixNano = c.timeNanos
	f.jobs[j.JobId] = j
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_JOB, Job: j})
	f.killJobActorsLocked(c, j.JobId, "its job "+j.JobId+" ended")
	f.removeJobGroupsLocked(c, j.JobId)
	if f.detachedHoldersLocked(j) {
		// Detached actors that may hold the job's refs outlive it: its
		// lineage is adopted instead of dropped (adoption.go), until they end.
		j.Retained = true
		f.adoptJobLineageLocked(c, j.JobId)
	} else {
		f.dropJobLineageLocked(j.JobId)
		f.dropDurableLocked(c, j.JobId)
	}
	return true
}

func applyKVPut(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var req pb.KVPutRequest
	if err := decode(body, &req); err != nil {
		return errResult(err)
	}
	ns := f.kv[req.Namespace]
	if ns == nil {
		ns = map[string][]byte{}
		f.kv[req.Namespace] = ns
	}
	_, exists := ns[req.Key]
	if exists && !req.Overwrite {
		return &pb.CommandResult{Flag: false}
	}
	if req.Value == nil {
		req.Value = []byte{}
	}
	ns[req.Key] = req.Value
	f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_KV, KvNamespace: req.Namespace, KvKey: req.Key})
	return &pb.CommandResult{Flag: !exists}
}

func applyKVDelete(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var req pb.KVDeleteRequest
	if err := decode(body, &req); err != nil {
		return errResult(err)
	}
	ns := f.kv[req.Namespace]
	var keys []string
	if req.Prefix {
		for k := range ns {
			if strings.HasPrefix(k, req.Key) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys) // events in a deterministic order
	} else if _, ok := ns[req.Key]; ok {
		keys = []string{req.Key}
	}
	for _, k := range keys {
		delete(ns, k)
		f.events.add(&pb.Event{Index: c.index, Kind: pb.EventKind_EVENT_KV, KvNamespace: req.Namespace, KvKey: k, Deleted: true})
	}
	if len(ns) == 0 {
		delete(f.kv, req.Namespace)
	}
	return &pb.CommandResult{Count: uint64(len(keys))}
}

// ---- reads ------------------------------------------------------------------

// AppliedIndex is the index of the last applied entry.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Changed returns a channel closed at the next Apply or Restore, and the
// index applied when it was handed out.
func (f *FSM) Changed() (<-chan struct{}, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed, f.index
}

// Cluster returns the cluster identity, or nil before bootstrap finished.
func (f *FSM) Cluster() *pb.ClusterInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cluster
}

// Heads lists the registered heads by ID.
func (f *FSM) Heads() []*pb.HeadInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.heads, func(h *pb.HeadInfo) string { return h.Id })
}

// Head returns one head, or nil.
func (f *FSM) Head(id string) *pb.HeadInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.heads[id]
}

// Nodes lists nodes by ID. The messages are shared: clone before changing.
func (f *FSM) Nodes() []*pb.NodeInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.nodes, func(n *pb.NodeInfo) string { return n.NodeId })
}

// Node returns one node, or nil.
func (f *FSM) Node(id string) *pb.NodeInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.nodes[id]
}

// Jobs lists jobs by ID.
func (f *FSM) Jobs() []*pb.JobInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.jobs, func(j *pb.JobInfo) string { return j.JobId })
}

// KVGet returns a key's value; the slice must not be modified.
func (f *FSM) KVGet(namespace, key string) ([]byte, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.kv[namespace][key]
	if !ok {
		return nil, f.index, rpcerr.Wrapf(ErrKeyNotFound, "%q in namespace %q", key, namespace)
	}
	return v, f.index, nil
}

// KVList lists the keys of a namespace that start with prefix, sorted.
func (f *FSM) KVList(namespace, prefix string) ([]string, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var keys []string
	for k := range f.kv[namespace] {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, f.index
}

// EventsSince returns the changes after index from of the wanted kinds, or
// ok=false when they are older than this head remembers.
func (f *FSM) EventsSince(from uint64, want func(pb.EventKind) bool) (events []*pb.Event, index uint64, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	events, ok = f.events.since(from, want)
	return events, f.index, ok
}

func sortedValues[T any](m map[string]T, key func(T) string) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return out
}

// KVNamespaces lists the namespaces that hold keys, sorted.
func (f *FSM) KVNamespaces() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]string, 0, len(f.kv))
	for ns := range f.kv {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}
