package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/dashboard"
	"github.com/manta-ray/manta/controlplane/testcluster"
)

// The tasks pages against a fake of Ray's State API (/api/v0/tasks), so
// they are tested, and the 10k-task page load measured, without the
// task-event pipeline; cmd/manta's TestDashboardInBrowser runs them
// against the real one.

const chromiumPath = "/usr/bin/chromium"

// fakeTasks serves /api/v0/tasks in Ray's shape: n tasks, every 50th
// FAILED with a stack, equality filters, limit.
type fakeTasks struct {
	n int

	mu      sync.Mutex
	queries []string
}

func (f *fakeTasks) task(i int) map[string]any {
	t := map[string]any{
		"task_id": fmt.Sprintf("%032x", i+1), "attempt_number": 0, "name": fmt.Sprintf("bench.fn_%d", i%7),
		"state": "FINISHED", "job_id": "01000000", "actor_id": nil, "type": "NORMAL_TASK",
		"func_or_class_name": fmt.Sprintf("bench.fn_%d", i%7), "parent_task_id": fmt.Sprintf("%032x", 0),
		"node_id": fmt.Sprintf("%056x", i%3+1), "worker_id": fmt.Sprintf("%056x", i%16+1), "worker_pid": 1000 + i%16,
		"error_type": nil, "required_resources": map[string]float64{"CPU": 1},
	}
	if i%50 == 49 {
		t["state"] = "FAILED"
		t["error_type"] = "TASK_EXECUTION_EXCEPTION"
		t["error_message"] = fmt.Sprintf("task bench.fn_%d panicked: boom %d\n\ngoroutine 7 [running]:\nmain.fn(...)\n\t/src/main.go:42 +0x1d", i%7, i)
	}
	return t
}

func (f *fakeTasks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	f.queries = append(f.queries, r.URL.RawQuery)
	f.mu.Unlock()
	keys, vals := q["filter_keys"], q["filter_values"]
	if len(keys) != len(vals) {
		http.Error(w, "filter_keys and filter_values differ in length", http.StatusBadRequest)
		return
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil {
		limit = 100
	}
	var out []map[string]any
	total := 0
	for i := range f.n {
		t := f.task(i)
		ok := true
		for j, k := range keys {
			if fmt.Sprint(t[k]) != vals[j] {
				ok = false
			}
		}
		if !ok {
			continue
		}
		total++
		if len(out) < limit {
			out = append(out, t)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"result": true, "msg": "", "data": map[string]any{"result": map[string]any{
		"total": total, "num_after_truncation": len(out), "num_filtered": total, "result": out,
		"partial_failure_warning": "", "warnings": nil}}})
}

func (f *fakeTasks) sawQuery(sub string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, q := range f.queries {
		if strings.Contains(q, sub) {
			return true
		}
	}
	return false
}

// fakeServer serves the dashboard (over one real head) and the fake
// State API, without the token check (jobsapi's, tested there).
func fakeServer(t testing.TB, n int) (string, *fakeTasks) {
	tc := testcluster.Start(t, 1, nil)
	tc.WaitLeader()
	cl, err := cpclient.New(cpclient.Config{Addresses: tc.Addresses(), Token: tc.Token()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	d := dashboard.New(dashboard.Config{Client: cl, Token: tc.Token})
	t.Cleanup(func() { d.Close() })
	mux := http.NewServeMux()
	d.Register(mux)
	fake := &fakeTasks{n: n}
	mux.Handle("GET /api/v0/tasks", fake)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, fake
}

func newBrowser(t testing.TB) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("skipping: no chromium at %s (.ci/run installs Debian's chromium)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		t.Fatalf("start chromium: %v", err)
	}
	pid := chromedp.FromContext(bctx).Browser.Process().Pid
	t.Cleanup(func() {
		bcancel()
		acancel()
		_ = syscall.Kill(pid, syscall.SIGKILL) // ESRCH when already gone
	})
	return bctx
}

// poll waits for a script expression to hold in the page.
func poll(t testing.TB, b context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, err := chromedp.Run(b, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(time.Until(deadline)),
			chromedp.WithPollingInterval(20*time.Millisecond)))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(b, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("waiting for %s (%s): %v\n%.1500s", what, expr, err, html)
		}
		time.Sleep(50 * time.Millisecond) // a navigation cut the poll short: poll the new page
	}
}

func TestTasksPagesWithStateAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	base, fake := fakeServer(t, 2000)
	b := newBrowser(t)
	dir := os.Getenv("MANTA_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "manta-artifacts")
	}
	dir = filepath.Join(dir, "dashboard-fake-state")
	os.MkdirAll(dir, 0o755)
	t.Logf("screenshots go to %s", dir)
	shot := func(name string) {
		png, err := chromedp.Run(b, chromedp.CaptureScreenshot())
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(b, chromedp.Navigate(base+"/tasks")); err != nil {
		t.Fatal(err)
	}
	poll(t, b, "2000 tasks, 500 on the first page", `document.body.dataset.tasksLoaded === "2000" && document.querySelectorAll("#tasks tr[data-task]").length === 500`)
	poll(t, b, "the state counts", `/FAILED/.test(document.querySelector("#task-summary").textContent) && /40/.test(document.querySelector('#task-summary [data-key="FAILED"]').textContent)`)
	shot("tasks")
	if err := chromedp.Do(b, chromedp.Click(chromedp.CSS("#next"))); err != nil {
		t.Fatal(err)
	}
	poll(t, b, "the second page", `/^501–1000 of 2000$/.test(document.querySelector("#page-info").textContent)`)

	// Filters go to the State API as Ray's filter predicates.
	if err := chromedp.Do(b, chromedp.SetValue(chromedp.CSS(`#task-filter select[name="state"]`), "FAILED"),
		chromedp.SendKeys(chromedp.CSS(`#task-filter input[name="func_or_class_name"]`), "bench.fn_3"),
		chromedp.Click(chromedp.CSS(`#task-filter button`))); err != nil {
		t.Fatal(err)
	}
	poll(t, b, "only failed bench.fn_3 tasks", `document.body.dataset.tasksLoaded !== "2000" && [...document.querySelectorAll("#tasks tr[data-task]")].every(r => /FAILED/.test(r.textContent) && /bench\.fn_3/.test(r.textContent)) && document.querySelectorAll("#tasks tr[data-task]").length > 0`)
	if !fake.sawQuery("filter_keys=state") || !fake.sawQuery("filter_values=FAILED") || !fake.sawQuery("filter_keys=func_or_class_name") {
		t.Fatalf("the filters did not reach the State API: %v", fake.queries)
	}
	id, err := chromedp.Run(b, chromedp.Evaluate[string](`document.querySelector("#tasks tr[data-task]").dataset.task`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b, chromedp.Navigate(base+"/tasks/"+id)); err != nil {
		t.Fatal(err)
	}
	poll(t, b, "the failed task's error and stack", `/panicked: boom/.test((document.querySelector("#task-error")||{}).textContent||"") && /main\.go:42/.test(document.querySelector("#task-error").textContent)`)
	shot("task-failed")
}

// BenchmarkTasksPage10k measures loading the tasks page with 10,000 tasks
// listed, from navigation to the first 500 rows drawn, in headless
// chromium over loopback; the State API is a fake serving a prepared list.
// in_page_ms is the script's own fetch+parse+draw time.
func BenchmarkTasksPage10k(b *testing.B) {
	base, _ := fakeServer(b, 10000)
	br := newBrowser(b)
	var inPage float64
	n := 0
	for b.Loop() {
		if err := chromedp.Do(br, chromedp.Navigate(base+"/tasks")); err != nil {
			b.Fatal(err)
		}
		poll(b, br, "10k tasks drawn", `document.body.dataset.tasksLoaded === "10000" && document.querySelectorAll("#tasks tr[data-task]").length === 500`)
		ms, err := chromedp.Run(br, chromedp.Evaluate[string](`document.body.dataset.tasksLoadedMs`))
		if err != nil {
			b.Fatal(err)
		}
		v, _ := strconv.ParseFloat(ms, 64)
		inPage += v
		n++
	}
	b.ReportMetric(inPage/float64(n), "in_page_ms")
}
