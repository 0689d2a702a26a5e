package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/zap/zaptest"

	tc "github.com/manta-ray/manta/controlplane/testcluster"
)

// runChaos runs the harness with test defaults; the run itself stops
// every process it starts, and t's cleanup would not see them.
func runChaos(t *testing.T, ctx context.Context, o Options) *Report {
	t.Helper()
	if o.Binary == "" {
		o.Binary = mantaBin
	}
	if o.ReportDir == "" {
		o.ReportDir = t.TempDir()
	}
	o.Logger = zaptest.NewLogger(t)
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return rep
}

// assertNoChaosLeftovers checks that no iptables chain or cgroup of this
// process is left behind.
func assertNoChaosLeftovers(t *testing.T) {
	t.Helper()
	if PartitionSupport() != "" {
		return
	}
	mine := "MANTA-CHAOS-" + strconv.Itoa(os.Getpid()) + "-"
	out, err := exec.Command("iptables", "-w", "-S").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), mine) {
		t.Fatalf("iptables rules left behind:\n%s", out)
	}
	mount, _, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(mount, strings.ToLower(mine)+"*")); len(m) > 0 {
		t.Fatalf("cgroups left behind: %v", m)
	}
}

// TestChaosSmokeMixed runs the mixed scenario end to end for 20s: a
// partition (where supported), a leader kill and a rolling restart, with
// every checker passing and the report on disk.
func TestChaosSmokeMixed(t *testing.T) {
	ctx := tc.Ctx(t, 90*time.Second)
	dir := t.TempDir()
	rep := runChaos(t, ctx, Options{Scenario: "mixed", Duration: 20 * time.Second, Seed: 10, ReportDir: dir})
	var sb strings.Builder
	rep.Summary(&sb)
	t.Logf("summary:\n%s", sb.String())
	if !rep.Pass() {
		t.Fatalf("verdict %s", rep.Verdict)
	}
	if len(rep.Faults) < 2 {
		t.Fatalf("%d faults injected in 20s; want at least 2", len(rep.Faults))
	}
	want := map[string]bool{"kv-linearizable": true, "kv-acked-writes-readable": true, "kv-no-phantom-keys": true,
		"recovery": true, "no-hangs": true, "state-hash-equal": true, "no-leaked-processes": true}
	for _, c := range rep.Checks {
		delete(want, c.Name)
	}
	if len(want) > 0 {
		t.Fatalf("checks missing from the report: %v", want)
	}
	var onDisk Report
	b, err := os.ReadFile(filepath.Join(dir, ReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &onDisk); err != nil {
		t.Fatal(err)
	}
	if onDisk.Verdict != Pass || len(onDisk.Faults) != len(rep.Faults) || onDisk.Recovery.Count == 0 {
		t.Fatalf("report.json: verdict %q, %d faults, recovery %+v", onDisk.Verdict, len(onDisk.Faults), onDisk.Recovery)
	}
	sum, err := os.ReadFile(filepath.Join(dir, ReportSummary))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(sum)), "\n"); lines[len(lines)-1] != "PASS" {
		t.Fatalf("summary.txt ends %q", lines[len(lines)-1])
	}
	assertNoChaosLeftovers(t)
}

// TestChaosReportsLostWrite injects an acknowledged write that never
// happened into a real run's history: the harness must say FAIL, name the
// lost write, and find the history not linearizable.
func TestChaosReportsLostWrite(t *testing.T) {
	ctx := tc.Ctx(t, 60*time.Second)
	dir := t.TempDir()
	rep := runChaos(t, ctx, Options{Scenario: "leader-kill", Duration: time.Second, Seed: 1, ReportDir: dir, Clients: 2,
		Knobs: Knobs{BeforeCheck: func(ws []Workload) {
			kv := ws[0].(*KVWorkload)
			end := kv.hist.Now()
			kv.mu.Lock()
			kv.acked["u-fake"] = "never-written"
			kv.attempted["u-fake"] = "never-written"
			kv.mu.Unlock()
			kv.hist.Add(99, KVInput{Put: true, Key: "u-fake", Value: "never-written"}, KVOutput{}, end+1, end+2)
			kv.hist.Add(98, KVInput{Key: "u-fake"}, KVOutput{}, end+3, end+4)
		}}})
	if rep.Pass() || !strings.HasPrefix(rep.Verdict, "FAIL: ") {
		t.Fatalf("verdict %q; want FAIL", rep.Verdict)
	}
	for _, name := range []string{"kv-acked-writes-readable", "kv-linearizable"} {
		if !strings.Contains(rep.Verdict, name) {
			t.Errorf("verdict does not name %s: %s", name, rep.Verdict)
		}
	}
	if !strings.Contains(rep.Verdict, "u-fake=never-written") {
		t.Errorf("verdict does not name the lost write: %s", rep.Verdict)
	}
	if _, err := os.Stat(filepath.Join(dir, reportLinViz)); err != nil {
		t.Errorf("no linearizability visualisation: %v", err)
	}
}

// TestChaosInterruptedRunCleansUp cancels a run while its first fault is
// in place (a partition where supported), with tasks running from this
// process on 2 raylets: the fault is undone, every head, raylet and worker
// is gone, no rule is left, and a partial report says FAIL.
func TestChaosInterruptedRunCleansUp(t *testing.T) {
	ctx, cancel := context.WithCancel(tc.Ctx(t, 60*time.Second))
	defer cancel()
	sc := "leader-pause"
	if PartitionSupport() == "" {
		sc = "partition-minority"
	}
	dir := t.TempDir()
	rep := runChaos(t, ctx, Options{Scenario: sc, Duration: 30 * time.Second, Seed: 3, ReportDir: dir, Clients: 2, Nodes: 2,
		Knobs: Knobs{AfterInject: func(string) { cancel() }}})
	if !rep.Interrupted || !strings.HasPrefix(rep.Verdict, "FAIL: interrupted") {
		t.Fatalf("interrupted %v, verdict %q", rep.Interrupted, rep.Verdict)
	}
	if len(rep.Faults) != 1 || rep.Faults[0].UndoneAt == 0 {
		t.Fatalf("faults %+v; want one, undone", rep.Faults)
	}
	var leaks *CheckResult
	for i, c := range rep.Checks {
		if c.Name == "no-leaked-processes" {
			leaks = &rep.Checks[i]
		}
	}
	if leaks == nil || leaks.Verdict != Pass || !strings.Contains(leaks.Detail, "2 raylet") || !strings.Contains(leaks.Detail, " worker") {
		t.Fatalf("leak check %+v; want a pass over 2 raylets and their workers", leaks)
	}
	if _, err := os.Stat(filepath.Join(dir, ReportJSON)); err != nil {
		t.Fatalf("no partial report: %v", err)
	}
	assertNoChaosLeftovers(t)
}

func TestChaosRefusesNonEmptyReportDir(t *testing.T) {
	dir := t.TempDir()
	mine := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(mine, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, ReportJSON)
	if err := os.WriteFile(old, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Run(t.Context(), Options{Scenario: "leader-kill", ReportDir: dir, Binary: mantaBin})
	if !errors.Is(err, ErrReportDirNotEmpty) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("run into a non-empty dir: %v; want ErrReportDirNotEmpty mentioning --force", err)
	}
	// --force clears a previous report but not the user's own files.
	if err := prepareReportDir(dir, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old report survived --force: %v", err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Fatalf("--force removed a file it did not write: %v", err)
	}
}

func TestChaosRejectsBadScenarios(t *testing.T) {
	dir := t.TempDir()
	_, err := Run(t.Context(), Options{Scenario: "leader-explode", ReportDir: dir})
	if !errors.Is(err, ErrUnknownScenario) {
		t.Fatalf("unknown scenario: %v", err)
	}
	for _, name := range ScenarioNames() {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not list %s: %v", name, err)
		}
	}
	// node-1 serves the driver and is never killed: raylet-kill needs two.
	if _, err := Run(t.Context(), Options{Scenario: "raylet-kill", Nodes: 1, ReportDir: dir}); !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), "at least 2 nodes") {
		t.Fatalf("raylet-kill on 1 node: %v; want ErrBadOptions", err)
	}
	if _, err := Run(t.Context(), Options{Scenario: "worker-kill", Nodes: -1, ReportDir: dir}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("-1 nodes: %v; want ErrBadOptions", err)
	}
	if _, err := Run(t.Context(), Options{Scenario: "mixed", Heads: 1, ReportDir: dir}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("1 head: %v; want ErrBadOptions", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("bad options wrote %d entries into the report dir", len(entries))
	}
}

// fakeStore is a kvReader over a map.
type fakeStore map[string]string

func (f fakeStore) Get(_ context.Context, k string) (string, bool, error) {
	v, ok := f[k]
	return v, ok, nil
}

func (f fakeStore) List(_ context.Context, prefix string) ([]string, error) {
	var out []string
	for k := range f {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out, nil
}

// TestKVChecksNameViolations feeds the KV checkers a store that lost one
// acknowledged write and grew a key nobody wrote.
func TestKVChecksNameViolations(t *testing.T) {
	w := NewKVWorkload(1)
	w.acked["u-0-1"], w.attempted["u-0-1"] = "0-1", "0-1"
	w.acked["u-0-2"], w.attempted["u-0-2"] = "0-2", "0-2"
	w.hist.Add(0, KVInput{Put: true, Key: "u-0-1", Value: "0-1"}, KVOutput{}, 0, 10)
	store := fakeStore{"u-0-1": "0-1", "u-9-9": "9-9"} // u-0-2 lost, u-9-9 a phantom
	got := map[string]CheckResult{}
	for _, c := range w.check(t.Context(), store, zaptest.NewLogger(t), CheckOptions{}) {
		got[c.Name] = c
	}
	if c := got["kv-acked-writes-readable"]; c.Verdict != Fail || !strings.Contains(c.Detail, "u-0-2=0-2") {
		t.Errorf("lost write: %+v", c)
	}
	if c := got["kv-no-phantom-keys"]; c.Verdict != Fail || !strings.Contains(c.Detail, "u-9-9") {
		t.Errorf("phantom: %+v", c)
	}
	if c := got["kv-linearizable"]; c.Verdict != Pass {
		t.Errorf("linearizable: %+v", c)
	}
	rep := &Report{Checks: []CheckResult{got["kv-acked-writes-readable"], got["kv-linearizable"]}}
	rep.decide()
	if !strings.HasPrefix(rep.Verdict, "FAIL: kv-acked-writes-readable") {
		t.Fatalf("verdict %q", rep.Verdict)
	}
}

// TestUnknownWriteNeverReturns pins how History records a write with an
// unknown outcome: as an operation that never returned.
func TestUnknownWriteNeverReturns(t *testing.T) {
	h := NewHistory()
	h.Add(1, KVInput{Put: true, Key: "k", Value: "a"}, KVOutput{Unknown: true}, 5, 10)
	h.Add(1, KVInput{Key: "k"}, KVOutput{Unknown: true}, 11, 12) // dropped
	ops := h.Operations()
	if len(ops) != 1 || ops[0].Return != math.MaxInt64 {
		t.Fatalf("ops %+v", ops)
	}
	if r := porcupine.CheckOperations(KVModel, ops); !r {
		t.Fatal("a lone unknown write is not linearizable")
	}
}
