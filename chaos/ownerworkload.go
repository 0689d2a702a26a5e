package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// The owner workload: objects that outlive their owner. Each operation
// runs a task that submits blob subtasks and returns refs to their
// results (its worker owns them, the harness's driver borrows them),
// notes that worker as an owner for the kill-owner fault, holds the refs
// a while (the window in which the fault kills the owner), then Gets
// every blob. The control plane adopts a dead owner's recorded objects:
// every Get returns the right bytes; ErrOwnerDied is a violation (the
// blobs are stored, so recorded, before their refs are handed out).

// orphanSize is above the inline limit: every blob is stored, so recorded.
const orphanSize = 256 << 10

// chaosOrphans is what taskOrphans returns: refs its worker owns.
type chaosOrphans struct {
	Pid  int
	Refs []ray.ObjectRef[[]byte]
}

var taskOrphans = ray.Func2("manta.chaos.orphans", func(ctx context.Context, seed, k int) (chaosOrphans, error) {
	o := chaosOrphans{Pid: os.Getpid()}
	for i := range k {
		o.Refs = append(o.Refs, taskBlob.Remote(ctx, ray.Val(seed+i), ray.Val(orphanSize)))
	}
	if _, _, err := ray.Wait(ctx, o.Refs, k, 0); err != nil {
		return chaosOrphans{}, err
	}
	return o, nil
})

// outcomeOwnerDied: ray.ErrOwnerDied, for an object whose owner died.
const outcomeOwnerDied = "owner-died"

// OwnerWorkload is the owner workload.
type OwnerWorkload struct {
	Clients   int // default 1
	Blobs     int // per operation, default 4
	OpTimeout time.Duration
	// Accept lists outcomes the run's faults make legitimate.
	Accept map[string]bool
	Seed   uint64

	opLog
	afterDeath int // blobs read right after their owner was dead
}

// NewOwnerWorkload returns an owner workload with its defaults.
func NewOwnerWorkload(seed uint64) *OwnerWorkload {
	return &OwnerWorkload{Clients: 1, Blobs: 4, OpTimeout: DefaultTaskOpTimeout, Seed: seed, Accept: map[string]bool{}}
}

// Name is "owners".
func (w *OwnerWorkload) Name() string { return "owners" }

// Run starts the clients and waits for them.
func (w *OwnerWorkload) Run(ctx context.Context, env *Env) error {
	runClients(w.Clients, func(id int) { w.client(ctx, env, id) })
	return nil
}

func (w *OwnerWorkload) client(ctx context.Context, env *Env, id int) {
	rng := rand.New(rand.NewPCG(w.Seed, 0x6f776e+uint64(id)))
	for ctx.Err() == nil {
		seed := rng.IntN(1 << 30)
		hold := time.Duration(500+rng.IntN(2000)) * time.Millisecond
		opCtx, cancel := context.WithTimeout(ctx, w.OpTimeout+hold)
		call := time.Now()
		o, err := ray.Get(opCtx, taskOrphans.Remote(opCtx, ray.Val(seed), ray.Val(w.Blobs)))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return
			}
			w.record(env, fmt.Sprintf("client %d orphans task %d", id, seed), classifyOwnerResult(err), err, call, time.Now(), 0)
			continue
		}
		env.noteOwner(o.Pid)
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		dead := syscall.Kill(o.Pid, 0) != nil
		for i, r := range o.Refs {
			b, err := ray.Get(opCtx, r)
			if err != nil && ctx.Err() != nil {
				cancel()
				return
			}
			outcome := classifyOwnerResult(err)
			if err == nil && digest(b) != digest(blob(seed+i, orphanSize)) {
				outcome = outcomeWrong
			}
			if outcome == "" && dead {
				w.mu.Lock()
				w.afterDeath++
				w.mu.Unlock()
			}
			w.record(env, fmt.Sprintf("client %d blob %d of owner %d (dead: %v)", id, seed+i, o.Pid, dead), outcome, err, call, time.Now(), hold)
			r.Release()
		}
		cancel()
	}
}

func classifyOwnerResult(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.DeadlineExceeded):
		return outcomeTimeout
	case errors.Is(err, ray.ErrOwnerDied):
		return outcomeOwnerDied
	case errors.Is(err, ray.ErrWorkerCrashed):
		return outcomeWorkerCrashed
	case errors.Is(err, ray.ErrObjectLost):
		return outcomeObjectLost
	default:
		return outcomeOther
	}
}

func (w *OwnerWorkload) record(env *Env, desc, outcome string, err error, call, ret time.Time, hold time.Duration) {
	lat := ret.Sub(call) - hold
	if outcome == "" {
		env.Succeeded(w.Name(), call, ret)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Attempted++
	w.stats.MaxLatency = max(w.stats.MaxLatency, lat)
	if outcome == "" {
		w.stats.OK++
		return
	}
	desc += fmt.Sprintf(" at %.2fs", env.Since(call).Seconds())
	switch {
	case outcome == outcomeWrong:
		desc += ": wrong bytes"
	case err != nil:
		desc += ": " + err.Error()
	}
	if (outcome == outcomeTimeout || lat > w.OpTimeout+hangGrace) && len(w.stats.Hangs) < 20 {
		w.stats.Hangs = append(w.stats.Hangs, fmt.Sprintf("owners %s (took %v)", desc, lat.Round(time.Millisecond)))
	}
	w.failedLocked(outcome, desc)
}

// Check judges the Gets: right bytes, and no object lost with its owner.
func (w *OwnerWorkload) Check(context.Context, *Env, CheckOptions) []CheckResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return []CheckResult{w.judgeLocked("borrowed-objects-outlive-owners", w.Accept, "no borrowed object was read",
		fmt.Sprintf("%d borrowed objects read right, %d of them after their owner was dead", w.stats.OK, w.afterDeath))}
}

// acceptedOwnerErrors: a killed worker may be running the orphans task
// itself (retried; worker-crashed once its retries are gone), never an
// object lost with its owner.
func acceptedOwnerErrors(faults []string) map[string]bool {
	acc := map[string]bool{}
	for _, f := range faults {
		if f == faultKillWorker || f == faultKillRaylet || f == faultKillOwner {
			acc[outcomeWorkerCrashed] = true
		}
		if f == faultKillRaylet {
			// A raylet kill takes the copies and, with the owner's worker
			// on it, the owner: the blobs are rebuilt, except while their
			// lineage is out of retries.
			acc[outcomeObjectLost] = true
		}
	}
	return acc
}
