package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/manta-ray/manta/internal/tlsconfig"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
	"github.com/manta-ray/manta/sdk/ray"
)

// DefaultTaskOpTimeout bounds one task operation (every Get of a chain, a
// fan-out or a blob round trip): past it the Get is a hang. It is longer
// than a KV operation's bound because a task whose raylet died may wait
// for a lease elsewhere and run again, up to its retries.
const DefaultTaskOpTimeout = 20 * time.Second

// Task operation kinds.
const (
	taskOpChain  = "chain"
	taskOpFanOut = "fan-out"
	taskOpBlob   = "blob"
	taskOpCancel = "cancel"
)

// Outcomes of a task operation other than the right value. The documented
// errors are those the SDK promises (see sdk/ray/errors.go); which of them
// a run accepts depends on its faults (see acceptedTaskErrors).
const (
	outcomeWorkerCrashed = "worker-crashed" // ray.ErrWorkerCrashed: every attempt's worker died
	outcomeObjectLost    = "object-lost"    // ray.ErrObjectLost: no copy left, no lineage yet
	outcomeTimeout       = "timeout"        // no result within the bound: a hang
	outcomeOther         = "other-error"    // anything else: never acceptable
	outcomeWrong         = "wrong-value"    // never acceptable
)

// TaskWorkload is the harness process acting as a driver: clients submit
// task graphs whose results are known in advance and Get them.
//   - chain: ChainLength tasks, each adding 1 to the previous one's result
//     (passed by reference), from a random start;
//   - fan-out: FanOut squares of consecutive numbers, summed by a tree of
//     add tasks (fan-in by reference);
//   - blob: a task returns 160 KiB (kept in its node's object store), a
//     second task on any node fetches it and returns its digest;
//   - cancel: four tasks of 0-60 ms, each cancelled 0-40 ms after its
//     submission (one in four with Force): each Get must be its right
//     value (it finished first) or ErrTaskCancelled, nothing else.
//
// After the run every raylet must have all its CPUs free again: no
// cancelled (or any) task keeps one.
//
// Every Get must return the right value or a documented error the run
// accepts; a wrong value is always a violation, and so is a Get that does
// not return within OpTimeout.
type TaskWorkload struct {
	// Clients is the number of concurrent driver goroutines; default 3.
	Clients     int
	ChainLength int // default 6
	FanOut      int // default 8
	// OpTimeout bounds one operation; default DefaultTaskOpTimeout.
	OpTimeout time.Duration
	// Accept lists the outcomes (outcomeWorkerCrashed, outcomeObjectLost)
	// that the run's faults make legitimate.
	Accept map[string]bool
	Seed   uint64

	opLog
	byKind    map[string]int // ok operations per kind
	cancelled int            // cancelled tasks whose Get said so
}

// NewTaskWorkload returns a task workload with its defaults, accepting no
// error.
func NewTaskWorkload(seed uint64) *TaskWorkload {
	return &TaskWorkload{Clients: 3, ChainLength: 6, FanOut: 8, OpTimeout: DefaultTaskOpTimeout, Seed: seed,
		Accept: map[string]bool{}, byKind: map[string]int{}}
}

// Name is "tasks".
func (w *TaskWorkload) Name() string { return "tasks" }

// Run starts the clients and waits for them. The process must already be
// a driver of the cluster (ray.Init).
func (w *TaskWorkload) Run(ctx context.Context, env *Env) error {
	runClients(w.Clients, func(id int) { w.client(ctx, env, id) })
	return nil
}

// client runs operations in a closed loop: 40% chains, 35% fan-outs, 15%
// blobs, 10% cancels.
func (w *TaskWorkload) client(ctx context.Context, env *Env, id int) {
	rng := rand.New(rand.NewPCG(w.Seed, 0x7461736b+uint64(id)))
	for ctx.Err() == nil {
		start := rng.IntN(1_000_000)
		switch r := rng.IntN(20); {
		case r < 2:
			seed := rng.Uint64()
			w.do(ctx, env, taskOpCancel, start, func(ctx context.Context) (int, int, error) {
				return w.cancels(ctx, start, seed)
			})
		case r < 10:
			w.do(ctx, env, taskOpChain, start, func(ctx context.Context) (int, int, error) {
				return w.chain(ctx, start)
			})
		case r < 17:
			w.do(ctx, env, taskOpFanOut, start, func(ctx context.Context) (int, int, error) {
				return w.fanOut(ctx, start)
			})
		default:
			w.do(ctx, env, taskOpBlob, start, func(ctx context.Context) (int, int, error) {
				ref := taskDigest.Remote(ctx, taskBlob.Remote(ctx, ray.Val(start), ray.Val(blobSize)))
				got, err := ray.Get(ctx, ref)
				return got, digest(blob(start, blobSize)), err
			})
		}
	}
}

// cancels submits four slow tasks and cancels each after a while; the
// operation's value is their sum, with a cancelled task counting as its
// right value (its Get said ErrTaskCancelled, which is allowed).
func (w *TaskWorkload) cancels(ctx context.Context, start int, seed uint64) (got, want int, err error) {
	rng := rand.New(rand.NewPCG(seed, 0x63616e63))
	refs := make([]ray.ObjectRef[int], 4)
	for i := range refs {
		refs[i] = taskSlowAdd1.Remote(ctx, ray.Val(start+i), ray.Val(rng.IntN(61)))
		want += start + i + 1
	}
	for _, ref := range refs {
		time.Sleep(time.Duration(rng.IntN(11)) * time.Millisecond) // the shape of a user's cancel, not synchronisation
		var opts []ray.CancelOption
		if rng.IntN(4) == 0 {
			opts = append(opts, ray.Force())
		}
		if err := ray.Cancel(ctx, ref, opts...); err != nil {
			return 0, want, err
		}
	}
	for i, ref := range refs {
		v, err := ray.Get(ctx, ref)
		switch {
		case errors.Is(err, ray.ErrTaskCancelled):
			v = start + i + 1
			w.mu.Lock()
			w.cancelled++
			w.mu.Unlock()
		case err != nil:
			return 0, want, err
		}
		got += v
	}
	return got, want, nil
}

func (w *TaskWorkload) chain(ctx context.Context, start int) (got, want int, err error) {
	ref := taskAdd1.Remote(ctx, ray.Val(start))
	for range w.ChainLength - 1 {
		ref = taskAdd1.Remote(ctx, ref)
	}
	got, err = ray.Get(ctx, ref)
	return got, start + w.ChainLength, err
}

func (w *TaskWorkload) fanOut(ctx context.Context, start int) (got, want int, err error) {
	start %= 1000 // keeps the squares' sum small
	level := make([]ray.ObjectRef[int], w.FanOut)
	for i := range level {
		level[i] = taskSquare.Remote(ctx, ray.Val(start+i))
		want += (start + i) * (start + i)
	}
	for len(level) > 1 {
		var next []ray.ObjectRef[int]
		for i := 0; i+1 < len(level); i += 2 {
			next = append(next, taskAdd.Remote(ctx, level[i], level[i+1]))
		}
		if len(level)%2 == 1 {
			next = append(next, level[len(level)-1])
		}
		level = next
	}
	got, err = ray.Get(ctx, level[0])
	return got, want, err
}

// do runs one operation under the bound and records its outcome.
func (w *TaskWorkload) do(ctx context.Context, env *Env, kind string, start int, op func(context.Context) (got, want int, err error)) {
	opCtx, cancel := context.WithTimeout(ctx, w.OpTimeout)
	call := time.Now()
	got, want, err := op(opCtx)
	ret := time.Now()
	cancel()
	if err != nil && ctx.Err() != nil {
		return // cut short by the end of the run: neither right nor wrong
	}
	outcome := classifyTaskResult(got, want, err)
	if outcome == "" {
		env.Succeeded(w.Name(), call, ret)
	}
	lat := ret.Sub(call)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Attempted++
	w.stats.MaxLatency = max(w.stats.MaxLatency, lat)
	if outcome == "" {
		w.stats.OK++
		w.byKind[kind]++
		return
	}
	desc := fmt.Sprintf("%s from %d at %.2fs", kind, start, env.Since(call).Seconds())
	switch outcome {
	case outcomeWrong:
		desc += fmt.Sprintf(": got %d, want %d", got, want)
	case outcomeTimeout:
		desc += fmt.Sprintf(": no result within %v", w.OpTimeout)
	default:
		desc += ": " + err.Error()
	}
	// A Get that ignored its deadline is a hang whatever it returned.
	if (outcome == outcomeTimeout || lat > w.OpTimeout+hangGrace) && len(w.stats.Hangs) < 20 {
		w.stats.Hangs = append(w.stats.Hangs, fmt.Sprintf("task %s (took %v)", desc, lat.Round(time.Millisecond)))
	}
	w.failedLocked(outcome, desc)
}

// classifyTaskResult names the outcome of an operation: "" for the right
// value.
func classifyTaskResult(got, want int, err error) string {
	switch {
	case err == nil && got == want:
		return ""
	case err == nil:
		return outcomeWrong
	case errors.Is(err, context.DeadlineExceeded):
		return outcomeTimeout
	case errors.Is(err, ray.ErrWorkerCrashed):
		return outcomeWorkerCrashed
	case errors.Is(err, ray.ErrObjectLost):
		return outcomeObjectLost
	default:
		return outcomeOther
	}
}

// Check judges what the clients saw: every value right, every error
// documented and accepted for this run's faults.
func (w *TaskWorkload) Check(ctx context.Context, env *Env, _ CheckOptions) []CheckResult {
	return append(w.check(), checkCPUsFree(ctx, env))
}

// checkCPUsFree waits (a bounded while: leases linger, killed workers are
// reaped) until every running raylet has all its CPUs free.
func checkCPUsFree(ctx context.Context, env *Env) CheckResult {
	res := CheckResult{Name: "cpus-free-after"}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var busy []string
		for _, n := range env.Cluster.Nodes() {
			if !n.Running || n.Address == "" {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := raylet.Status(sctx, n.Address, env.Cluster.Token(), env.Cluster.TLS().DialOption(tlsconfig.RoleNode))
			cancel()
			if err != nil {
				busy = append(busy, fmt.Sprintf("%s: status: %v", n.ID, err))
				continue
			}
			if st.Available[resources.CPU] < st.Total[resources.CPU] {
				var ls []string
				for _, l := range st.Leases {
					ls = append(ls, fmt.Sprintf("{%s} of %s pid %d for %dms (actor %q, blocked %v)", l.Shape, l.OwnerAddress, l.WorkerPid, l.AgeMs, l.ActorId, l.Blocked))
				}
				busy = append(busy, fmt.Sprintf("%s: %g of %g CPUs free, leases %s", n.ID, st.Available[resources.CPU], st.Total[resources.CPU], strings.Join(ls, ", ")))
			}
		}
		if len(busy) == 0 {
			res.Verdict, res.Detail = Pass, "every running raylet has all its CPUs free"
			return res
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			res.Verdict, res.Detail = Fail, "CPUs still taken 15 s after the run: "+strings.Join(busy, "; ")
			return res
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *TaskWorkload) check() []CheckResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	right := CheckResult{Name: "task-results-right"}
	var kinds []string
	for _, k := range []string{taskOpChain, taskOpFanOut, taskOpBlob, taskOpCancel} {
		kinds = append(kinds, fmt.Sprintf("%d %ss", w.byKind[k], k))
	}
	kinds = append(kinds, fmt.Sprintf("%d tasks cancelled", w.cancelled))
	if n := w.outcomes[outcomeWrong]; n > 0 {
		right.Verdict = Fail
		right.Detail = fmt.Sprintf("%d wrong values: %s", n, strings.Join(w.examples[outcomeWrong], "; "))
	} else {
		right.Verdict = Pass
		right.Detail = "every value returned was right: " + strings.Join(kinds, ", ")
	}
	if w.stats.OK == 0 && right.Verdict == Pass {
		right.Verdict, right.Detail = Fail, "no task operation returned a value"
	}

	errs := CheckResult{Name: "task-errors-documented"}
	var bad, seen []string
	names := make([]string, 0, len(w.outcomes))
	for o := range w.outcomes {
		names = append(names, o)
	}
	sort.Strings(names)
	for _, o := range names {
		n := w.outcomes[o]
		switch {
		case o == outcomeWrong || o == outcomeTimeout:
			continue // judged by task-results-right and no-hangs
		case w.Accept[o]:
			seen = append(seen, fmt.Sprintf("%d %s (accepted)", n, o))
		default:
			bad = append(bad, fmt.Sprintf("%d %s: %s", n, o, strings.Join(w.examples[o], "; ")))
		}
	}
	var accepted []string
	for o, ok := range w.Accept {
		if ok {
			accepted = append(accepted, o)
		}
	}
	sort.Strings(accepted)
	acc := "none"
	if len(accepted) > 0 {
		acc = strings.Join(accepted, ", ")
	}
	switch {
	case len(bad) > 0:
		errs.Verdict = Fail
		errs.Detail = fmt.Sprintf("errors not accepted for this run's faults (accepted: %s): %s", acc, strings.Join(bad, "; "))
	case len(seen) > 0:
		errs.Verdict = Pass
		errs.Detail = strings.Join(seen, ", ")
	default:
		errs.Verdict = Pass
		errs.Detail = "no errors (accepted: " + acc + ")"
	}
	return []CheckResult{right, errs}
}

// acceptedTaskErrors is which documented errors a run's faults make
// legitimate. A killed worker fails its task's attempt; the owner retries
// (ray.DefaultMaxRetries), so ErrWorkerCrashed comes back only when every
// attempt's worker was killed: possible when kills come fast. A killed
// raylet kills its workers too; the objects only its store held are
// rebuilt from lineage, so ErrObjectLost is never legitimate here (nothing
// in this workload is made by Put). Head faults make no task error
// legitimate: the control plane is off the task path.
func acceptedTaskErrors(faults []string) map[string]bool {
	acc := map[string]bool{}
	for _, f := range faults {
		switch f {
		case faultKillWorker, faultKillOwner:
			acc[outcomeWorkerCrashed] = true
		case faultKillRaylet:
			acc[outcomeWorkerCrashed] = true
		}
	}
	return acc
}

// acceptedLineageErrors is which errors a run's faults make legitimate for
// the lineage workload: a task whose every attempt's worker was killed
// (worker-crashed), never a lost object — lost stages are rebuilt.
func acceptedLineageErrors(faults []string) map[string]bool {
	acc := map[string]bool{}
	for _, f := range faults {
		if f == faultKillWorker || f == faultKillRaylet || f == faultKillOwner {
			acc[outcomeWorkerCrashed] = true
		}
	}
	return acc
}
