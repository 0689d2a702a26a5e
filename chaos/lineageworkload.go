package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/sdk/ray"
)

// taskStage is the lineage workload's chain step: stageSize bytes derived
// from the previous stage's, so a lost stage can only come back right by
// replaying the stages before it.
var taskStage = ray.Func2("manta.chaos.stage", func(_ context.Context, prev []byte, seed int) ([]byte, error) {
	time.Sleep(taskWork)
	return chainStage(prev, seed), nil
})

// stageSize is above the inline limit: every stage lives in the object
// store of the node that ran it.
const stageSize = 256 << 10

func chainStage(prev []byte, seed int) []byte {
	return blob(digest(prev)^seed, stageSize)
}

// LineageWorkload builds chains whose intermediate results exist only in
// raylets' object stores, keeps just the last stage's ref, waits a moment
// (so a raylet kill can take stages with it), then Gets a digest of the
// last stage. Lost stages must be rebuilt from lineage: every Get returns
// the right digest, and ErrObjectLost is a violation (nothing here was
// made by Put). Operations whose last stage needed more than one attempt
// are counted as rebuilt.
type LineageWorkload struct {
	Clients   int // default 2
	Stages    int // default 4
	OpTimeout time.Duration
	// Accept lists outcomes the run's faults make legitimate (a task
	// whose workers were all killed: worker-crashed).
	Accept map[string]bool
	Seed   uint64

	opLog
	rebuilt int
}

// NewLineageWorkload returns a lineage workload with its defaults.
func NewLineageWorkload(seed uint64) *LineageWorkload {
	return &LineageWorkload{Clients: 2, Stages: 4, OpTimeout: DefaultTaskOpTimeout, Seed: seed,
		Accept: map[string]bool{}}
}

// Name is "lineage".
func (w *LineageWorkload) Name() string { return "lineage" }

// Run starts the clients and waits for them.
func (w *LineageWorkload) Run(ctx context.Context, env *Env) error {
	runClients(w.Clients, func(id int) { w.client(ctx, env, id) })
	return nil
}

func (w *LineageWorkload) client(ctx context.Context, env *Env, id int) {
	rng := rand.New(rand.NewPCG(w.Seed, 0x6c696e+uint64(id)))
	for ctx.Err() == nil {
		seed := rng.IntN(1 << 30)
		hold := time.Duration(rng.IntN(1500)) * time.Millisecond
		opCtx, cancel := context.WithTimeout(ctx, w.OpTimeout+hold)
		call := time.Now()
		last := taskStage.Remote(opCtx, ray.Val([]byte(nil)), ray.Val(seed))
		want := chainStage(nil, seed)
		for i := 1; i < w.Stages; i++ {
			last = taskStage.Remote(opCtx, last, ray.Val(seed+i))
			want = chainStage(want, seed+i)
		}
		// Let the chain finish and sit in the object stores for a while:
		// the window in which a killed raylet takes stages with it.
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		got, err := ray.Get(opCtx, taskDigest.Remote(opCtx, last))
		ret := time.Now()
		cancel()
		if err != nil && ctx.Err() != nil {
			return // cut short by the end of the run
		}
		rebuilt := err == nil && got == digest(want) && w.attempts(ctx, env, last) > 1
		w.record(env, id, seed, got, digest(want), err, call, ret, hold, rebuilt)
	}
}

// attempts reads the last stage's lineage record (0 when unknown).
func (w *LineageWorkload) attempts(ctx context.Context, env *Env, ref ray.ObjectRef[[]byte]) int32 {
	cl, err := env.Client()
	if err != nil {
		return 0
	}
	oid, err := objectIDFromHex(ref.ID())
	if err != nil {
		return 0
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	rec, err := cl.GetLineageTask(rctx, oid.Task(), true)
	if err != nil {
		return 0
	}
	return rec.Attempts
}

func (w *LineageWorkload) record(env *Env, id, seed, got, want int, err error, call, ret time.Time, hold time.Duration, rebuilt bool) {
	lat := ret.Sub(call) - hold
	outcome := classifyTaskResult(got, want, err)
	if outcome == "" {
		env.Succeeded(w.Name(), call, ret)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Attempted++
	w.stats.MaxLatency = max(w.stats.MaxLatency, lat)
	if outcome == "" {
		w.stats.OK++
		if rebuilt {
			w.rebuilt++
		}
		return
	}
	desc := fmt.Sprintf("client %d chain from %d at %.2fs", id, seed, env.Since(call).Seconds())
	switch outcome {
	case outcomeWrong:
		desc += fmt.Sprintf(": digest %d, want %d", got, want)
	case outcomeTimeout:
		desc += fmt.Sprintf(": no result within %v", w.OpTimeout)
	default:
		desc += ": " + err.Error()
	}
	if (outcome == outcomeTimeout || lat > w.OpTimeout+hangGrace) && len(w.stats.Hangs) < 20 {
		w.stats.Hangs = append(w.stats.Hangs, fmt.Sprintf("lineage %s (took %v)", desc, lat.Round(time.Millisecond)))
	}
	w.failedLocked(outcome, desc)
}

// Check judges the chains: right digests, no lost objects.
func (w *LineageWorkload) Check(context.Context, *Env, CheckOptions) []CheckResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return []CheckResult{w.judgeLocked("lineage-rebuilds", w.Accept, "no chain returned a value",
		fmt.Sprintf("%d chains right, %d of them rebuilt from lineage", w.stats.OK, w.rebuilt))}
}

func objectIDFromHex(s string) (ids.ObjectID, error) {
	var b []byte
	if _, err := fmt.Sscanf(s, "%x", &b); err != nil {
		return ids.ObjectID{}, err
	}
	return ids.ObjectFromBytes(b)
}
