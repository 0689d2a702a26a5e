// Package stateapi serves Ray's State API over HTTP (/api/v0/...) on the
// dashboard port, in the request parameters and JSON shapes Ray's own
// `ray list`, `ray get` and `ray summary` read (python/ray/util/state), so
// Ray's CLI works against a manta cluster. It is mounted on the Jobs API
// server (jobsapi.Config.Mount), behind the same token check.
package stateapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/state"
)

// rayFields are the columns of Ray's state dataclasses: Ray's client
// builds them with **row, so a row may carry no other key.
var rayFields = map[string][]string{
	state.Tasks: {"task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type", "func_or_class_name",
		"parent_task_id", "node_id", "worker_id", "worker_pid", "error_type", "language", "required_resources",
		"creation_time_ms", "start_time_ms", "end_time_ms", "error_message", "call_site", "events"},
	state.Actors: {"actor_id", "class_name", "state", "job_id", "name", "node_id", "pid", "ray_namespace",
		"required_resources", "death_cause", "is_detached", "num_restarts", "repr_name"},
	state.Nodes: {"node_id", "node_ip", "is_head_node", "state", "state_message", "node_name", "resources_total",
		"labels", "start_time_ms", "end_time_ms"},
	state.Workers: {"worker_id", "is_alive", "worker_type", "exit_type", "node_id", "ip", "pid", "start_time_ms"},
	state.Objects: {"object_id", "object_size", "task_status", "attempt_number", "reference_type", "call_site",
		"type", "pid", "ip"},
	state.Jobs: {"type", "job_id", "submission_id", "driver_info", "status", "entrypoint", "message", "error_type",
		"start_time", "end_time", "metadata", "runtime_env", "driver_agent_http_address", "driver_node_id", "driver_exit_code"},
	state.PlacementGroups: {"placement_group_id", "name", "creator_job_id", "state"},
}

// Register adds the State API's routes to mux; cl reaches the control
// plane.
func Register(cl *cpclient.Client) func(mux *http.ServeMux) {
	return func(mux *http.ServeMux) {
		for _, k := range state.Kinds {
			mux.HandleFunc("GET /api/v0/"+k, func(w http.ResponseWriter, r *http.Request) { list(w, r, cl, k) })
		}
		for _, k := range []string{state.Tasks, state.Actors, state.Objects} {
			mux.HandleFunc("GET /api/v0/"+k+"/summarize", func(w http.ResponseWriter, r *http.Request) { summarize(w, r, cl, k) })
		}
	}
}

// reply writes Ray's envelope: {"result": ok, "msg": ..., "data": {"result": ...}}.
func reply(w http.ResponseWriter, code int, msg string, result any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body := map[string]any{"result": code == http.StatusOK, "msg": msg, "data": map[string]any{}}
	if result != nil {
		body["data"] = map[string]any{"result": result}
	}
	json.NewEncoder(w).Encode(body)
}

func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, rpcerr.ErrInvalidArgument):
		code = http.StatusBadRequest
	case errors.Is(err, rpcerr.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, rpcerr.ErrUnavailable):
		code = http.StatusServiceUnavailable
	}
	reply(w, code, err.Error(), nil)
}

func options(r *http.Request, tasks bool) ([]state.Option, error) {
	q := r.URL.Query()
	var opts []state.Option
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, rpcerr.Wrapf(rpcerr.ErrInvalidArgument, "limit %q is not a count", v)
		}
		opts = append(opts, state.WithLimit(n))
	}
	if v := q.Get("detail"); v != "" {
		d, _ := strconv.ParseBool(v)
		opts = append(opts, state.WithDetail(d))
	}
	keys, preds, vals := q["filter_keys"], q["filter_predicates"], q["filter_values"]
	if len(keys) != len(preds) || len(keys) != len(vals) {
		return nil, rpcerr.Wrapf(rpcerr.ErrInvalidArgument, "filter_keys, filter_predicates and filter_values must have the same length")
	}
	var fs []*pb.StateFilter
	for i := range keys {
		k := keys[i]
		if k == "state" && tasks {
			// Ray's clients know no CANCELED: filter on the state as they
			// see it.
			k = "ray_state"
		}
		fs = append(fs, &pb.StateFilter{Key: k, Predicate: preds[i], Value: vals[i]})
	}
	return append(opts, state.WithFilters(fs...)), nil
}

func rayRow(kind string, row state.Row) map[string]any {
	out := map[string]any{}
	for _, f := range rayFields[kind] {
		if v, ok := row[f]; ok {
			out[f] = v
		}
	}
	if kind == state.Tasks && out["state"] == pb.TaskEventState_CANCELED.String() {
		// Ray has no cancelled state: a cancelled task is FAILED with
		// TASK_CANCELLED.
		out["state"], out["error_type"] = "FAILED", "TASK_CANCELLED"
	}
	return out
}

func list(w http.ResponseWriter, r *http.Request, cl *cpclient.Client, kind string) {
	opts, err := options(r, kind == state.Tasks)
	if err != nil {
		fail(w, err)
		return
	}
	l, err := state.ListKind(r.Context(), cl, kind, opts...)
	if err != nil {
		fail(w, err)
		return
	}
	rows := make([]map[string]any, 0, len(l.Rows))
	for _, row := range l.Rows {
		rows = append(rows, rayRow(kind, row))
	}
	// Ray's ListApiResponse. Rows are never truncated at the source, so
	// num_after_truncation is the total; what bounds dropped is a warning.
	res := map[string]any{"total": l.Total, "num_after_truncation": l.Total, "num_filtered": l.NumFiltered,
		"result": rows, "partial_failure_warning": nil, "warnings": nil}
	if len(l.Warnings) > 0 {
		res["warnings"] = l.Warnings
	}
	if l.Partial && kind != state.Tasks {
		res["partial_failure_warning"] = l.Warnings[0]
	}
	reply(w, http.StatusOK, "", res)
}

func summarize(w http.ResponseWriter, r *http.Request, cl *cpclient.Client, kind string) {
	opts, err := options(r, kind == state.Tasks)
	if err != nil {
		fail(w, err)
		return
	}
	s, err := state.Summarize(r.Context(), cl, kind, opts...)
	if err != nil {
		fail(w, err)
		return
	}
	summary := map[string]any{}
	for _, k := range s.Keys {
		summary[k] = s.Groups[k]
	}
	cluster := map[string]any{"summary": summary, "summary_by": s.SummaryBy}
	for k, v := range s.Stats {
		cluster[k] = v
	}
	var warnings any
	if len(s.Warnings) > 0 {
		warnings = s.Warnings
	}
	// Ray's SummaryApiResponse around a StateSummary.
	n := len(s.Keys)
	res := map[string]any{
		"total":                   n,
		"num_after_truncation":    n,
		"num_filtered":            n,
		"result":                  map[string]any{"node_id_to_summary": map[string]any{"cluster": cluster}},
		"partial_failure_warning": nil,
		"warnings":                warnings,
	}
	reply(w, http.StatusOK, "", res)
}
