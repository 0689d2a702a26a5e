package chaos

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestKVModelCatchesStaleRead(t *testing.T) {
	h := NewHistory()
	h.Add(1, KVInput{Put: true, Key: "k", Value: "a"}, KVOutput{}, 0, 10)
	h.Add(1, KVInput{Put: true, Key: "k", Value: "b"}, KVOutput{}, 20, 30)
	h.Add(2, KVInput{Key: "k"}, KVOutput{Value: "a", Found: true}, 40, 50) // stale
	if r := h.CheckLinearizable(5 * time.Second); r != porcupine.Illegal {
		t.Fatalf("stale read after a completed write checked %v; want Illegal", r)
	}
}

func TestKVModelAllowsUnknownWriteEitherWay(t *testing.T) {
	for _, seen := range []KVOutput{{}, {Value: "a", Found: true}} {
		h := NewHistory()
		h.Add(1, KVInput{Put: true, Key: "k", Value: "a"}, KVOutput{Unknown: true}, 0, 10)
		h.Add(2, KVInput{Key: "k"}, seen, 20, 30)
		if r := h.CheckLinearizable(5 * time.Second); r != porcupine.Ok {
			t.Fatalf("read %v after an unknown write checked %v; want Ok", seen, r)
		}
	}
}

func TestKVModelRejectsLostAcknowledgedWrite(t *testing.T) {
	h := NewHistory()
	h.Add(1, KVInput{Put: true, Key: "k", Value: "a"}, KVOutput{}, 0, 10)
	h.Add(2, KVInput{Key: "k"}, KVOutput{}, 20, 30)
	if r := h.CheckLinearizable(5 * time.Second); r != porcupine.Illegal {
		t.Fatalf("lost acknowledged write checked %v; want Illegal", r)
	}
}
