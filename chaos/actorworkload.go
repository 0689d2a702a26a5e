package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// chaosCounter is the actor workload's actor: a counter that names its
// incarnation, so a caller can tell a restart (state reset) from a lost or
// repeated call.
type chaosCounter struct {
	instance uint64
	n        int
}

// CounterReply is what Incr returns: the incarnation and its count after
// this call.
type CounterReply struct {
	Instance uint64
	N        int
}

var (
	chaosCounterClass = ray.Actor0("manta.chaos.Counter", func(context.Context) (*chaosCounter, error) {
		return &chaosCounter{instance: rand.Uint64() | 1}, nil
	})
	chaosIncr = ray.Method0(chaosCounterClass, "Incr", func(c *chaosCounter, _ context.Context) (CounterReply, error) {
		c.n++
		return CounterReply{Instance: c.instance, N: c.n}, nil
	})
)

// Actor call semantics a client's actor is created with.
const (
	atMostOnce  = "at-most-once"  // MaxTaskRetries(0): a call that may have run is never resent
	atLeastOnce = "at-least-once" // MaxTaskRetries(-1): a call is resent until it returns
)

// Outcomes of an actor call other than a value.
const (
	outcomeActorDied = "actor-died" // ray.ErrActorDied
)

// ActorWorkload is the harness's driver calling counter actors: each client
// creates one actor that restarts forever (MaxRestarts(-1)), alternately
// at-most-once and at-least-once, and calls Incr in a closed loop. The
// checker replays what each caller saw against the actor's semantics:
//   - within one incarnation counts only grow, and never by more than one
//     plus the calls that failed since the last success (a failed
//     at-most-once call may have run once, never twice);
//   - a new incarnation starts from scratch (state reset, as in Ray): its
//     first count is at most one plus those failed calls;
//   - an at-least-once call never fails; an at-most-once call fails only
//     with ErrActorDied, and only when the run kills workers or raylets;
//   - no call outlives its bound.
type ActorWorkload struct {
	Clients   int           // default 2
	OpTimeout time.Duration // default DefaultTaskOpTimeout
	// Rate paces each client's calls (per second), so the actors leave the
	// node's CPUs to the task workload; default 200, negative unpaced.
	Rate int
	// Accept lists the outcomes the run's faults make legitimate for
	// at-most-once actors.
	Accept map[string]bool
	Seed   uint64

	opLog
	// violations of the call semantics, by client.
	violations []string
	restarts   int // incarnations seen beyond each client's first
	bySem      map[string]int
}

// NewActorWorkload returns an actor workload with its defaults.
func NewActorWorkload(seed uint64) *ActorWorkload {
	return &ActorWorkload{Clients: 2, OpTimeout: DefaultTaskOpTimeout, Rate: 200, Seed: seed, Accept: map[string]bool{},
		bySem: map[string]int{}}
}

// Name is "actors".
func (w *ActorWorkload) Name() string { return "actors" }

// Run starts the clients and waits for them.
func (w *ActorWorkload) Run(ctx context.Context, env *Env) error {
	runClients(w.Clients, func(id int) { w.client(ctx, env, id) })
	return nil
}

// callerState is what one client has seen of its actor.
type callerState struct {
	sem          string
	instance     uint64
	n            int
	failedSince  int // calls that failed since the last success
	incarnations int
}

func (w *ActorWorkload) client(ctx context.Context, env *Env, id int) {
	sem := atMostOnce
	retries := 0
	if id%2 == 1 {
		sem, retries = atLeastOnce, -1
	}
	// Creation goes through the control plane: retry it through faults.
	var h ray.ActorHandle[*chaosCounter]
	for {
		if ctx.Err() != nil {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, w.OpTimeout)
		var err error
		h, err = chaosCounterClass.Remote(cctx, ray.MaxRestarts(-1), ray.MaxTaskRetries(retries), ray.NumCPUs(0))
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond): // pacing between creation attempts, not synchronisation
		}
	}
	defer func() {
		kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = ray.Kill(kctx, h, true)
		cancel()
	}()
	st := &callerState{sem: sem}
	var pace <-chan time.Time
	if w.Rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(w.Rate))
		defer t.Stop()
		pace = t.C
	}
	for ctx.Err() == nil {
		if pace != nil {
			select {
			case <-pace:
			case <-ctx.Done():
				return
			}
		}
		opCtx, cancel := context.WithTimeout(ctx, w.OpTimeout)
		call := time.Now()
		got, err := ray.Get(opCtx, chaosIncr.Remote(opCtx, h))
		ret := time.Now()
		cancel()
		if err != nil && ctx.Err() != nil {
			return // cut short by the end of the run
		}
		w.record(env, id, st, got, err, call, ret)
	}
}

func (w *ActorWorkload) record(env *Env, id int, st *callerState, got CounterReply, err error, call, ret time.Time) {
	lat := ret.Sub(call)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Attempted++
	w.stats.MaxLatency = max(w.stats.MaxLatency, lat)
	desc := fmt.Sprintf("client %d (%s) at %.2fs", id, st.sem, env.Since(call).Seconds())
	if lat > w.OpTimeout+hangGrace && len(w.stats.Hangs) < 20 {
		w.stats.Hangs = append(w.stats.Hangs, fmt.Sprintf("actor call of %s (took %v)", desc, lat.Round(time.Millisecond)))
	}
	if err != nil {
		st.failedSince++
		o := outcomeOther
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			o = outcomeTimeout
			if len(w.stats.Hangs) < 20 {
				w.stats.Hangs = append(w.stats.Hangs, fmt.Sprintf("actor call of %s: no result within %v", desc, w.OpTimeout))
			}
		case errors.Is(err, ray.ErrActorDied):
			o = outcomeActorDied
		}
		w.failedLocked(st.sem+" "+o, desc+": "+err.Error())
		return
	}
	env.Succeeded(w.Name(), call, ret)
	w.stats.OK++
	w.bySem[st.sem]++
	bound := 1 + st.failedSince
	switch {
	case got.Instance != st.instance:
		if st.instance != 0 {
			w.restarts++
		}
		if got.N < 1 || got.N > bound {
			w.violate(fmt.Sprintf("%s: a new incarnation's first count is %d, want 1..%d (%d calls failed since the last success)",
				desc, got.N, bound, st.failedSince))
		}
		st.instance = got.Instance
	case got.N <= st.n:
		w.violate(fmt.Sprintf("%s: count %d after %d in the same incarnation (a call ran twice or went back)", desc, got.N, st.n))
	case got.N-st.n > bound:
		w.violate(fmt.Sprintf("%s: count jumped from %d to %d with %d calls failed since (a call ran more than once)",
			desc, st.n, got.N, st.failedSince))
	}
	st.n, st.failedSince = got.N, 0
}

func (w *ActorWorkload) violate(s string) {
	if len(w.violations) < 20 {
		w.violations = append(w.violations, s)
	}
}

// Check judges what the callers saw.
func (w *ActorWorkload) Check(context.Context, *Env, CheckOptions) []CheckResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	sem := CheckResult{Name: "actor-call-semantics"}
	switch {
	case len(w.violations) > 0:
		sem.Verdict, sem.Detail = Fail, strings.Join(w.violations, "; ")
	case w.stats.OK == 0:
		sem.Verdict, sem.Detail = Fail, "no actor call returned a value"
	default:
		sem.Verdict = Pass
		sem.Detail = fmt.Sprintf("%d at-most-once and %d at-least-once calls consistent; %d restarts seen",
			w.bySem[atMostOnce], w.bySem[atLeastOnce], w.restarts)
	}
	errs := CheckResult{Name: "actor-errors-documented", Verdict: Pass}
	var bad, seen []string
	keys := make([]string, 0, len(w.outcomes))
	for k := range w.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		n := w.outcomes[k]
		s, o, _ := strings.Cut(k, " ")
		switch {
		case o == outcomeTimeout:
			continue // judged by no-hangs
		case s == atMostOnce && w.Accept[o]:
			seen = append(seen, fmt.Sprintf("%d %s (accepted)", n, k))
		default:
			bad = append(bad, fmt.Sprintf("%d %s: %s", n, k, strings.Join(w.examples[k], "; ")))
		}
	}
	switch {
	case len(bad) > 0:
		errs.Verdict, errs.Detail = Fail, "errors not allowed by the actors' semantics and this run's faults: "+strings.Join(bad, "; ")
	case len(seen) > 0:
		errs.Detail = strings.Join(seen, ", ")
	default:
		errs.Detail = "no errors"
	}
	return []CheckResult{sem, errs}
}

// acceptedActorErrors is which errors a run's faults make legitimate for
// at-most-once calls: a call in flight when its actor's worker (or node)
// died may have run, so it is not resent and fails with ErrActorDied. Head
// faults make none legitimate: calls go straight to the actor's worker.
func acceptedActorErrors(faults []string) map[string]bool {
	acc := map[string]bool{}
	for _, f := range faults {
		if f == faultKillWorker || f == faultKillRaylet || f == faultKillOwner {
			acc[outcomeActorDied] = true
		}
	}
	return acc
}
