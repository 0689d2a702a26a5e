// Package chaos is manta's fault harness: it runs workloads against a real
// cluster of separate processes while a nemesis kills, pauses and
// partitions them, records what clients saw, and checks it afterwards.
//
// Run is the whole of `manta chaos run`. A Scenario names the faults the
// nemesis draws from on a seeded schedule; a Fault injects and undoes one
// failure; a Workload drives client traffic and checks what it saw (the KV
// workload today; tasks, actors and lineage plug in the same way); a
// Partitioner cuts heads apart (partition_iptables.go says how). The
// report (report.go) records counts, faults, recovery times and verdicts.
package chaos

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// KVInput is one KV operation as a client issued it.
type KVInput struct {
	Put   bool
	Key   string
	Value string // for puts: unique per put
}

// KVOutput is what the client saw. Unknown marks a write whose outcome the
// client could not learn (time-out, lost leader): it may or may not have
// been applied, at any time after its call.
type KVOutput struct {
	Value   string
	Found   bool
	Unknown bool
}

// History records KV operations with monotonic call/return times.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// NewHistory starts an empty history.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's clock.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// At is t on the history's clock.
func (h *History) At(t time.Time) int64 { return int64(t.Sub(h.start)) }

// Add records one completed operation. A write with an unknown outcome is
// recorded as never returning, which is how porcupine treats a write that
// may take effect at any later time.
func (h *History) Add(client int, in KVInput, out KVOutput, call, ret int64) {
	if out.Unknown {
		if !in.Put {
			return // a read with no answer constrains nothing
		}
		ret = math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	h.mu.Unlock()
}

// Len is the number of recorded operations.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Operations returns a copy of the recorded operations.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// KVModel is a map of registers, one per key, each partitioned so porcupine
// checks keys independently.
var KVModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(KVInput).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return KVOutput{} }, // absent
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(KVOutput), input.(KVInput), output.(KVOutput)
		if in.Put {
			return true, KVOutput{Value: in.Value, Found: true}
		}
		return out.Found == st.Found && out.Value == st.Value, st
	},
	Equal: func(a, b any) bool { return a.(KVOutput) == b.(KVOutput) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(KVInput), output.(KVOutput)
		if in.Put {
			if out.Unknown {
				return fmt.Sprintf("put(%s, %s) -> ?", in.Key, in.Value)
			}
			return fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
		}
		if !out.Found {
			return fmt.Sprintf("get(%s) -> not found", in.Key)
		}
		return fmt.Sprintf("get(%s) -> %s", in.Key, out.Value)
	},
}

// CheckLinearizable checks the history against KVModel within timeout.
// It returns porcupine.Ok, Illegal, or Unknown (ran out of time).
func (h *History) CheckLinearizable(timeout time.Duration) porcupine.CheckResult {
	return porcupine.CheckOperationsTimeout(KVModel, h.Operations(), timeout)
}
