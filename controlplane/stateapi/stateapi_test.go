package stateapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/jobsapi"
	"github.com/manta-ray/manta/controlplane/stateapi"
	tc "github.com/manta-ray/manta/controlplane/testcluster"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

type envelope struct {
	Result bool   `json:"result"`
	Msg    string `json:"msg"`
	Data   struct {
		Result json.RawMessage `json:"result"`
	} `json:"data"`
}

// TestStateHTTP serves the State API on a follower head's HTTP port and
// checks Ray's shapes, the CANCELED→FAILED mapping, paging limits and
// bad input: 400 naming the field, 401 without the token.
func TestStateHTTP(t *testing.T) {
	c := tc.Start(t, 3, nil)
	ctx := tc.Ctx(t, 30*time.Second)
	follower := (c.WaitLeader() + 1) % 3
	cl := c.Client()
	api, err := jobsapi.New(jobsapi.Config{Addr: "127.0.0.1:0", Client: cl, Token: c.Token,
		Mount: []func(*http.ServeMux){stateapi.Register(pinnedClient(t, c, follower))}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	id := func(n byte) []byte { b := make([]byte, 16); b[15] = n; return b }
	if _, err := cl.ReportTaskEvents(ctx, &pb.ReportTaskEventsRequest{Events: []*pb.TaskEvent{
		{TaskId: id(1), FuncOrClassName: "f", Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState_FINISHED},
		{TaskId: id(2), FuncOrClassName: "f", Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState_CANCELED},
		{TaskId: id(3), FuncOrClassName: "g", Type: pb.TaskType_NORMAL_TASK, State: pb.TaskEventState_FAILED, ErrorMessage: "boom"},
	}}); err != nil {
		t.Fatal(err)
	}
	get := func(path string, q url.Values, token bool) (int, envelope) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+api.Address()+path+"?"+q.Encode(), nil)
		if token {
			req.Header.Set("Authorization", "Bearer "+c.Token())
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e envelope
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	code, e := get("/api/v0/tasks", url.Values{"limit": {"2"}, "filter_keys": {"state"}, "filter_predicates": {"="},
		"filter_values": {"FAILED"}, "detail": {"true"}}, true)
	var list struct {
		Total    int `json:"total"`
		Filtered int `json:"num_filtered"`
		Result   []map[string]any
	}
	if err := json.Unmarshal(e.Data.Result, &list); err != nil || code != 200 || !e.Result {
		t.Fatalf("list: %d %v %s", code, err, e.Data.Result)
	}
	if list.Total != 3 || list.Filtered != 2 || len(list.Result) != 2 {
		t.Fatalf("list: %s", e.Data.Result)
	}
	for _, r := range list.Result {
		if r["state"] != "FAILED" || (r["task_id"] == "00000000000000000000000000000002" && r["error_type"] != "TASK_CANCELLED") {
			t.Fatalf("row %v", r)
		}
		if _, extra := r["ray_state"]; extra {
			t.Fatalf("a key Ray's dataclass lacks: %v", r)
		}
	}
	code, e = get("/api/v0/tasks", url.Values{"filter_keys": {"colour"}, "filter_predicates": {"="}, "filter_values": {"red"}}, true)
	if code != 400 || e.Result || !strings.Contains(e.Msg, "colour") {
		t.Fatalf("bad filter: %d %+v", code, e)
	}
	code, e = get("/api/v0/actors", url.Values{"filter_keys": {"num_restarts"}, "filter_predicates": {"="}, "filter_values": {"x"}}, true)
	if code != 400 || !strings.Contains(e.Msg, "num_restarts") {
		t.Fatalf("bad actor filter: %d %+v", code, e)
	}
	if code, _ = get("/api/v0/tasks", nil, false); code != 401 {
		t.Fatalf("without the token: %d", code)
	}
	code, e = get("/api/v0/tasks/summarize", nil, true)
	if code != 200 || !strings.Contains(string(e.Data.Result), `"node_id_to_summary":{"cluster"`) ||
		!strings.Contains(string(e.Data.Result), `"total_tasks":3`) {
		t.Fatalf("summary: %d %s", code, e.Data.Result)
	}
	// A group no node can hold is listed, with why, in Ray's row shape.
	pgID, err := cl.CreatePlacementGroup(ctx, &pb.PlacementGroupInfo{JobId: "00000001", Name: "gang",
		Strategy: pb.PlacementStrategy_STRICT_SPREAD, Bundles: []*pb.Bundle{{Resources: map[string]float64{"CPU": 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	code, e = get("/api/v0/placement_groups", url.Values{"detail": {"true"}}, true)
	list.Result = nil
	if err := json.Unmarshal(e.Data.Result, &list); err != nil || code != 200 || len(list.Result) != 1 ||
		list.Result[0]["placement_group_id"] != pgID || list.Result[0]["name"] != "gang" {
		t.Fatalf("placement groups: %d %v %s", code, err, e.Data.Result)
	}
}

func pinnedClient(t *testing.T, c *tc.Cluster, i int) *cpclient.Client {
	cl, err := cpclient.New(cpclient.Config{Addresses: []string{c.Addresses()[i]}, Token: c.Token()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}
