package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/internal/metrics"
)

// TestMetricsPortAndSDFile starts a head process with --metrics-port and a
// raylet process with the default (a free port), waits for the head's
// service-discovery file to list both, scrapes every target and the
// dashboard port's /metrics, and checks `manta up`'s writer produces the
// same file from the control plane.
func TestMetricsPortAndSDFile(t *testing.T) {
	ports, err := launcher.FreePorts(1) // for the head's --metrics-port
	if err != nil {
		t.Fatal(err)
	}
	port := ports[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: 1, Nodes: 1, DataDir: t.TempDir(),
		ExtraHeadArgs: []string{"--metrics-port", strconv.Itoa(port)}})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	h := c.Heads()[0]
	headTarget := metrics.Target{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Node: h.ID, Role: "head"}
	sdPath := filepath.Join(h.DataDir, metrics.SDFileName)
	var targets []metrics.Target
	eventually(t, 20*time.Second, "the SD file to list the head and the node", func() bool {
		targets, err = metrics.ReadSD(sdPath)
		return err == nil && len(targets) == 2 && slices.Contains(targets, headTarget)
	})
	for _, tg := range targets {
		f, err := metrics.Scrape(ctx, "http://"+tg.Address+metrics.Path, c.Token())
		if err != nil {
			t.Fatalf("scrape %v: %v", tg, err)
		}
		switch tg.Role {
		case "head":
			if v, ok := f.Value("manta_raft_state", "state", "Leader"); !ok || v != 1 {
				t.Fatalf("head %v: manta_raft_state{state=Leader} %v %v", tg, v, ok)
			}
			if v, _ := f.Value("manta_nodes", "state", "ALIVE"); v != 1 {
				t.Fatalf("head %v: alive nodes %v", tg, v)
			}
		case "raylet":
			if tg.Node != c.Nodes()[0].ID {
				t.Fatalf("raylet target %v, want node %s", tg, c.Nodes()[0].ID)
			}
			if _, ok := f.Value("manta_raylet_lease_requests_total"); !ok {
				t.Fatalf("raylet %v: no lease series", tg)
			}
		default:
			t.Fatalf("unknown role in %v", tg)
		}
	}

	// The dashboard port serves the head's metrics too, behind the token.
	b, err := os.ReadFile(filepath.Join(h.DataDir, dashboardAddressFile))
	if err != nil {
		t.Fatal(err)
	}
	dash := "http://" + strings.TrimSpace(string(b)) + metrics.Path
	if f, err := metrics.Scrape(ctx, dash, c.Token()); err != nil {
		t.Fatal(err)
	} else if _, ok := f.Value("manta_raft_term"); !ok {
		t.Fatal("no manta_raft_term on the dashboard port")
	}
	resp, err := http.Get(dash)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dashboard /metrics without a token: %s", resp.Status)
	}

	// manta up's writer lists the same targets, asked of the control plane.
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	upPath := filepath.Join(t.TempDir(), metrics.SDFileName)
	upCtx, upStop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeSDLoop(upCtx, cl, upPath, zap.NewNop())
	}()
	defer func() { upStop(); <-done }()
	eventually(t, 20*time.Second, "manta up's SD file", func() bool {
		got, err := metrics.ReadSD(upPath)
		return err == nil && fmt.Sprint(got) == fmt.Sprint(targets)
	})
}
