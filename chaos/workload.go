package chaos

import (
	"context"
	"time"
)

// A Workload drives one kind of client traffic against the cluster while
// the nemesis works, records what it saw, and checks it afterwards. The KV
// workload is the first; tasks, actors and lineage add theirs as those
// components land.
type Workload interface {
	Name() string
	// Run issues operations until ctx ends, reporting each success with
	// env.Succeeded, and returns once all its goroutines have.
	Run(ctx context.Context, env *Env) error
	// Stats counts the operations so far; safe during Run.
	Stats() OpStats
	// Check runs once Run has returned and the cluster is whole again.
	Check(ctx context.Context, env *Env, o CheckOptions) []CheckResult
}

// CheckOptions are what checkers may need from the run.
type CheckOptions struct {
	// ReportDir receives artefacts such as a linearizability
	// visualisation; empty writes none.
	ReportDir string
	// LinearizabilityTimeout bounds the porcupine search.
	LinearizabilityTimeout time.Duration
}

// OpStats counts a workload's operations. Failed operations are known not
// to have taken effect (a read that errored); indeterminate ones may have
// (a write whose reply never came).
type OpStats struct {
	Attempted     int           `json:"attempted"`
	OK            int           `json:"ok"`
	Failed        int           `json:"failed"`
	Indeterminate int           `json:"indeterminate"`
	MaxLatency    time.Duration `json:"-"`
	// Hangs are operations that outlived their timeout by hangGrace.
	Hangs []string `json:"hangs,omitempty"`
}

// CheckResult is one checker's verdict.
type CheckResult struct {
	Name    string `json:"name"`
	Verdict string `json:"verdict"` // PASS, FAIL, UNKNOWN (could not decide), SKIP
	Detail  string `json:"detail,omitempty"`
}

// Verdicts of a check.
const (
	Pass    = "PASS"
	Fail    = "FAIL"
	Unknown = "UNKNOWN"
	Skip    = "SKIP"
)
