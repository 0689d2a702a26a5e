package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// kvNamespace keeps the workload's keys apart from anything else in the
// store.
const kvNamespace = "chaos"

// uniquePrefix starts the keys written once each.
const uniquePrefix = "u-"

// KVWorkload runs clients that read and write a few shared keys (so the
// linearizability check has contention to bite on) and write unique keys
// (so a lost acknowledged write can be named). Every value is unique.
type KVWorkload struct {
	// Clients is the number of concurrent clients, each with its own
	// connections; default 6.
	Clients int
	// SharedKeys is the number of contended keys; default 8.
	SharedKeys int
	// Seed varies the operation mix.
	Seed uint64

	hist *History

	mu        sync.Mutex
	stats     OpStats
	acked     map[string]string // unique key -> value, acknowledged
	attempted map[string]string // unique key -> value, every attempt
}

// NewKVWorkload returns a KV workload with its defaults.
func NewKVWorkload(seed uint64) *KVWorkload {
	return &KVWorkload{Clients: 6, SharedKeys: 8, Seed: seed, hist: NewHistory(),
		acked: map[string]string{}, attempted: map[string]string{}}
}

// Name is "kv".
func (w *KVWorkload) Name() string { return "kv" }

// History is the recorded history.
func (w *KVWorkload) History() *History { return w.hist }

// Stats counts the operations so far.
func (w *KVWorkload) Stats() OpStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Hangs = append([]string(nil), s.Hangs...)
	return s
}

// Acked returns a copy of the acknowledged unique writes.
func (w *KVWorkload) Acked() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]string, len(w.acked))
	for k, v := range w.acked {
		out[k] = v
	}
	return out
}

// Run starts the clients and waits for them.
func (w *KVWorkload) Run(ctx context.Context, env *Env) error {
	clients := make([]*cpclient.Client, 0, w.Clients)
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for range w.Clients {
		cl, err := env.Client()
		if err != nil {
			return err
		}
		clients = append(clients, cl)
	}
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, env, i, cl)
		}()
	}
	wg.Wait()
	return nil
}

// client issues operations in a closed loop: 30% unique writes, 30%
// shared writes, 40% shared reads.
func (w *KVWorkload) client(ctx context.Context, env *Env, id int, cl *cpclient.Client) {
	rng := rand.New(rand.NewPCG(w.Seed, uint64(id)))
	for i := 0; ctx.Err() == nil; i++ {
		var in KVInput
		value := fmt.Sprintf("%d-%d", id, i)
		switch r := rng.IntN(10); {
		case r < 3:
			in = KVInput{Put: true, Key: uniquePrefix + value, Value: value}
		case r < 6:
			in = KVInput{Put: true, Key: fmt.Sprintf("shared-%d", rng.IntN(w.SharedKeys)), Value: value}
		default:
			in = KVInput{Key: fmt.Sprintf("shared-%d", rng.IntN(w.SharedKeys))}
		}
		w.do(ctx, env, id, cl, in)
	}
}

func (w *KVWorkload) do(ctx context.Context, env *Env, id int, cl *cpclient.Client, in KVInput) {
	if in.Put && strings.HasPrefix(in.Key, uniquePrefix) {
		w.mu.Lock()
		w.attempted[in.Key] = in.Value
		w.mu.Unlock()
	}
	opCtx, cancel := context.WithTimeout(ctx, env.OpTimeout)
	call := time.Now()
	var out KVOutput
	var err error
	if in.Put {
		_, err = cl.Put(opCtx, kvNamespace, in.Key, []byte(in.Value))
	} else {
		var v []byte
		v, err = cl.Get(opCtx, kvNamespace, in.Key)
		out = KVOutput{Value: string(v), Found: err == nil}
		if errors.Is(err, fsm.ErrKeyNotFound) {
			err = nil
		}
	}
	ret := time.Now()
	cancel()
	if err != nil {
		// Whether a failed write took effect is not known; a failed read
		// is dropped from the history by Add.
		out = KVOutput{Unknown: true}
	}
	w.hist.Add(id, in, out, w.hist.At(call), w.hist.At(ret))
	if err == nil {
		env.Succeeded(w.Name(), call, ret)
	}

	lat := ret.Sub(call)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Attempted++
	switch {
	case err == nil:
		w.stats.OK++
		if in.Put && strings.HasPrefix(in.Key, uniquePrefix) {
			w.acked[in.Key] = in.Value
		}
	case in.Put:
		w.stats.Indeterminate++
	default:
		w.stats.Failed++
	}
	if lat > w.stats.MaxLatency {
		w.stats.MaxLatency = lat
	}
	if lat > env.OpTimeout+hangGrace && len(w.stats.Hangs) < 20 {
		w.stats.Hangs = append(w.stats.Hangs, fmt.Sprintf("%s took %v (bound %v)", KVModel.DescribeOperation(in, out), lat.Round(time.Millisecond), env.OpTimeout))
	}
}

// Check reads back every acknowledged unique write, looks for unique keys
// nobody wrote, and checks the history for linearizability.
func (w *KVWorkload) Check(ctx context.Context, env *Env, o CheckOptions) []CheckResult {
	cl, err := env.Client()
	if err != nil {
		return []CheckResult{{Name: "kv-acked-writes-readable", Verdict: Unknown, Detail: err.Error()}}
	}
	defer cl.Close()
	return w.check(ctx, clientReader{cl}, env.Log, o)
}

// kvReader is what the final checks read the store through; tests fake it.
type kvReader interface {
	Get(ctx context.Context, key string) (value string, found bool, err error)
	List(ctx context.Context, prefix string) ([]string, error)
}

type clientReader struct{ cl *cpclient.Client }

func (r clientReader) Get(ctx context.Context, key string) (string, bool, error) {
	v, err := r.cl.Get(ctx, kvNamespace, key)
	if errors.Is(err, fsm.ErrKeyNotFound) {
		return "", false, nil
	}
	return string(v), err == nil, err
}

func (r clientReader) List(ctx context.Context, prefix string) ([]string, error) {
	resp, err := r.cl.KVList(ctx, &pb.KVListRequest{Namespace: kvNamespace, Prefix: prefix})
	if err != nil {
		return nil, err
	}
	return resp.Keys, nil
}

func (w *KVWorkload) check(ctx context.Context, r kvReader, log *zap.Logger, o CheckOptions) []CheckResult {
	w.mu.Lock()
	acked := make(map[string]string, len(w.acked))
	for k, v := range w.acked {
		acked[k] = v
	}
	attempted := make(map[string]string, len(w.attempted))
	for k, v := range w.attempted {
		attempted[k] = v
	}
	w.mu.Unlock()
	return []CheckResult{
		checkAckedReadable(ctx, r, acked),
		checkNoPhantoms(ctx, r, attempted),
		checkLinearizable(w.hist, log, o),
	}
}

// checkAckedReadable reads every acknowledged unique write, a few at a
// time, and names any that is gone or changed.
func checkAckedReadable(ctx context.Context, r kvReader, acked map[string]string) CheckResult {
	res := CheckResult{Name: "kv-acked-writes-readable"}
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var (
		mu      sync.Mutex
		lost    []string
		readErr []string
		next    int
		wg      sync.WaitGroup
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next == len(keys) {
					mu.Unlock()
					return
				}
				k := keys[next]
				next++
				mu.Unlock()
				v, found, err := r.Get(ctx, k)
				mu.Lock()
				switch {
				case err != nil:
					readErr = append(readErr, fmt.Sprintf("%s: %v", k, err))
				case !found:
					lost = append(lost, fmt.Sprintf("%s=%s (not found)", k, acked[k]))
				case v != acked[k]:
					lost = append(lost, fmt.Sprintf("%s=%s (read %q)", k, acked[k], v))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(lost)
	sort.Strings(readErr)
	switch {
	case len(lost) > 0:
		res.Verdict = Fail
		res.Detail = fmt.Sprintf("%d of %d acknowledged writes lost: %s", len(lost), len(keys), firstFew(lost, 5))
	case len(readErr) > 0:
		res.Verdict = Fail
		res.Detail = fmt.Sprintf("%d of %d acknowledged writes could not be read back: %s", len(readErr), len(keys), firstFew(readErr, 3))
	default:
		res.Verdict = Pass
		res.Detail = fmt.Sprintf("all %d acknowledged unique writes read back", len(keys))
	}
	return res
}

// checkNoPhantoms lists the unique keys and names any that no client
// tried to write.
func checkNoPhantoms(ctx context.Context, r kvReader, attempted map[string]string) CheckResult {
	res := CheckResult{Name: "kv-no-phantom-keys"}
	keys, err := r.List(ctx, uniquePrefix)
	if err != nil {
		res.Verdict, res.Detail = Fail, "could not list keys: "+err.Error()
		return res
	}
	var phantoms []string
	for _, k := range keys {
		if _, ok := attempted[k]; !ok {
			phantoms = append(phantoms, k)
		}
	}
	if len(phantoms) > 0 {
		res.Verdict = Fail
		res.Detail = fmt.Sprintf("%d keys nobody wrote: %s", len(phantoms), firstFew(phantoms, 5))
		return res
	}
	res.Verdict = Pass
	res.Detail = fmt.Sprintf("%d unique keys present, %d attempted", len(keys), len(attempted))
	return res
}

// checkLinearizable runs porcupine; on a violation it writes the
// visualisation next to the report.
func checkLinearizable(h *History, log *zap.Logger, o CheckOptions) CheckResult {
	res := CheckResult{Name: "kv-linearizable"}
	timeout := o.LinearizabilityTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	start := time.Now()
	ops := h.Operations()
	r := porcupine.CheckOperationsTimeout(KVModel, ops, timeout)
	took := time.Since(start).Round(time.Millisecond)
	switch r {
	case porcupine.Ok:
		res.Verdict = Pass
		res.Detail = fmt.Sprintf("%d operations linearizable (checked in %v)", len(ops), took)
	case porcupine.Unknown:
		res.Verdict = Unknown
		res.Detail = fmt.Sprintf("check of %d operations timed out after %v", len(ops), timeout)
	default:
		res.Verdict = Fail
		res.Detail = fmt.Sprintf("%d operations are not linearizable", len(ops))
		if o.ReportDir != "" {
			// The verbose check searches again to find what to draw.
			_, info := porcupine.CheckOperationsVerbose(KVModel, ops, timeout)
			path := filepath.Join(o.ReportDir, "linearizability.html")
			if err := porcupine.VisualizePath(KVModel, info, path); err != nil {
				log.Warn("write the linearizability visualisation", zap.Error(err))
			} else {
				res.Detail += "; see " + path
			}
		}
	}
	return res
}

func firstFew(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(", ... (%d more)", len(s)-n)
}
