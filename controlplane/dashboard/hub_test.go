package dashboard

import (
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// TestHubSlowPageDoesNotBlock: a page that reads nothing loses signals
// but never holds up the watch, and a page that opens later starts from
// the latest state; closing the hub ends every stream.
func TestHubSlowPageDoesNotBlock(t *testing.T) {
	h := newHub(zap.NewNop())
	slow, cancelSlow := h.subscribe()
	defer cancelSlow()
	for i := 1; i <= 10*subscriberBuffer; i++ {
		h.applied(&pb.WatchResponse{Index: uint64(i), Events: []*pb.Event{{Kind: pb.EventKind_EVENT_ACTOR}}})
	}
	if n := len(slow); n != subscriberBuffer {
		t.Fatalf("the slow page holds %d frames; want its buffer, %d", n, subscriberBuffer)
	}
	h.setHeads(headsView{Self: "head-2"})
	late, cancelLate := h.subscribe()
	first := string(<-late)
	if !strings.HasPrefix(first, "event: change\ndata: ") {
		t.Fatalf("first frame %q", first)
	}
	var c changeMsg
	if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(first, "event: change\ndata: "))), &c); err != nil {
		t.Fatal(err)
	}
	if c.Index != uint64(10*subscriberBuffer) || c.Events != uint64(10*subscriberBuffer) || len(c.Kinds) != 1 || c.Kinds[0] != "actor" {
		t.Fatalf("a late page starts from %+v", c)
	}
	if f := string(<-late); !strings.Contains(f, `"self":"head-2"`) {
		t.Fatalf("second frame %q; want the latest heads", f)
	}
	cancelLate()
	cancelLate() // idempotent
	if h.subscribers() != 1 {
		t.Fatalf("%d subscribers; want the slow one", h.subscribers())
	}
	h.close()
	for range slow {
	}
	if _, ok := <-slow; ok {
		t.Fatal("the slow page's stream is open after close")
	}
}
