package chaos

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// TestActorCheckerJudgesCallSequences feeds the actor checker the
// sequences a caller may see and those it must never see.
func TestActorCheckerJudgesCallSequences(t *testing.T) {
	died := ray.ErrActorDied
	type step struct {
		inst uint64
		n    int
		err  error
	}
	cases := []struct {
		name     string
		sem      string
		faults   []string
		steps    []step
		semantic string
		errs     string
		contains string
	}{
		{"in order", atMostOnce, nil, []step{{1, 1, nil}, {1, 2, nil}, {1, 3, nil}}, Pass, Pass, ""},
		{"restart resets state", atMostOnce, []string{faultKillWorker},
			[]step{{1, 1, nil}, {1, 2, nil}, {0, 0, died}, {2, 1, nil}, {2, 2, nil}}, Pass, Pass, "actor-died (accepted)"},
		{"failed call ran once", atMostOnce, []string{faultKillRaylet},
			[]step{{1, 1, nil}, {0, 0, died}, {1, 3, nil}}, Pass, Pass, ""},
		{"a call ran twice", atLeastOnce, nil, []step{{1, 1, nil}, {1, 3, nil}}, Fail, Pass, "jumped from 1 to 3"},
		{"count went back", atMostOnce, nil, []step{{1, 2, nil}, {1, 2, nil}}, Fail, Pass, "same incarnation"},
		{"restart kept state", atLeastOnce, nil, []step{{1, 1, nil}, {2, 5, nil}}, Fail, Pass, "first count is 5"},
		{"at-least-once call failed", atLeastOnce, []string{faultKillWorker}, []step{{1, 1, nil}, {0, 0, died}}, Pass, Fail, "at-least-once actor-died"},
		{"actor died under head faults", atMostOnce, []string{faultKillLeader}, []step{{1, 1, nil}, {0, 0, died}}, Pass, Fail, "at-most-once actor-died"},
		{"undocumented error", atMostOnce, []string{faultKillWorker}, []step{{1, 1, nil}, {0, 0, errors.New("boom")}}, Pass, Fail, "other-error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := NewActorWorkload(1)
			w.Accept = acceptedActorErrors(c.faults)
			env := &Env{byName: map[string]*progress{}, start: time.Now()}
			st := &callerState{sem: c.sem}
			for _, s := range c.steps {
				now := time.Now()
				w.record(env, 0, st, CounterReply{Instance: s.inst, N: s.n}, s.err, now, now)
			}
			res := w.Check(t.Context(), env, CheckOptions{})
			if res[0].Verdict != c.semantic || res[1].Verdict != c.errs {
				t.Fatalf("verdicts %s, %s; want %s, %s: %+v", res[0].Verdict, res[1].Verdict, c.semantic, c.errs, res)
			}
			if c.contains != "" && !strings.Contains(res[0].Detail+res[1].Detail, c.contains) {
				t.Fatalf("details do not say %q: %+v", c.contains, res)
			}
		})
	}
}
