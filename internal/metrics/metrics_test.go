package metrics

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestServerWantsTheTokenAndServesTheRegistry(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "manta_test_events_total", Help: "test"})
	reg.MustRegister(c)
	token := ""
	s, err := Listen("127.0.0.1:0", reg, func() string { return token }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "http://" + s.Address() + Path
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	status := func(tok string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("x"); got != http.StatusServiceUnavailable {
		t.Fatalf("before the token is known: %d, want 503", got)
	}
	token = "secret"
	for _, tok := range []string{"", "wrong"} {
		if got := status(tok); got != http.StatusUnauthorized {
			t.Fatalf("token %q: %d, want 401", tok, got)
		}
	}
	c.Add(3)
	f, err := Scrape(ctx, url, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Value("manta_test_events_total"); !ok || v != 3 {
		t.Fatalf("counter %v %v, want 3", v, ok)
	}
	if _, ok := f.Value("go_goroutines"); !ok {
		t.Fatal("no Go runtime series")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSDFileRoundTripAndTargets(t *testing.T) {
	heads := []*pb.HeadInfo{{Id: "h2", MetricsAddress: "10.0.0.2:9"}, {Id: "h1", MetricsAddress: "10.0.0.1:9"}, {Id: "h3"}}
	nodes := []*pb.NodeInfo{
		{NodeId: "n1", MetricsAddress: "10.0.0.5:9", State: pb.NodeState_NODE_ALIVE},
		{NodeId: "n2", MetricsAddress: "10.0.0.6:9", State: pb.NodeState_NODE_DEAD},
		{NodeId: "n3", State: pb.NodeState_NODE_ALIVE},
	}
	ts := Targets(heads, nodes)
	want := []Target{{"10.0.0.1:9", "h1", "head"}, {"10.0.0.2:9", "h2", "head"}, {"10.0.0.5:9", "n1", "raylet"}}
	path := filepath.Join(t.TempDir(), SDFileName)
	if err := WriteSD(path, ts); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSD(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("read back %v, want %v (sorted; no dead node, no empty address)", got, want)
	}
	// The same targets in another order leave the file alone.
	st, _ := os.Stat(path)
	slices.Reverse(ts)
	if err := WriteSD(path, ts); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(path); !os.SameFile(st, st2) {
		t.Fatal("an unchanged target set rewrote the file")
	}
	// An empty cluster is an empty list, which Prometheus accepts.
	if b := string(EncodeSD(nil)); b != "[]\n" {
		t.Fatalf("empty: %q", b)
	}
}
