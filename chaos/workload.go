package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
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

// opLog is the bookkeeping the driver workloads (tasks, actors, lineage)
// share: their operation counts and the operations that returned no right
// value, by outcome, with a few examples each. Embedded; mu guards the
// embedding workload's other fields too.
type opLog struct {
	mu       sync.Mutex
	stats    OpStats
	outcomes map[string]int
	examples map[string][]string
}

// Stats counts the operations so far.
func (l *opLog) Stats() OpStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Hangs = append([]string(nil), s.Hangs...)
	return s
}

// Outcomes counts the operations that returned no right value, by outcome.
func (l *opLog) Outcomes() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.outcomes))
	for k, v := range l.outcomes {
		out[k] = v
	}
	return out
}

// failedLocked counts a failed operation under outcome and keeps desc as
// one of its first five examples. mu is held.
func (l *opLog) failedLocked(outcome, desc string) {
	if l.outcomes == nil {
		l.outcomes, l.examples = map[string]int{}, map[string][]string{}
	}
	l.stats.Failed++
	l.outcomes[outcome]++
	if len(l.examples[outcome]) < 5 {
		l.examples[outcome] = append(l.examples[outcome], desc)
	}
}

// runClients runs n clients and waits for them all to return.
func runClients(n int, client func(id int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client(i)
		}()
	}
	wg.Wait()
}

// judgeLocked turns the failed outcomes into a check: timeouts are left
// to no-hangs, accepted outcomes are listed, any other fails the check;
// with none, it passes with okDetail (or fails when nothing succeeded).
// mu is held.
func (l *opLog) judgeLocked(name string, accept map[string]bool, none, okDetail string) CheckResult {
	res := CheckResult{Name: name}
	keys := make([]string, 0, len(l.outcomes))
	for k := range l.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad, accepted []string
	for _, k := range keys {
		switch {
		case k == outcomeTimeout:
			continue // judged by no-hangs
		case accept[k]:
			accepted = append(accepted, fmt.Sprintf("%d %s (accepted)", l.outcomes[k], k))
		default:
			bad = append(bad, fmt.Sprintf("%d %s: %s", l.outcomes[k], k, strings.Join(l.examples[k], "; ")))
		}
	}
	switch {
	case len(bad) > 0:
		res.Verdict, res.Detail = Fail, strings.Join(bad, "; ")
	case l.stats.OK == 0:
		res.Verdict, res.Detail = Fail, none
	default:
		res.Verdict, res.Detail = Pass, okDetail
		if len(accepted) > 0 {
			res.Detail += "; " + strings.Join(accepted, ", ")
		}
	}
	return res
}
