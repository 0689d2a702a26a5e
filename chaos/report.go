package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Files a run writes into its report directory.
const (
	ReportJSON    = "report.json"
	ReportSummary = "summary.txt"
	reportCluster = "cluster" // the heads' data dirs and logs
	reportLinViz  = "linearizability.html"
)

// Report is what a run found; it is written as report.json and, for
// people, summary.txt.
type Report struct {
	Scenario    string          `json:"scenario"`
	Seed        uint64          `json:"seed"`
	Heads       int             `json:"heads"`
	Nodes       int             `json:"nodes"`
	Duration    string          `json:"duration"` // of the fault phase, as asked
	StartedAt   time.Time       `json:"started_at"`
	RunSeconds  float64         `json:"run_seconds"` // workloads running, start to stop
	Interrupted bool            `json:"interrupted"`
	Partition   PartitionReport `json:"partition"`
	// SkippedFaults are faults of the scenario that cannot run here, with
	// why.
	SkippedFaults []string         `json:"skipped_faults,omitempty"`
	Workloads     []WorkloadReport `json:"workloads"`
	OpsPerSec     float64          `json:"ops_per_sec"` // successful operations per second, all workloads
	Faults        []FaultEvent     `json:"faults"`
	// Recovery is over the faults' recovery times: fault to the next
	// successful operation.
	Recovery DurationStats `json:"recovery_ms"`
	Checks   []CheckResult `json:"checks"`
	// Errors are the harness's own failures (a cluster that would not
	// start, a fault it could not undo).
	Errors    []string `json:"errors,omitempty"`
	ReportDir string   `json:"report_dir"`
	Verdict   string   `json:"verdict"` // PASS or FAIL: why
}

// PartitionReport says how partitions were made, or why they were not.
type PartitionReport struct {
	Mechanism string `json:"mechanism"` // iptables or none
	Detail    string `json:"detail"`
}

// WorkloadReport is one workload's counts.
type WorkloadReport struct {
	Name string `json:"name"`
	OpStats
	OpsPerSec    float64 `json:"ops_per_sec"`
	MaxLatencyMs float64 `json:"max_latency_ms"`
	// Outcomes counts the failed operations by what they returned (the
	// task workload: worker-crashed, object-lost, timeout, other-error,
	// wrong-value).
	Outcomes map[string]int `json:"outcomes,omitempty"`
	// Recovery is over every fault: fault to this workload's next
	// successful operation.
	Recovery DurationStats `json:"recovery_ms"`
}

// FaultEvent is one injected fault. Times are seconds from the start of
// the cluster.
type FaultEvent struct {
	Seq    int     `json:"seq"`
	Fault  string  `json:"fault"`
	Target string  `json:"target,omitempty"`
	Role   string  `json:"role,omitempty"`
	PID    int     `json:"pid,omitempty"`
	Action string  `json:"action,omitempty"`
	At     float64 `json:"at_s"`
	HoldMs float64 `json:"hold_ms"`
	// UndoneAt is when the harness restarted, resumed or healed.
	UndoneAt float64 `json:"undone_at_s,omitempty"`
	// RecoveryMs is the fault to the first successful operation called
	// after it (of workload MeasuredBy, or of any when empty); nil if
	// there was none.
	RecoveryMs *float64 `json:"recovery_ms"`
	MeasuredBy string   `json:"measured_by,omitempty"`
	// WholeAfterMs is the undo to every head running and agreeing on a
	// leader again; nil if that never happened.
	WholeAfterMs *float64 `json:"whole_after_ms"`
	Error        string   `json:"error,omitempty"`

	at time.Duration
}

// DurationStats summarises durations in milliseconds.
type DurationStats struct {
	Count    int     `json:"count"`
	MinMs    float64 `json:"min"`
	MedianMs float64 `json:"median"`
	MaxMs    float64 `json:"max"`
}

func statsOf(ms []float64) DurationStats {
	if len(ms) == 0 {
		return DurationStats{}
	}
	s := append([]float64(nil), ms...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return DurationStats{Count: len(s), MinMs: s[0], MedianMs: med, MaxMs: s[len(s)-1]}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func secs(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

// Pass says whether the run passed.
func (r *Report) Pass() bool { return r.Verdict == Pass }

// decide sets the verdict from the checks, the harness errors and an
// interruption: any of them fails the run.
func (r *Report) decide() {
	var why []string
	if r.Interrupted {
		why = append(why, "interrupted before the end (partial report)")
	}
	for _, e := range r.Errors {
		why = append(why, "harness: "+e)
	}
	for _, c := range r.Checks {
		if c.Verdict == Fail {
			why = append(why, c.Name+": "+c.Detail)
		}
	}
	if len(why) == 0 {
		r.Verdict = Pass
		return
	}
	r.Verdict = "FAIL: " + strings.Join(why, "; ")
}

// write writes report.json and summary.txt, each through a temporary
// file so a reader never sees half a report.
func (r *Report) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	var sb strings.Builder
	r.Summary(&sb)
	return errors.Join(
		writeAtomic(filepath.Join(dir, ReportJSON), append(b, '\n')),
		writeAtomic(filepath.Join(dir, ReportSummary), []byte(sb.String())),
	)
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Summary writes the human summary; its last line is the verdict.
func (r *Report) Summary(w io.Writer) {
	fmt.Fprintf(w, "manta chaos: scenario %s, seed %d, %d heads, %d nodes, faults for %s (workloads ran %.1fs)\n",
		r.Scenario, r.Seed, r.Heads, r.Nodes, r.Duration, r.RunSeconds)
	if r.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: this report is partial")
	}
	fmt.Fprintf(w, "partition mechanism: %s\n", r.Partition.Detail)
	for _, s := range r.SkippedFaults {
		fmt.Fprintf(w, "skipped fault: %s\n", s)
	}
	for _, wl := range r.Workloads {
		fmt.Fprintf(w, "workload %s: %d attempted, %d ok, %d failed, %d indeterminate; %.0f ok ops/s; max latency %.0fms\n",
			wl.Name, wl.Attempted, wl.OK, wl.Failed, wl.Indeterminate, wl.OpsPerSec, wl.MaxLatencyMs)
		if len(wl.Outcomes) > 0 {
			names := make([]string, 0, len(wl.Outcomes))
			for o := range wl.Outcomes {
				names = append(names, o)
			}
			sort.Strings(names)
			for i, o := range names {
				names[i] = fmt.Sprintf("%d %s", wl.Outcomes[o], o)
			}
			fmt.Fprintf(w, "  failed by outcome: %s\n", strings.Join(names, ", "))
		}
		if s := wl.Recovery; s.Count > 0 {
			fmt.Fprintf(w, "  recovery (fault to its next ok op): min %.0fms, median %.0fms, max %.0fms over %d faults\n",
				s.MinMs, s.MedianMs, s.MaxMs, s.Count)
		}
	}
	fmt.Fprintf(w, "faults: %d\n", len(r.Faults))
	for _, f := range r.Faults {
		fmt.Fprintf(w, "  %2d  %7.2fs  %-14s", f.Seq, f.At, f.Fault)
		if f.Target != "" {
			fmt.Fprintf(w, " %s (%s, pid %d) %s for %.0fms", f.Target, f.Role, f.PID, f.Action, f.HoldMs)
		}
		if f.RecoveryMs != nil && f.MeasuredBy != "" {
			fmt.Fprintf(w, "; next ok %s op after %.0fms", f.MeasuredBy, *f.RecoveryMs)
		} else if f.RecoveryMs != nil {
			fmt.Fprintf(w, "; next ok op after %.0fms", *f.RecoveryMs)
		} else if f.Error == "" {
			fmt.Fprint(w, "; no ok op after it")
		}
		if f.WholeAfterMs != nil {
			fmt.Fprintf(w, "; whole %.0fms after undo", *f.WholeAfterMs)
		}
		if f.Error != "" {
			fmt.Fprintf(w, "; ERROR %s", f.Error)
		}
		fmt.Fprintln(w)
	}
	if r.Recovery.Count > 0 {
		fmt.Fprintf(w, "recovery (fault to next ok op of what it hit): min %.0fms, median %.0fms, max %.0fms over %d faults\n",
			r.Recovery.MinMs, r.Recovery.MedianMs, r.Recovery.MaxMs, r.Recovery.Count)
	}
	fmt.Fprintf(w, "ops/s (ok, all workloads): %.0f\n", r.OpsPerSec)
	fmt.Fprintln(w, "checks:")
	for _, c := range r.Checks {
		fmt.Fprintf(w, "  %-7s %-26s %s\n", c.Verdict, c.Name, c.Detail)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "harness error: %s\n", e)
	}
	fmt.Fprintln(w, r.Verdict)
}

// prepareReportDir makes dir, refusing one with files in it unless force;
// with force it removes only what a run writes there.
func prepareReportDir(dir string, force bool) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(dir, 0o755)
	case err != nil:
		return fmt.Errorf("report directory: %w", err)
	case len(entries) == 0:
		return nil
	case !force:
		return fmt.Errorf("%w: %s holds %d entries; use --force to overwrite a previous report", ErrReportDirNotEmpty, dir, len(entries))
	}
	for _, name := range []string{ReportJSON, ReportSummary, reportLinViz, reportCluster} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}
