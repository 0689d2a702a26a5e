package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/dashboard"
	"github.com/manta-ray/manta/controlplane/jobsapi"
	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/raylet"
)

type env struct {
	t     testing.TB
	tc    *testcluster.Cluster
	base  string
	token string
	self  string // the head serving the dashboard
}

// start runs three heads, a raylet, and the dashboard on the Jobs API's
// server in front of a follower, as cmd/manta wires it.
func start(t testing.TB) *env {
	tc := testcluster.Start(t, 3, nil)
	follower := tc.Addresses()[(tc.WaitLeader()+1)%3]
	cl, err := cpclient.New(cpclient.Config{Addresses: []string{follower}, Token: tc.Token()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	r, err := raylet.New(raylet.Config{NodeID: "n1", Heads: tc.Addresses(), Token: tc.Token(), DataDir: t.TempDir(),
		PrestartWorkers: -1, Resources: map[string]float64{"CPU": 2}, ObjectStoreMemory: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	d := dashboard.New(dashboard.Config{Client: cl, Token: tc.Token, StatusInterval: 100 * time.Millisecond})
	t.Cleanup(func() { d.Close() })
	api, err := jobsapi.New(jobsapi.Config{Addr: "127.0.0.1:0", Client: cl, Token: tc.Token,
		Mount: []func(*http.ServeMux){d.Register}, Public: []string{dashboard.StaticPrefix}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return &env{t: t, tc: tc, base: "http://" + api.Address(), token: tc.Token(), self: follower}
}

func (e *env) get(path string, out any) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type headsView struct {
	Heads []struct {
		ID    string  `json:"id"`
		Role  string  `json:"role"`
		Term  uint64  `json:"term"`
		Lag   *uint64 `json:"lag"`
		Self  bool    `json:"self"`
		Error string  `json:"error"`
		Vote  string  `json:"suffrage"`
	} `json:"heads"`
	Leader string `json:"leader"`
	Self   string `json:"self"`
}

func TestPagesAndViews(t *testing.T) {
	e := start(t)
	// Every page renders, with the nav and its own script hook.
	for _, p := range []string{"/", "/nodes", "/actors", "/tasks", "/tasks/00112233445566778899aabbccddeeff", "/objects",
		"/workers", "/jobs", "/jobs/x", "/placement-groups", "/lineage?object=00"} {
		code, body := e.get(p, nil)
		if code != 200 || !strings.Contains(body, `<script src="/static/app.js"`) || !strings.Contains(body, `href="/placement-groups"`) {
			t.Errorf("page %s: %d\n%.300s", p, code, body)
		}
	}
	// Assets need no token (the login page uses them).
	for _, a := range []string{"/static/app.js", "/static/style.css"} {
		resp, err := http.Get(e.base + a)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("asset %s without a token: %v %v", a, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	// Pages without a token are not served.
	resp, err := http.Get(e.base + "/nodes")
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a page without a token: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	// Heads: every head's Raft state, the leader's lag 0, this head marked.
	var hv headsView
	eventually(t, 10*time.Second, "three heads answering", func() bool {
		hv = headsView{}
		e.get("/api/manta/heads", &hv)
		n := 0
		for _, h := range hv.Heads {
			if h.Error == "" && h.Lag != nil {
				n++
			}
		}
		return n == 3 && hv.Leader != ""
	})
	leaders := 0
	for _, h := range hv.Heads {
		if h.Role == "Leader" {
			leaders++
			if *h.Lag != 0 || h.ID != hv.Leader {
				t.Errorf("leader %+v: lag %d", h, *h.Lag)
			}
		}
		if h.Term == 0 || h.Vote != "Voter" {
			t.Errorf("head %s: term %d, suffrage %q; want a term and Voter", h.ID, h.Term, h.Vote)
		}
	}
	if leaders != 1 || hv.Self == "" || hv.Self == hv.Leader {
		t.Fatalf("heads view %+v: want one leader and this follower marked self", hv)
	}

	// Nodes: the raylet with its CPUs and object store.
	var nv struct {
		Nodes []struct {
			ID       string             `json:"node_id"`
			State    string             `json:"state"`
			Total    map[string]float64 `json:"resources_total"`
			Avail    map[string]float64 `json:"resources_available"`
			Capacity int64              `json:"object_store_capacity"`
		} `json:"nodes"`
	}
	eventually(t, 10*time.Second, "node n1 with its store", func() bool {
		nv.Nodes = nil
		e.get("/api/manta/nodes", &nv)
		return len(nv.Nodes) == 1 && nv.Nodes[0].Capacity > 0 && nv.Nodes[0].Avail != nil
	})
	if n := nv.Nodes[0]; n.ID != "n1" || n.State != "ALIVE" || n.Total["CPU"] != 2 {
		t.Fatalf("node %+v", n)
	}
}

// TestEventsFollowTheWatch: an open event stream gets a change frame for
// a write, from the follower serving it, and a heads frame.
func TestEventsFollowTheWatch(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/api/manta/events", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	frames := make(chan [2]string, 64)
	go func() {
		defer close(frames)
		sc := bufio.NewScanner(resp.Body)
		var ev string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				select {
				case frames <- [2]string{ev, strings.TrimPrefix(line, "data: ")}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	type change struct {
		Index  uint64   `json:"index"`
		Events uint64   `json:"events"`
		Kinds  []string `json:"kinds"`
	}
	next := func(want string) string {
		t.Helper()
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					t.Fatalf("the stream ended waiting for %s", want)
				}
				if f[0] == want {
					return f[1]
				}
			case <-ctx.Done():
				t.Fatalf("no %s frame", want)
			}
		}
	}
	var first change
	json.Unmarshal([]byte(next("change")), &first)
	cl := e.tc.Client()
	idx, err := cl.Put(ctx, "dash", "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		var c change
		if err := json.Unmarshal([]byte(next("change")), &c); err != nil {
			t.Fatal(err)
		}
		if c.Index >= idx {
			if c.Events <= first.Events || !strings.Contains(strings.Join(c.Kinds, ","), "kv") {
				t.Fatalf("change after the put: %+v (first %+v)", c, first)
			}
			break
		}
	}
	// Heads frames keep coming; the heads table fills in as heads register.
	for {
		var hv headsView
		if err := json.Unmarshal([]byte(next("heads")), &hv); err != nil {
			t.Fatalf("heads frame: %v", err)
		}
		if len(hv.Heads) == 3 && hv.Self != "" {
			break
		}
	}
}

// TestLineageGraph: a recorded chain is drawn with every task, and bad
// or unknown IDs are 400 and 404.
func TestLineageGraph(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	a := ids.NewTaskID("job1", ids.TaskID{}, 1)
	b := ids.NewTaskID("job1", ids.TaskID{}, 2)
	oa := ids.ReturnID(a, 1)
	_, err := e.tc.Client().RecordLineage(ctx, &pb.RecordLineageRequest{Records: []*pb.TaskRecord{
		{TaskId: a[:], JobId: "job1", Function: "stage.one", NumReturns: 1, OwnerAddress: "x:1", Args: []*pb.LineageArg{{Value: []byte{1}}}},
		{TaskId: b[:], JobId: "job1", Function: "stage.two<script>", NumReturns: 1, OwnerAddress: "x:1", Args: []*pb.LineageArg{{ObjectId: oa[:], OwnerAddress: "x:1"}}},
	}, Updates: []*pb.TaskUpdate{{TaskId: b[:], Attempt: 1, State: pb.TaskState_TASK_FAILED, NodeId: "n1", Error: "panic: boom"}}})
	if err != nil {
		t.Fatal(err)
	}
	var lv struct {
		SVG     string `json:"svg"`
		Records []struct {
			Function string   `json:"function"`
			State    string   `json:"state"`
			ArgRefs  []string `json:"arg_refs"`
		} `json:"records"`
	}
	root := ids.ReturnID(b, 1)
	eventually(t, 10*time.Second, "the follower to have the records", func() bool {
		code, _ := e.get("/api/manta/lineage/"+root.String(), &lv)
		return code == 200 && len(lv.Records) == 2
	})
	for _, want := range []string{"stage.one", "stage.two&lt;script&gt;", `href="/tasks/` + a.String() + `"`, `class="gnode task failed"`, `class="gnode obj root"`} {
		if !strings.Contains(lv.SVG, want) {
			t.Errorf("svg lacks %q:\n%s", want, lv.SVG)
		}
	}
	if strings.Contains(lv.SVG, "<script>") {
		t.Fatal("a function name went into the SVG unescaped")
	}
	if n := strings.Count(lv.SVG, `class="edge"`); n != 3 {
		t.Errorf("%d edges; want 3 (a -> oa -> b -> root)", n)
	}
	var rec struct {
		Function string `json:"function"`
		State    string `json:"state"`
		Error    string `json:"last_error"`
		NodeID   string `json:"node_id"`
	}
	if code, body := e.get("/api/manta/tasks/"+b.String(), &rec); code != 200 || rec.State != "FAILED" || rec.Error != "panic: boom" || rec.NodeID != "n1" {
		t.Fatalf("task record: %d %s", code, body)
	}
	if code, _ := e.get("/api/manta/lineage/zz", nil); code != 400 {
		t.Errorf("bad object id: %d; want 400", code)
	}
	unknown := ids.ReturnID(ids.NewTaskID("job1", ids.TaskID{}, 99), 1)
	if code, _ := e.get("/api/manta/lineage/"+unknown.String(), nil); code != 404 {
		t.Errorf("unknown object: %d; want 404", code)
	}
	if code, _ := e.get("/api/manta/tasks/abc", nil); code != 400 {
		t.Errorf("bad task id: %d; want 400", code)
	}
}

// BenchmarkFollowerPageDelay measures how long after a write is
// acknowledged (through the leader) the dashboard of a follower head
// sends the change frame that carries it: what a follower's page lags
// the leader's by.
func BenchmarkFollowerPageDelay(b *testing.B) {
	e := start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/api/manta/events", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	indexes := make(chan uint64, 1024)
	go func() {
		defer close(indexes)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var c struct {
					Index uint64 `json:"index"`
				}
				if json.Unmarshal([]byte(d), &c) == nil && c.Index > 0 {
					select {
					case indexes <- c.Index:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	cl := e.tc.Client()
	var total time.Duration
	for b.Loop() {
		idx, err := cl.Put(ctx, "bench", "k", []byte("v"))
		if err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		for got := uint64(0); got < idx; {
			var ok bool
			if got, ok = <-indexes; !ok {
				b.Fatal("the event stream ended")
			}
		}
		total += time.Since(acked)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms_after_ack")
}

// The nodes page's autoscaler view: RequestResources is recorded (through
// a follower) and shown with its decision, on a cluster without an
// autoscaler config (so the view says it is not running).
func TestAutoscalerView(t *testing.T) {
	e := start(t)
	cl := e.tc.Client()
	ctx := testcluster.Ctx(t, 10*time.Second)
	if err := cl.RequestResources(ctx, []map[string]float64{{"CPU": 2}}); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Enabled   bool     `json:"enabled"`
		Requested []string `json:"requested_resources"`
		Decisions []struct {
			Action string `json:"action"`
		} `json:"decisions"`
	}
	if code, body := e.get("/api/manta/autoscaler", &v); code != 200 {
		t.Fatalf("autoscaler view: %d %s", code, body)
	}
	if v.Enabled || len(v.Requested) != 1 || v.Requested[0] != "CPU=2" || len(v.Decisions) != 1 || v.Decisions[0].Action != "request_resources" {
		t.Fatalf("autoscaler view %+v", v)
	}
	if _, body := e.get("/nodes", nil); !strings.Contains(body, `id="autoscaler"`) {
		t.Fatal("the nodes page has no autoscaler section")
	}
}

// The Serve page: a deployed application is listed with its deployment
// and the replicas the controller started for it (not yet placed: this
// cluster has no raylets).
func TestServeView(t *testing.T) {
	e := start(t)
	cl := e.tc.Client()
	ctx := testcluster.Ctx(t, 10*time.Second)
	if err := cl.ServeDeploy(ctx, &pb.ServeApp{Name: "app", RoutePrefix: "/app", JobId: "j1", Deployments: []*pb.ServeDeployment{
		{Name: "d", ClassName: "serve:d", Version: "v1", NumReplicas: 2, MaxOngoingRequests: 4, Ingress: true}}}); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Apps []struct {
			Name        string `json:"name"`
			Deployments []struct {
				Name   string `json:"name"`
				Status string `json:"status"`
				Target int    `json:"target_replicas"`
			} `json:"deployments"`
			Replicas []struct {
				State string `json:"state"`
			} `json:"replicas"`
		} `json:"applications"`
	}
	testcluster.Eventually(t, 10*time.Second, func() error {
		if code, body := e.get("/api/manta/serve", &v); code != 200 {
			return fmt.Errorf("serve view: %d %s", code, body)
		}
		if len(v.Apps) != 1 || len(v.Apps[0].Deployments) != 1 || v.Apps[0].Deployments[0].Target != 2 || len(v.Apps[0].Replicas) != 2 {
			return fmt.Errorf("serve view %+v", v)
		}
		return nil
	})
	if v.Apps[0].Deployments[0].Status != "UPSCALING" || v.Apps[0].Replicas[0].State != "STARTING" {
		t.Fatalf("serve view %+v", v)
	}
	if _, body := e.get("/serve", nil); !strings.Contains(body, `id="serve-deployments"`) {
		t.Fatal("the serve page has no deployments table")
	}
}
