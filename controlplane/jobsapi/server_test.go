package jobsapi_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/jobsapi"
	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/raylet"
)

type env struct {
	t     testing.TB
	base  string
	token string
}

// start runs three heads, a raylet, and the API on loopback port 0 in
// front of a follower head (which forwards writes to the leader).
func start(t testing.TB) *env {
	tc := testcluster.Start(t, 3, nil)
	follower := tc.Addresses()[(tc.WaitLeader()+1)%3]
	cl, err := cpclient.New(cpclient.Config{Addresses: []string{follower}, Token: tc.Token()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	r, err := raylet.New(raylet.Config{NodeID: "n1", Heads: tc.Addresses(), Token: tc.Token(), DataDir: t.TempDir(),
		PrestartWorkers: -1, Resources: map[string]float64{"CPU": 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	api, err := jobsapi.New(jobsapi.Config{Addr: "127.0.0.1:0", Client: cl, Token: tc.Token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return &env{t: t, base: "http://" + api.Address(), token: tc.Token()}
}

// do sends a request (with the token unless noAuth) and decodes a JSON
// answer into out when given.
func (e *env) do(method, path string, body []byte, noAuth bool, out any) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if !noAuth {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

type details struct {
	Type           string         `json:"type"`
	SubmissionID   string         `json:"submission_id"`
	Status         string         `json:"status"`
	Entrypoint     string         `json:"entrypoint"`
	Message        string         `json:"message"`
	DriverExitCode *int           `json:"driver_exit_code"`
	RuntimeEnv     map[string]any `json:"runtime_env"`
	StartTime      *int64         `json:"start_time"`
	EndTime        *int64         `json:"end_time"`
	DriverNodeID   string         `json:"driver_node_id"`
}

func (e *env) waitEnded(id string) details {
	e.t.Helper()
	var d details
	testcluster.Eventually(e.t, 30*time.Second, func() error {
		if code, body := e.do("GET", "/api/jobs/"+id, nil, false, &d); code != 200 {
			e.t.Fatalf("get %s: %d %s", id, code, body)
		}
		if d.Status == "PENDING" || d.Status == "RUNNING" {
			return io.EOF
		}
		return nil
	})
	return d
}

func TestRESTJobs(t *testing.T) {
	e := start(t)
	// Without the token nothing is served and nothing changes.
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/version"}, {"POST", "/api/jobs/"}, {"GET", "/api/jobs/"}, {"PUT", "/api/packages/gcs/_ray_pkg_x.zip"},
	} {
		if code, _ := e.do(c.method, c.path, []byte(`{"entrypoint": "touch /tmp/manta-pwned"}`), true, nil); code != 401 {
			t.Errorf("%s %s without a token: %d; want 401", c.method, c.path, code)
		}
	}
	var jobs []details
	if code, _ := e.do("GET", "/api/jobs/", nil, false, &jobs); code != 200 || len(jobs) != 0 {
		t.Fatalf("unauthenticated requests created jobs: %d %v", code, jobs)
	}
	var v map[string]string
	if code, _ := e.do("GET", "/api/version", nil, false, &v); code != 200 || v["ray_version"] == "" {
		t.Fatalf("version: %d %v", code, v)
	}

	// A working dir uploaded as Ray's clients do: GET (404), PUT, GET (200).
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	w, _ := zw.Create("data.txt")
	io.WriteString(w, "rest data\n")
	zw.Close()
	pkg := "/api/packages/gcs/_ray_pkg_test.zip"
	if code, _ := e.do("GET", pkg, nil, false, nil); code != 404 {
		t.Fatalf("a missing package: %d; want 404", code)
	}
	if code, body := e.do("PUT", pkg, zb.Bytes(), false, nil); code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, _ := e.do("GET", pkg, nil, false, nil); code != 200 {
		t.Fatalf("an uploaded package: %d; want 200", code)
	}
	if code, _ := e.do("GET", "/api/packages/s3/x.zip", nil, false, nil); code != 400 {
		t.Fatalf("another protocol: %d; want 400", code)
	}

	body := `{"entrypoint": "cat data.txt; echo $GREETING", "submission_id": "rest-1", "metadata": {"k": "v"},
		"runtime_env": {"working_dir": "gcs://_ray_pkg_test.zip", "env_vars": {"GREETING": "hi-rest"}}, "entrypoint_num_cpus": 1}`
	var sub map[string]string
	if code, b := e.do("POST", "/api/jobs/", []byte(body), false, &sub); code != 200 || sub["submission_id"] != "rest-1" || sub["job_id"] != "rest-1" {
		t.Fatalf("submit: %d %s", code, b)
	}
	// The logs tail streams until the job ends, then closes normally.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(e.base, "http", "ws", 1)+"/api/jobs/rest-1/logs/tail",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + e.token}}})
	if err != nil {
		t.Fatal(err)
	}
	var tail strings.Builder
	for {
		_, msg, err := ws.Read(ctx)
		if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
			break
		}
		if err != nil {
			t.Fatalf("tail: %v (so far %q)", err, tail.String())
		}
		tail.Write(msg)
	}
	if !strings.Contains(tail.String(), "rest data") || !strings.Contains(tail.String(), "hi-rest") {
		t.Fatalf("tail: %q", tail.String())
	}
	d := e.waitEnded("rest-1")
	if d.Type != "SUBMISSION" || d.Status != "SUCCEEDED" || d.DriverExitCode == nil || *d.DriverExitCode != 0 ||
		d.RuntimeEnv["working_dir"] != "gcs://_ray_pkg_test.zip" || d.StartTime == nil || d.EndTime == nil || d.DriverNodeID != "n1" {
		t.Fatalf("details: %+v", d)
	}
	var logs map[string]string
	if code, _ := e.do("GET", "/api/jobs/rest-1/logs", nil, false, &logs); code != 200 || !strings.Contains(logs["logs"], "hi-rest") {
		t.Fatalf("logs: %d %v", code, logs)
	}

	// The same submission again is the same job; another entrypoint under
	// its ID is 409; bad input is 400; unknown jobs 404.
	if code, _ := e.do("POST", "/api/jobs/", []byte(body), false, nil); code != 200 {
		t.Fatalf("resubmit: %d", code)
	}
	if code, _ := e.do("POST", "/api/jobs/", []byte(`{"entrypoint": "other", "submission_id": "rest-1"}`), false, nil); code != 409 {
		t.Fatalf("another entrypoint under the same ID: %d; want 409", code)
	}
	for _, bad := range []string{`{"entrypoint": ""}`, `not json`, `{"entrypoint": "x", "runtime_env": {"pip": ["requests"]}}`,
		`{"entrypoint": "x", "runtime_env": {"env_vars": {"A B": "1"}}}`, `{"entrypoint": "x", "runtime_env": {"working_dir": "gcs://_ray_pkg_none.zip"}}`} {
		if code, b := e.do("POST", "/api/jobs/", []byte(bad), false, nil); code != 400 {
			t.Errorf("submit %s: %d %s; want 400", bad, code, b)
		}
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/jobs/nope"}, {"POST", "/api/jobs/nope/stop"}, {"DELETE", "/api/jobs/nope"}, {"GET", "/api/jobs/nope/logs"}, {"GET", "/api/jobs/nope/logs/tail"},
	} {
		if code, _ := e.do(c.method, c.path, nil, false, nil); code != 404 {
			t.Errorf("%s %s: %d; want 404", c.method, c.path, code)
		}
	}

	// Stop a sleeping job; delete it once it ended.
	if code, _ := e.do("POST", "/api/jobs/", []byte(`{"entrypoint": "sleep 300", "submission_id": "rest-2"}`), false, nil); code != 200 {
		t.Fatalf("submit: %d", code)
	}
	if code, b := e.do("DELETE", "/api/jobs/rest-2", nil, false, nil); code != 400 {
		t.Fatalf("delete of a live job: %d %s; want 400", code, b)
	}
	var stopped map[string]bool
	if code, _ := e.do("POST", "/api/jobs/rest-2/stop", nil, false, &stopped); code != 200 || !stopped["stopped"] {
		t.Fatalf("stop: %d %v", code, stopped)
	}
	if d := e.waitEnded("rest-2"); d.Status != "STOPPED" {
		t.Fatalf("stopped job: %+v", d)
	}
	var deleted map[string]bool
	if code, _ := e.do("DELETE", "/api/jobs/rest-2", nil, false, &deleted); code != 200 || !deleted["deleted"] {
		t.Fatalf("delete: %d %v", code, deleted)
	}
	if code, _ := e.do("GET", "/api/jobs/", nil, false, &jobs); code != 200 || len(jobs) != 1 || jobs[0].SubmissionID != "rest-1" {
		t.Fatalf("list: %d %+v", code, jobs)
	}
}
