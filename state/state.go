// Package state is manta's State API for Go programs and the CLI: lists,
// gets and summaries of the cluster's tasks, actors, objects, nodes, jobs,
// workers and placement groups, in the row shapes of Ray's State API
// (python/ray/util/state/common.py), filtered by k=v / k!=v conditions.
//
// Tasks come from the leader's task event buffer, filtered and paged there;
// actors, nodes and jobs from the control plane's tables; workers and
// objects from every alive raylet (a raylet that does not answer makes the
// list partial, and the list says so).
package state

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/statefilter"
	"github.com/manta-ray/manta/controlplane/taskevents"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

// Kinds a listing can name.
const (
	Tasks           = "tasks"
	Actors          = "actors"
	Objects         = "objects"
	Nodes           = "nodes"
	Jobs            = "jobs"
	Workers         = "workers"
	PlacementGroups = "placement_groups"
)

// Kinds is every listable kind.
var Kinds = []string{Tasks, Actors, Objects, Nodes, Jobs, Workers, PlacementGroups}

// DefaultLimit and MaxLimit are Ray's: 100 rows unless asked, never more
// than 10000 in one reply (use the page token, or filters, for more).
const (
	DefaultLimit = taskevents.DefaultLimit
	MaxLimit     = taskevents.DefaultMaxLimit
)

var (
	ErrNotFound    = rpcerr.New(codes.NotFound, "STATE_NOT_FOUND", "not found")
	ErrUnknownKind = rpcerr.New(codes.InvalidArgument, "STATE_UNKNOWN_KIND", "unknown resource kind")
)

// Row is one listed item: Ray's column names to values.
type Row map[string]any

// List is one page of a listing.
type List struct {
	Kind string
	Rows []Row
	// Total is how many items the source holds; NumFiltered how many pass
	// the filters (Rows holds at most Limit of them).
	Total, NumFiltered int
	Limit              int
	// NextPageToken continues a task listing; empty on the last page.
	NextPageToken string
	// NumDropped counts task attempts dropped by bounds (tasks only).
	NumDropped uint64
	// Warnings say why the list may be incomplete; Partial is set when a
	// source did not answer or dropped data.
	Warnings []string
	Partial  bool
}

// Options shape a listing.
type Options struct {
	Filters   []*pb.StateFilter
	Limit     int
	Detail    bool
	PageToken string
}

// Option sets an option.
type Option func(*Options) error

// WithFilter adds a "key=value" or "key!=value" condition.
func WithFilter(f string) Option {
	return func(o *Options) error {
		pf, err := statefilter.Parse(f)
		if err != nil {
			return err
		}
		o.Filters = append(o.Filters, pf)
		return nil
	}
}

// WithFilters adds parsed conditions.
func WithFilters(fs ...*pb.StateFilter) Option {
	return func(o *Options) error { o.Filters = append(o.Filters, fs...); return nil }
}

// WithLimit returns at most n rows (capped at MaxLimit, and the list says
// so).
func WithLimit(n int) Option { return func(o *Options) error { o.Limit = n; return nil } }

// WithDetail adds the detail columns.
func WithDetail(d bool) Option { return func(o *Options) error { o.Detail = d; return nil } }

// WithPageToken continues a task listing.
func WithPageToken(t string) Option { return func(o *Options) error { o.PageToken = t; return nil } }

func options(opts []Option) (Options, error) {
	var o Options
	for _, f := range opts {
		if err := f(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// Schemas are the filterable columns of each kind but tasks (whose schema
// is the leader's, taskevents.Schema).
var Schemas = map[string]statefilter.Schema{
	Tasks: taskevents.Schema,
	Actors: {"actor_id": statefilter.String, "class_name": statefilter.String, "state": statefilter.String,
		"job_id": statefilter.String, "name": statefilter.String, "node_id": statefilter.String,
		"pid": statefilter.Int, "ray_namespace": statefilter.String, "is_detached": statefilter.Bool,
		"num_restarts": statefilter.Int},
	Nodes: {"node_id": statefilter.String, "node_ip": statefilter.String, "is_head_node": statefilter.Bool,
		"state": statefilter.String, "node_name": statefilter.String},
	Jobs: {"job_id": statefilter.String, "submission_id": statefilter.String, "status": statefilter.String,
		"type": statefilter.String, "entrypoint": statefilter.String},
	Workers: {"worker_id": statefilter.String, "is_alive": statefilter.Bool, "worker_type": statefilter.String,
		"node_id": statefilter.String, "ip": statefilter.String, "pid": statefilter.Int, "job_id": statefilter.String,
		"state": statefilter.String, "actor_id": statefilter.String},
	Objects: {"object_id": statefilter.String, "object_size": statefilter.Int, "reference_type": statefilter.String,
		"node_id": statefilter.String, "ip": statefilter.String, "job_id": statefilter.String, "owner_address": statefilter.String,
		"tier": statefilter.String, "primary": statefilter.Bool, "task_status": statefilter.String},
	PlacementGroups: {"placement_group_id": statefilter.String, "name": statefilter.String,
		"creator_job_id": statefilter.String, "state": statefilter.String, "strategy": statefilter.String,
		"is_detached": statefilter.Bool},
}

// NormalizeKind accepts "task", "tasks", "placement-groups" and the like.
func NormalizeKind(k string) (string, error) {
	k = strings.ReplaceAll(strings.ToLower(k), "-", "_")
	for _, v := range Kinds {
		if k == v || k+"s" == v {
			return v, nil
		}
	}
	return "", rpcerr.Wrapf(ErrUnknownKind, "%q (kinds: %s)", k, strings.Join(Kinds, ", "))
}

// ListKind lists any kind.
func ListKind(ctx context.Context, cl *cpclient.Client, kind string, opts ...Option) (*List, error) {
	kind, err := NormalizeKind(kind)
	if err != nil {
		return nil, err
	}
	o, err := options(opts)
	if err != nil {
		return nil, err
	}
	if kind == Tasks {
		return listTasks(ctx, cl, o)
	}
	if err := Schemas[kind].Check(o.Filters); err != nil {
		return nil, err
	}
	var rows []Row
	var warnings []string
	switch kind {
	case Actors:
		rows, err = actorRows(ctx, cl)
	case Nodes:
		rows, err = nodeRows(ctx, cl)
	case Jobs:
		rows, err = jobRows(ctx, cl)
	case Workers:
		rows, warnings, err = workerRows(ctx, cl)
	case Objects:
		rows, warnings, err = objectRows(ctx, cl)
	case PlacementGroups:
		rows, err = placementGroupRows(ctx, cl)
	}
	if err != nil {
		return nil, err
	}
	return page(kind, rows, o, warnings), nil
}

// page filters and limits rows listed whole from their source.
func page(kind string, rows []Row, o Options, warnings []string) *List {
	l := &List{Kind: kind, Total: len(rows), Warnings: warnings, Partial: len(warnings) > 0}
	limit := o.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	if limit > MaxLimit {
		l.Warnings = append(l.Warnings, fmt.Sprintf("limit %d capped at the maximum of %d", limit, MaxLimit))
		limit = MaxLimit
	}
	l.Limit = limit
	s := Schemas[kind]
	for _, r := range rows {
		if !s.Match(o.Filters, func(k string) any { return r[k] }) {
			continue
		}
		l.NumFiltered++
		if len(l.Rows) < limit {
			l.Rows = append(l.Rows, r)
		}
	}
	if !o.Detail {
		for i, r := range l.Rows {
			l.Rows[i] = brief(kind, r)
		}
	}
	return l
}

// ListTasks lists task attempts (one page; see List.NextPageToken).
func ListTasks(ctx context.Context, cl *cpclient.Client, opts ...Option) (*List, error) {
	return ListKind(ctx, cl, Tasks, opts...)
}

// ListActors lists actors.
func ListActors(ctx context.Context, cl *cpclient.Client, opts ...Option) (*List, error) {
	return ListKind(ctx, cl, Actors, opts...)
}

// ListObjects lists the objects in every alive node's store.
func ListObjects(ctx context.Context, cl *cpclient.Client, opts ...Option) (*List, error) {
	return ListKind(ctx, cl, Objects, opts...)
}

// ListNodes lists nodes.
func ListNodes(ctx context.Context, cl *cpclient.Client, opts ...Option) (*List, error) {
	return ListKind(ctx, cl, Nodes, opts...)
}

// ListJobs lists driver jobs and submitted jobs.
func ListJobs(ctx context.Context, cl *cpclient.Client, opts ...Option) (*List, error) {
	return ListKind(ctx, cl, Jobs, opts...)
}

// ListWorkers lists every alive node's worker processes.
func ListWorkers(ctx context.Context, cl *cpclient.Client, opts ...Option) (*List, error) {
	return ListKind(ctx, cl, Workers, opts...)
}

func listTasks(ctx context.Context, cl *cpclient.Client, o Options) (*List, error) {
	r, err := cl.ListTasks(ctx, &pb.ListTasksRequest{Filters: o.Filters, Limit: int32(o.Limit), PageToken: o.PageToken})
	if err != nil {
		return nil, err
	}
	l := &List{Kind: Tasks, Total: int(r.Total), NumFiltered: int(r.NumFiltered), Limit: int(r.Limit),
		NextPageToken: r.NextPageToken, NumDropped: r.NumDropped, Warnings: r.Warnings, Partial: r.NumDropped > 0}
	for _, t := range r.Tasks {
		row := TaskRow(t)
		if !o.Detail {
			row = brief(Tasks, row)
		}
		l.Rows = append(l.Rows, row)
	}
	return l, nil
}

// Get returns the rows of one item by ID: every attempt of a task, or the
// one actor, node or object (an object has a row per node holding it).
func Get(ctx context.Context, cl *cpclient.Client, kind, id string) ([]Row, error) {
	kind, err := NormalizeKind(kind)
	if err != nil {
		return nil, err
	}
	if kind == Tasks {
		r, err := cl.GetTask(ctx, id)
		if err != nil {
			return nil, err
		}
		rows := make([]Row, 0, len(r.Attempts))
		for _, t := range r.Attempts {
			rows = append(rows, TaskRow(t))
		}
		return rows, nil
	}
	idKey := map[string]string{Actors: "actor_id", Nodes: "node_id", Objects: "object_id", Workers: "worker_id",
		Jobs: "job_id", PlacementGroups: "placement_group_id"}[kind]
	l, err := ListKind(ctx, cl, kind, WithFilters(&pb.StateFilter{Key: idKey, Predicate: "=", Value: id}),
		WithDetail(true), WithLimit(MaxLimit))
	if err != nil {
		return nil, err
	}
	if len(l.Rows) == 0 {
		return nil, rpcerr.Wrapf(ErrNotFound, "no %s with %s %s", strings.TrimSuffix(kind, "s"), idKey, id)
	}
	return l.Rows, nil
}

// GetTask returns every attempt of a task.
func GetTask(ctx context.Context, cl *cpclient.Client, id string) ([]Row, error) {
	return Get(ctx, cl, Tasks, id)
}

// briefColumns are the columns shown without detail (Ray's non-detail
// fields, plus manta's own where Ray has none).
var briefColumns = map[string][]string{
	Tasks: {"task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type", "func_or_class_name",
		"parent_task_id", "node_id", "worker_id", "worker_pid", "error_type", "error_message"},
	Actors: {"actor_id", "class_name", "state", "job_id", "name", "node_id", "pid", "ray_namespace", "num_restarts",
		"pending_reason", "death_cause"},
	Nodes:   {"node_id", "node_ip", "is_head_node", "state", "state_message", "node_name", "resources_total", "labels"},
	Workers: {"worker_id", "is_alive", "worker_type", "exit_type", "node_id", "ip", "pid", "job_id", "state", "actor_id"},
	Objects: {"object_id", "object_size", "task_status", "attempt_number", "reference_type", "call_site", "type", "pid", "ip",
		"node_id", "owner_address", "tier"},
	Jobs:            {"type", "job_id", "submission_id", "driver_info", "status", "entrypoint", "message", "error_type", "start_time", "end_time", "metadata", "runtime_env", "driver_agent_http_address", "driver_node_id", "driver_exit_code"},
	PlacementGroups: {"placement_group_id", "name", "creator_job_id", "state", "strategy", "reason"},
}

// Columns are the brief columns of a kind, in order.
func Columns(kind string) []string { return briefColumns[kind] }

func brief(kind string, r Row) Row {
	out := Row{}
	for _, c := range briefColumns[kind] {
		if v, ok := r[c]; ok {
			out[c] = v
		}
	}
	return out
}

func ms(unixNano int64) any {
	if unixNano == 0 {
		return nil
	}
	return unixNano / 1e6
}

// TaskRow is a task attempt in Ray's TaskState shape (with detail).
func TaskRow(t *pb.TaskEvent) Row {
	name := t.Name
	if name == "" {
		name = t.FuncOrClassName
	}
	r := Row{"task_id": hex.EncodeToString(t.TaskId), "attempt_number": t.Attempt, "name": name,
		"state": t.State.String(), "job_id": t.JobId, "actor_id": nilIfEmpty(t.ActorId), "type": t.Type.String(),
		"func_or_class_name": t.FuncOrClassName, "parent_task_id": hex.EncodeToString(t.ParentTaskId),
		"node_id": nilIfEmpty(t.NodeId), "worker_id": nilIfEmpty(t.WorkerId), "worker_pid": nilIfZero(t.WorkerPid),
		"error_type": nilIfEmpty(t.ErrorType), "language": "GO", "required_resources": t.RequiredResources,
		"error_message": nilIfEmpty(joinNonEmpty(t.ErrorMessage, t.Stack)), "call_site": nilIfEmpty(t.CallSite)}
	ts := t.StateUnixNano
	at := func(st pb.TaskEventState) int64 {
		if int(st) < len(ts) {
			return ts[st]
		}
		return 0
	}
	first := int64(0)
	var states []int
	for s, v := range ts {
		if v == 0 {
			continue
		}
		states = append(states, s)
		if first == 0 || v < first {
			first = v
		}
	}
	r["creation_time_ms"] = ms(first)
	r["start_time_ms"] = ms(at(pb.TaskEventState_RUNNING))
	end := at(pb.TaskEventState_FINISHED)
	for _, s := range []pb.TaskEventState{pb.TaskEventState_FAILED, pb.TaskEventState_CANCELED} {
		if v := at(s); v != 0 {
			end = v
		}
	}
	r["end_time_ms"] = ms(end)
	sort.SliceStable(states, func(i, j int) bool { return ts[states[i]] < ts[states[j]] })
	events := make([]map[string]any, 0, len(states))
	for _, s := range states {
		events = append(events, map[string]any{"state": pb.TaskEventState(s).String(), "created_ms": ts[s] / 1e6})
	}
	r["events"] = events
	return r
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n" + b
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nilIfZero(v int32) any {
	if v == 0 {
		return nil
	}
	return v
}

func actorRows(ctx context.Context, cl *cpclient.Client) ([]Row, error) {
	actors, err := cl.ListActors(ctx, "", false)
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, len(actors))
	for _, a := range actors {
		rows = append(rows, Row{"actor_id": a.ActorId, "class_name": a.ClassName, "state": a.State.String(),
			"job_id": a.JobId, "name": a.Name, "node_id": nilIfEmpty(a.NodeId), "pid": nil, "ray_namespace": a.Namespace,
			"required_resources": a.Resources, "death_cause": nilIfEmpty(a.DeathCause), "is_detached": a.Detached,
			"num_restarts": a.NumRestarts, "repr_name": "", "pending_reason": nilIfEmpty(a.PendingReason)})
	}
	return rows, nil
}

// placementGroupRows are groups in Ray's row shape: state PENDING,
// CREATED, RESCHEDULING, REMOVED or (manta's own) INFEASIBLE; bundles with
// their node and unit resources.
func placementGroupRows(ctx context.Context, cl *cpclient.Client) ([]Row, error) {
	groups, err := cl.ListPlacementGroups(ctx, false)
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, len(groups))
	for _, g := range groups {
		bundles := make([]map[string]any, 0, len(g.Bundles))
		for i, b := range g.Bundles {
			bundles = append(bundles, map[string]any{"bundle_id": fmt.Sprintf("%s_%d", g.PlacementGroupId, i),
				"node_id": nilIfEmpty(b.NodeId), "unit_resources": b.Resources})
		}
		rows = append(rows, Row{"placement_group_id": g.PlacementGroupId, "name": g.Name, "creator_job_id": g.JobId,
			"state": PlacementGroupState(g.State), "strategy": g.Strategy.String(), "bundles": bundles,
			"is_detached": g.Detached, "reason": nilIfEmpty(g.Reason), "ray_namespace": g.Namespace,
			"stats": map[string]any{"reschedules": g.Reschedules}})
	}
	return rows, nil
}

// PlacementGroupState names a group's state as Ray's State API does.
func PlacementGroupState(s pb.PlacementGroupState) string {
	return strings.TrimPrefix(s.String(), "PG_")
}

func host(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

func nodeRows(ctx context.Context, cl *cpclient.Client) ([]Row, error) {
	r, err := cl.ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, len(r.Nodes))
	for _, n := range r.Nodes {
		state := "ALIVE"
		if n.State == pb.NodeState_NODE_DEAD {
			state = "DEAD"
		}
		labels := n.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		rows = append(rows, Row{"node_id": n.NodeId, "node_ip": host(n.Address), "is_head_node": false, "state": state,
			"state_message": nilIfEmpty(n.DeathReason), "node_name": n.NodeId, "resources_total": n.Resources,
			"labels": labels, "start_time_ms": ms(n.RegisteredUnixNano), "end_time_ms": ms(n.DeadUnixNano)})
	}
	return rows, nil
}

func jobRows(ctx context.Context, cl *cpclient.Client) ([]Row, error) {
	jobs, err := cl.ListJobs(ctx, false)
	if err != nil {
		return nil, err
	}
	subs, err := cl.ListSubmissions(ctx, false)
	if err != nil {
		return nil, err
	}
	bySubmission := map[string]*pb.JobSubmission{}
	for _, s := range subs {
		if s.DriverJobId != "" {
			bySubmission[s.DriverJobId] = s
		}
	}
	jobStatus := map[pb.JobState]string{pb.JobState_JOB_RUNNING: "RUNNING", pb.JobState_JOB_SUCCEEDED: "SUCCEEDED",
		pb.JobState_JOB_FAILED: "FAILED", pb.JobState_JOB_STOPPED: "STOPPED"}
	var rows []Row
	for _, j := range jobs {
		r := Row{"type": "DRIVER", "job_id": j.JobId, "submission_id": nil, "driver_info": nil,
			"status": jobStatus[j.State], "entrypoint": j.Entrypoint, "message": j.Message, "error_type": nil,
			"start_time": ms(j.StartUnixNano), "end_time": ms(j.EndUnixNano), "metadata": j.Metadata,
			"runtime_env": nil, "driver_agent_http_address": nil, "driver_node_id": nil, "driver_exit_code": nil}
		if s := bySubmission[j.JobId]; s != nil {
			r["type"], r["submission_id"] = "SUBMISSION", s.SubmissionId
		}
		rows = append(rows, r)
	}
	subStatus := map[pb.JobSubmissionState]string{pb.JobSubmissionState_SUBMISSION_PENDING: "PENDING",
		pb.JobSubmissionState_SUBMISSION_RUNNING: "RUNNING", pb.JobSubmissionState_SUBMISSION_SUCCEEDED: "SUCCEEDED",
		pb.JobSubmissionState_SUBMISSION_FAILED: "FAILED", pb.JobSubmissionState_SUBMISSION_STOPPED: "STOPPED"}
	for _, s := range subs {
		if s.DriverJobId != "" {
			continue // listed with its driver job
		}
		rows = append(rows, Row{"type": "SUBMISSION", "job_id": nil, "submission_id": s.SubmissionId, "driver_info": nil,
			"status": subStatus[s.State], "entrypoint": s.Entrypoint, "message": s.Message, "error_type": nilIfEmpty(s.ErrorType),
			"start_time": ms(s.StartUnixNano), "end_time": ms(s.EndUnixNano), "metadata": s.Metadata,
			"runtime_env": nil, "driver_agent_http_address": nil, "driver_node_id": nilIfEmpty(s.NodeId), "driver_exit_code": nil})
	}
	return rows, nil
}

// fanOut calls fn on every alive node's raylet at once; nodes that fail
// become warnings.
func fanOut(ctx context.Context, cl *cpclient.Client, fn func(ctx context.Context, n *pb.NodeInfo, c rpb.RayletClient) ([]Row, error)) ([]Row, []string, error) {
	r, err := cl.ListNodes(ctx, &pb.ListNodesRequest{AliveOnly: true})
	if err != nil {
		return nil, nil, err
	}
	token := cl.Token()
	var mu sync.Mutex
	var rows []Row
	var warnings []string
	var wg sync.WaitGroup
	for _, n := range r.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := func() ([]Row, error) {
				cc, err := grpc.NewClient(n.Address, cl.TLS().DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead),
					grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
				if err != nil {
					return nil, err
				}
				defer cc.Close()
				return fn(ctx, n, rpb.NewRayletClient(cc))
			}()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("node %s (%s) did not answer: %v", n.NodeId, n.Address, rpcerr.FromStatus(err)))
				return
			}
			rows = append(rows, got...)
		}()
	}
	wg.Wait()
	sort.Strings(warnings)
	return rows, warnings, nil
}

func workerRows(ctx context.Context, cl *cpclient.Client) ([]Row, []string, error) {
	rows, warnings, err := fanOut(ctx, cl, func(ctx context.Context, n *pb.NodeInfo, c rpb.RayletClient) ([]Row, error) {
		r, err := c.ListWorkers(ctx, &rpb.ListWorkersRequest{})
		if err != nil {
			return nil, err
		}
		var rows []Row
		for _, w := range r.Workers {
			rows = append(rows, Row{"worker_id": w.WorkerId, "is_alive": true, "worker_type": "WORKER", "exit_type": nil,
				"node_id": n.NodeId, "ip": host(n.Address), "pid": w.Pid, "job_id": w.JobId, "state": w.State,
				"actor_id": nilIfEmpty(w.ActorId), "start_time_ms": ms(w.StartUnixNano)})
		}
		return rows, nil
	})
	sort.Slice(rows, func(i, j int) bool { return fmt.Sprint(rows[i]["worker_id"]) < fmt.Sprint(rows[j]["worker_id"]) })
	return rows, warnings, err
}

func objectRows(ctx context.Context, cl *cpclient.Client) ([]Row, []string, error) {
	rows, warnings, err := fanOut(ctx, cl, func(ctx context.Context, n *pb.NodeInfo, c rpb.RayletClient) ([]Row, error) {
		r, err := c.ListObjects(ctx, &rpb.ListObjectsRequest{})
		if err != nil {
			return nil, err
		}
		var rows []Row
		for _, o := range r.Objects {
			ref := "LOCAL_REFERENCE"
			if o.Pins > 0 || o.Primary {
				ref = "PINNED_IN_MEMORY"
			}
			rows = append(rows, Row{"object_id": hex.EncodeToString(o.ObjectId), "object_size": o.Size,
				"task_status": "FINISHED", "attempt_number": 0, "reference_type": ref, "call_site": "disabled",
				"type": "WORKER", "pid": 0, "ip": host(n.Address), "node_id": n.NodeId, "owner_address": o.OwnerAddress,
				"job_id": o.JobId, "tier": o.Tier, "primary": o.Primary, "pins": o.Pins, "adopted": o.Adopted})
		}
		return rows, nil
	})
	sort.Slice(rows, func(i, j int) bool { return fmt.Sprint(rows[i]["object_id"]) < fmt.Sprint(rows[j]["object_id"]) })
	return rows, warnings, err
}
