package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/manta-ray/manta/internal/launcher"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// artifactsDir is where the browser test saves its screenshots: the
// directory MANTA_ARTIFACTS names, or one under the system's temp dir
// that outlives the test.
func artifactsDir(t *testing.T, name string) string {
	t.Helper()
	root := os.Getenv("MANTA_ARTIFACTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "manta-artifacts")
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Screenshots of an earlier run would pass for this one's.
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	t.Logf("screenshots go to %s", dir)
	return dir
}

// startObserveDriver builds examples/observe and runs it as a driver of
// c, held open; it returns the chain's final object ID once the workload
// is done. The driver is ended by PID when the test ends.
func startObserveDriver(t *testing.T, c *launcher.Cluster) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "observe")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/observe").CombinedOutput(); err != nil {
		t.Fatalf("build examples/observe: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(cleanEnv(), append(clusterEnv(c), "OBSERVE_HOLD=1")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "observe.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	})
	lines := make(chan string, 16)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		_ = cmd.Wait()
	}()
	var object string
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				b, _ := os.ReadFile(logf.Name())
				t.Fatalf("the observe driver ended before holding:\n%s", b)
			}
			t.Logf("driver: %s", l)
			if o, ok := strings.CutPrefix(l, "chain object "); ok {
				object = o
			}
			if strings.HasPrefix(l, "holding") {
				if object == "" {
					t.Fatal("the driver printed no chain object")
				}
				return object
			}
		case <-timeout:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("the observe driver did not finish its workload in 3m:\n%s", b)
		}
	}
}

// TestDashboardInBrowser drives the dashboard in headless chromium: it
// logs in on a follower head's page, checks that the nodes, the actor, the
// finished tasks (once the State API answers) and the lineage graph
// appear, then kills the leader and checks that the page keeps updating
// from the follower's watch. A screenshot of each page is saved.
func TestDashboardInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-head cluster and a browser")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("skipping the browser test: no chromium at %s (.ci/run installs Debian's chromium: apt-get install chromium)", chromiumPath)
	}
	c := startJobCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower := (leader + 1) % 3
	var addr []byte
	eventually(t, 30*time.Second, "the follower's dashboard address", func() bool {
		addr, err = os.ReadFile(filepath.Join(c.Heads()[follower].DataDir, dashboardAddressFile))
		return err == nil && len(addr) > 0
	})
	base := "http://" + strings.TrimSpace(string(addr))
	object := startObserveDriver(t, c)
	shots := artifactsDir(t, "dashboard")

	b := newBrowser(t, ctx)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(b, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// wait polls a script expression in the page until it is true.
	wait := func(what, expr string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		var ok bool
		var err error
		for {
			ok, err = chromedp.Run(b, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(time.Until(deadline)), chromedp.WithPollingInterval(100*time.Millisecond)))
			// A poll that a navigation (the login's redirect) cut short
			// starts again on the new page.
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || !ok {
			html, _ := chromedp.Run(b, chromedp.OuterHTML(chromedp.CSS("main")))
			shot("failed-" + strings.ReplaceAll(what, " ", "-"))
			t.Fatalf("waiting for %s (%s): %v\npage: %.2000s", what, expr, err, html)
		}
	}
	open := func(path, page string) {
		t.Helper()
		if err := chromedp.Do(b, chromedp.Navigate(base+path)); err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		wait(page+" page ready", fmt.Sprintf(`document.body.dataset.page === %q && document.body.dataset.ready === "1"`, page))
	}
	text := func(sel string) string { return fmt.Sprintf(`(document.querySelector(%q)||{}).textContent||""`, sel) }

	// Not logged in: the login form; a wrong token is refused.
	if err := chromedp.Do(b, chromedp.Navigate(base+"/nodes"), chromedp.WaitVisible(chromedp.CSS("#token"))); err != nil {
		t.Fatalf("the login form: %v", err)
	}
	shot("login")
	if err := chromedp.Do(b, chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"), chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#login-error"))); err != nil {
		t.Fatalf("a wrong token: %v", err)
	}
	if err := chromedp.Do(b, chromedp.SendKeys(chromedp.CSS("#token"), c.Token()), chromedp.Click(chromedp.CSS("#login-submit"))); err != nil {
		t.Fatalf("log in: %v", err)
	}
	// Back on the page that asked for the login.
	wait("the nodes page after login", `document.body.dataset.page === "nodes"`)
	wait("both nodes listed", `document.querySelectorAll('#nodes tr[data-node="node-1"], #nodes tr[data-node="node-2"]').length === 2`)
	wait("node-1 with its object store", `/MiB|GiB/.test(`+text(`#nodes tr[data-node="node-1"]`)+`)`)
	shot("nodes")

	open("/", "overview")
	wait("three heads with one leader", `document.querySelectorAll('#heads tr[data-head]').length === 3 && /Leader/.test(`+text("#heads")+`)`)
	wait("the live stream", `document.querySelector("#live").classList.contains("up") && /\(Follower\)/.test(`+text("#live-head")+`)`)
	wait("the nodes on the overview", `document.querySelectorAll('#nodes tr[data-node]').length === 2`)
	shot("overview")

	open("/actors", "actors")
	wait("the Counter actor alive", `[...document.querySelectorAll('#actors tr[data-actor]')].some(r => /examples\.observe\.Counter/.test(r.textContent) && /ALIVE/.test(r.textContent))`)
	shot("actors")

	// The task list comes from the State API (/api/v0/tasks), fed by the
	// driver's task events.
	open("/tasks", "tasks")
	wait("finished square tasks", `[...document.querySelectorAll('#tasks tr[data-task]')].some(r => /examples\.observe\.square/.test(r.textContent) && /FINISHED/.test(r.textContent))`)
	wait("the failed explode task", `[...document.querySelectorAll('#tasks tr[data-task]')].some(r => /examples\.observe\.explode/.test(r.textContent) && /FAILED/.test(r.textContent))`)
	shot("tasks")
	open("/tasks?state=FAILED&func_or_class_name=examples.observe.explode", "tasks")
	wait("the filtered failed task", `document.querySelector('#tasks tr[data-task]') !== null`)
	id, err := chromedp.Run(b, chromedp.Evaluate[string](`document.querySelector('#tasks tr[data-task]').dataset.task`))
	if err != nil {
		t.Fatal(err)
	}
	open("/tasks/"+id, "task")
	wait("the task's error and stack", `/on purpose/.test(`+text("#task-error")+`)`)
	shot("task-failed")
	// The chain's last stage: its lineage record (node, final state).
	open("/tasks/"+object[:32], "task")
	wait("the chain task's lineage record", `/FINISHED/.test(`+text("#record")+`) && /examples\.observe\.stage/.test(`+text("#record")+`)`)
	shot("task")

	open("/lineage?object="+object, "lineage")
	wait("the chain drawn", `document.querySelectorAll('svg.lineage g.gnode.task').length === 3 && document.querySelectorAll('svg.lineage g.gnode.obj').length === 3 && document.querySelectorAll('svg.lineage path.edge').length === 5`)
	shot("lineage")

	if r := mantaCmd(t, clusterEnv(c), "", "job", "submit", "--submission-id", "dash-1", "--", "sh", "-c", "echo hello-from-a-submitted-job"); r.code != 0 {
		t.Fatalf("job submit: %v", r)
	}
	open("/jobs", "jobs")
	wait("the driver's job running", `[...document.querySelectorAll('#drivers tr[data-job]')].some(r => /RUNNING/.test(r.textContent))`)
	wait("the submitted job succeeded", `/SUCCEEDED/.test(`+text(`#submissions tr[data-job="dash-1"]`)+`)`)
	shot("jobs")
	jobID, err := chromedp.Run(b, chromedp.Evaluate[string](`[...document.querySelectorAll('#drivers tr[data-job]')].find(r => /RUNNING/.test(r.textContent)).dataset.job`))
	if err != nil {
		t.Fatal(err)
	}
	open("/jobs/"+jobID, "job")
	wait("the driver job's details", `/RUNNING/.test(`+text("#job-info")+`)`)
	shot("job")
	open("/jobs/dash-1", "job")
	wait("the submitted job's logs", `/hello-from-a-submitted-job/.test(`+text("#job-logs")+`) && /SUCCEEDED/.test(`+text("#job-info")+`)`)
	shot("job-submitted")
	for _, p := range []struct{ path, page string }{{"/objects", "objects"}, {"/workers", "workers"}, {"/placement-groups", "placement_groups"}} {
		open(p.path, p.page)
		shot(p.page)
	}

	// The leader dies: the follower's page goes on, shows the dead head,
	// and moves with the next change the new leader commits.
	open("/", "overview")
	wait("three heads answering", `document.querySelectorAll('#heads tr[data-head]').length === 3 && !/Unreachable/.test(`+text("#heads")+`)`)
	before, err := chromedp.Run(b, chromedp.Text(chromedp.CSS("#live-index")))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	wait("the killed leader shown unreachable and a new leader", `/Unreachable/.test(`+text("#heads")+`) && /Leader/.test(`+text("#heads")+`)`)
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Put(ctx, "dashboard-test", "after-failover", []byte("1")); err != nil {
		t.Fatalf("a write after the failover: %v", err)
	}
	beforeN, _ := strconv.ParseUint(strings.TrimSpace(before), 10, 64)
	wait("the page's raft index to move past "+before, fmt.Sprintf(`Number(%s) > %d && document.querySelector("#live").classList.contains("up")`, text("#live-index"), beforeN))
	shot("overview-after-failover")

	// Any head serves it: a follower's page (the session cookie is good on
	// every head) moves with the leader's next write.
	var hv struct {
		Heads []struct {
			Address string `json:"address"`
			Role    string `json:"role"`
		} `json:"heads"`
	}
	getJSON(t, base+"/api/manta/heads", c.Token(), &hv)
	fbase := ""
	for _, h := range hv.Heads {
		for i, hp := range c.Heads() {
			if h.Role == "Follower" && hp.Address == h.Address && i != leader {
				b, err := os.ReadFile(filepath.Join(hp.DataDir, dashboardAddressFile))
				if err == nil {
					fbase = "http://" + strings.TrimSpace(string(b))
				}
			}
		}
	}
	if fbase == "" {
		t.Fatalf("no follower among %+v", hv.Heads)
	}
	if err := chromedp.Do(b, chromedp.Navigate(fbase+"/")); err != nil {
		t.Fatal(err)
	}
	wait("a follower's overview, live", `document.body.dataset.page === "overview" && document.querySelector("#live").classList.contains("up") && /\(Follower\)/.test(`+text("#live-head")+`) && Number(`+text("#live-index")+`) > 0`)
	before, err = chromedp.Run(b, chromedp.Text(chromedp.CSS("#live-index")))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := cl.Put(ctx, "dashboard-test", "on-the-follower", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	beforeN, _ = strconv.ParseUint(strings.TrimSpace(before), 10, 64)
	wait("the follower's page to reach the write's index", fmt.Sprintf(`Number(%s) >= %d && Number(%s) > %d`, text("#live-index"), idx, text("#live-index"), beforeN))
	shot("overview-follower")
	// Screenshots are for people: the test only checks they were written.
	for _, n := range []string{"login", "overview", "nodes", "actors", "tasks", "task", "lineage", "jobs", "job", "job-submitted", "objects", "workers", "placement_groups", "overview-after-failover", "overview-follower"} {
		if fi, err := os.Stat(filepath.Join(shots, n+".png")); err != nil || fi.Size() == 0 {
			t.Errorf("screenshot %s missing: %v", n, err)
		}
	}
}

func getJSON(t *testing.T, url, token string, out any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
}

// newBrowser starts headless chromium with a fresh profile and the flags
// this machine's closed network needs; the browser is killed by PID when
// the test ends.
func newBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
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
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		t.Fatalf("start chromium: %v", err)
	}
	pid := chromedp.FromContext(bctx).Browser.Process().Pid
	t.Cleanup(func() {
		bcancel()
		acancel()
		if !processGone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !processGone(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !processGone(pid) {
			t.Errorf("chromium (pid %d) still running", pid)
		}
	})
	return bctx
}
