package dashboard

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// The JSON the pages read from this package (not Ray's shapes: Ray has no
// Raft heads, and its own dashboard's private endpoints are not a
// contract anyone relies on).

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg))
}

// fail maps a control-plane error to its HTTP status.
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch rpcerr.Code(err) {
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.FailedPrecondition:
		code = http.StatusConflict
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.Unavailable, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	}
	httpError(w, code, err.Error())
}

func callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

// ---- heads ------------------------------------------------------------------

func (d *Dashboard) serveHeads(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, d.heads(r.Context()))
}

// ---- nodes ------------------------------------------------------------------

// nodeView is a node with what it uses: resources from the leader's
// heartbeats, the object store and workers from the node's raylet.
type nodeView struct {
	ID            string             `json:"node_id"`
	Address       string             `json:"address"`
	State         string             `json:"state"`
	Labels        map[string]string  `json:"labels,omitempty"`
	Total         map[string]float64 `json:"resources_total"`
	Available     map[string]float64 `json:"resources_available,omitempty"`
	LastHeartbeat int64              `json:"last_heartbeat_ms,omitempty"`
	Registered    int64              `json:"registered_ms,omitempty"`
	DeathReason   string             `json:"death_reason,omitempty"`

	Workers        int32  `json:"workers"`
	LeasedWorkers  int32  `json:"leased_workers"`
	QueuedLeases   int32  `json:"queued_leases"`
	Objects        int64  `json:"objects"`
	StoreCapacity  int64  `json:"object_store_capacity"`
	StoreAllocated int64  `json:"object_store_allocated"`
	SpilledBytes   int64  `json:"spilled_bytes"`
	RayletError    string `json:"raylet_error,omitempty"`
}

type nodesView struct {
	Nodes []nodeView `json:"nodes"`
	// Stale: no leader answered, so no free resources or heartbeats
	// (soft state the leader alone keeps).
	Stale bool  `json:"stale,omitempty"`
	At    int64 `json:"at_ms"`
}

// nodeCache keeps the last nodes view for a second: every open page asks
// after each change, and each answer costs a call to every raylet.
type nodeCache struct {
	mu   sync.Mutex
	at   time.Time
	view nodesView
}

func (d *Dashboard) serveNodes(w http.ResponseWriter, r *http.Request) {
	v, err := d.nodesView(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, v)
}

func (d *Dashboard) nodesView(ctx context.Context) (nodesView, error) {
	// The answer is shared by every page for a second: one page going
	// away must not cut it short.
	ctx = d.ctx
	d.nodes.mu.Lock()
	defer d.nodes.mu.Unlock()
	if time.Since(d.nodes.at) < time.Second {
		return d.nodes.view, nil
	}
	v := nodesView{Nodes: []nodeView{}}
	// From the leader (with heartbeats) when there is one; a follower
	// without a leader still shows what it has.
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	resp, err := d.cfg.Client.ListNodes(lctx, &pb.ListNodesRequest{})
	cancel()
	if err != nil {
		v.Stale = true
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err = d.cfg.Client.ListNodes(sctx, &pb.ListNodesRequest{Stale: true})
		cancel()
		if err != nil {
			return v, err
		}
	}
	for _, n := range resp.Nodes {
		nv := nodeView{ID: n.NodeId, Address: n.Address, State: "DEAD", Labels: n.Labels, Total: n.Resources,
			DeathReason: n.DeathReason, Registered: n.RegisteredUnixNano / 1e6}
		if n.State == pb.NodeState_NODE_ALIVE {
			nv.State = "ALIVE"
		}
		if !v.Stale {
			nv.Available = n.Available
			nv.LastHeartbeat = n.LastHeartbeatUnixNano / 1e6
		}
		v.Nodes = append(v.Nodes, nv)
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	var wg sync.WaitGroup
	token := d.cfg.Token()
	for i := range v.Nodes {
		n := &v.Nodes[i]
		if n.State != "ALIVE" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			st, err := raylet.Status(rctx, n.Address, token, d.cfg.Client.TLS().DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead))
			if err != nil {
				n.RayletError = err.Error()
				return
			}
			n.fromRaylet(st)
		}()
	}
	wg.Wait()
	v.At = time.Now().UnixMilli()
	d.nodes.at, d.nodes.view = time.Now(), v
	return v, nil
}

func (n *nodeView) fromRaylet(st *rpb.GetStatusReply) {
	n.Workers, n.LeasedWorkers, n.QueuedLeases = st.Workers, st.LeasedWorkers, st.QueuedLeases
	n.Objects, n.StoreCapacity, n.StoreAllocated, n.SpilledBytes = st.Objects, st.ObjectStoreCapacity, st.ObjectStoreAllocated, st.SpilledBytes
	if n.Available == nil && len(st.Available) > 0 {
		// No leader: the raylet knows its own free resources.
		n.Available = st.Available
	}
}

// ---- actors -------------------------------------------------------------------

type actorView struct {
	ID          string             `json:"actor_id"`
	Class       string             `json:"class_name"`
	Name        string             `json:"name"`
	Namespace   string             `json:"ray_namespace"`
	State       string             `json:"state"`
	JobID       string             `json:"job_id"`
	NodeID      string             `json:"node_id"`
	WorkerID    string             `json:"worker_id"`
	Restarts    int32              `json:"num_restarts"`
	MaxRestarts int32              `json:"max_restarts"`
	Resources   map[string]float64 `json:"required_resources"`
	DeathCause  string             `json:"death_cause,omitempty"`
	Pending     string             `json:"pending_reason,omitempty"`
	Detached    bool               `json:"is_detached"`
	Created     int64              `json:"created_ms"`
}

func (d *Dashboard) serveActors(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := callCtx(r)
	defer cancel()
	// Stale: this head's own replica, which the page's events come from.
	actors, err := d.cfg.Client.ListActors(ctx, r.URL.Query().Get("job_id"), true)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]actorView, 0, len(actors))
	for _, a := range actors {
		out = append(out, actorView{ID: a.ActorId, Class: a.ClassName, Name: a.Name, Namespace: a.Namespace,
			State: a.State.String(), JobID: a.JobId, NodeID: a.NodeId, WorkerID: a.WorkerId,
			Restarts: a.NumRestarts, MaxRestarts: a.MaxRestarts, Resources: a.Resources, DeathCause: a.DeathCause,
			Pending: a.PendingReason, Detached: a.Detached, Created: a.CreatedUnixNano / 1e6})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created > out[j].Created })
	writeJSON(w, out)
}

// ---- jobs -------------------------------------------------------------------------

type jobView struct {
	ID         string            `json:"job_id"`
	State      string            `json:"status"`
	Driver     string            `json:"driver_address"`
	Entrypoint string            `json:"entrypoint"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	Start      int64             `json:"start_time_ms"`
	End        int64             `json:"end_time_ms,omitempty"`
	Message    string            `json:"message,omitempty"`
}

// serveJobs lists driver jobs (ray.Init); submitted jobs come from the
// Jobs API (/api/jobs/).
func (d *Dashboard) serveJobs(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := callCtx(r)
	defer cancel()
	jobs, err := d.cfg.Client.ListJobs(ctx, true)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]jobView, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, jobView{ID: j.JobId, State: strings.TrimPrefix(j.State.String(), "JOB_"), Driver: j.DriverAddress,
			Entrypoint: j.Entrypoint, Metadata: j.Metadata, Start: j.StartUnixNano / 1e6, End: j.EndUnixNano / 1e6,
			Message: j.Message})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start > out[j].Start })
	writeJSON(w, out)
}

// ---- lineage ----------------------------------------------------------------------

// recordView is a task's lineage record: its latest attempt.
type recordView struct {
	TaskID    string             `json:"task_id"`
	JobID     string             `json:"job_id"`
	Function  string             `json:"function"`
	State     string             `json:"state"`
	NodeID    string             `json:"node_id"`
	Attempts  int32              `json:"attempts"`
	MaxRetry  int32              `json:"max_retries"`
	Error     string             `json:"last_error,omitempty"`
	Resources map[string]float64 `json:"resources"`
	Submitted int64              `json:"submitted_ms"`
	Finished  int64              `json:"finished_ms,omitempty"`
	Returns   []string           `json:"returns"`
	ArgRefs   []string           `json:"arg_refs"`
	ArgValues int                `json:"arg_values"`
	Owner     string             `json:"owner_address"`
}

func viewRecord(r *pb.TaskRecord) recordView {
	v := recordView{TaskID: hex.EncodeToString(r.TaskId), JobID: r.JobId, Function: r.Function,
		State: strings.TrimPrefix(r.State.String(), "TASK_"), NodeID: r.NodeId, Attempts: r.Attempts,
		MaxRetry: r.MaxRetries, Error: r.LastError, Resources: r.Resources, Submitted: r.SubmittedUnixNano / 1e6,
		Finished: r.FinishedUnixNano / 1e6, Returns: []string{}, ArgRefs: []string{}, Owner: r.OwnerAddress}
	if t, err := ids.TaskFromBytes(r.TaskId); err == nil {
		for i := int32(1); i <= r.NumReturns; i++ {
			v.Returns = append(v.Returns, ids.ReturnID(t, uint32(i)).String())
		}
	}
	for _, a := range r.Args {
		if len(a.ObjectId) > 0 {
			v.ArgRefs = append(v.ArgRefs, hex.EncodeToString(a.ObjectId))
		} else {
			v.ArgValues++
		}
	}
	return v
}

func (d *Dashboard) serveTaskRecord(w http.ResponseWriter, r *http.Request) {
	b, err := hex.DecodeString(r.PathValue("id"))
	var t ids.TaskID
	if err == nil {
		t, err = ids.TaskFromBytes(b)
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, "task_id: want 32 hex digits")
		return
	}
	ctx, cancel := callCtx(r)
	defer cancel()
	rec, err := d.cfg.Client.GetLineageTask(ctx, t, true)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, viewRecord(rec))
}

// lineageView is an object's lineage drawn as SVG, with its records.
type lineageView struct {
	ObjectID string       `json:"object_id"`
	SVG      string       `json:"svg"`
	Records  []recordView `json:"records"`
	Evicted  []string     `json:"evicted_task_ids"`
	Missing  []string     `json:"missing_task_ids"`
}

func (d *Dashboard) serveLineage(w http.ResponseWriter, r *http.Request) {
	b, err := hex.DecodeString(r.PathValue("id"))
	var o ids.ObjectID
	if err == nil {
		o, err = ids.ObjectFromBytes(b)
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, "object_id: want 40 hex digits")
		return
	}
	ctx, cancel := callCtx(r)
	defer cancel()
	resp, err := d.cfg.Client.GetLineage(ctx, o, 0, true)
	if err != nil {
		if rpcerr.Code(err) == codes.FailedPrecondition {
			httpError(w, http.StatusConflict, "object "+o.String()+" was made by Put: it has no lineage")
			return
		}
		fail(w, err)
		return
	}
	g := buildGraph(o, resp)
	v := lineageView{ObjectID: o.String(), SVG: g.svg(), Records: []recordView{}, Evicted: []string{}, Missing: []string{}}
	for _, rec := range resp.Records {
		v.Records = append(v.Records, viewRecord(rec))
	}
	for _, t := range resp.EvictedTaskIds {
		v.Evicted = append(v.Evicted, hex.EncodeToString(t))
	}
	for _, t := range resp.MissingTaskIds {
		v.Missing = append(v.Missing, hex.EncodeToString(t))
	}
	writeJSON(w, v)
}
