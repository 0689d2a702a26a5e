package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
)

// TestLauncherFaults drives the launcher's fault seams against real heads:
// a paused follower does not stop writes, two killed heads leave the third
// reporting its quorum problem, and restarted heads rejoin with nothing
// lost; cluster.json follows the restarts.
func TestLauncherFaults(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	put := func(key string) {
		t.Helper()
		if _, err := cl.Put(ctx, "", key, []byte(key)); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	leader, _, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f1, f2 := (leader+1)%3, (leader+2)%3

	// A paused follower: the majority goes on.
	if err := c.Pause(f1); err != nil {
		t.Fatal(err)
	}
	if !c.Heads()[f1].Paused {
		t.Fatal("Heads does not show the pause")
	}
	put("while-paused")
	if err := c.Resume(f1); err != nil {
		t.Fatal(err)
	}

	// Two heads killed: the third cannot reach quorum and says so.
	oldPIDs := map[int]int{f1: c.Heads()[f1].PID, f2: c.Heads()[f2].PID}
	for _, i := range []int{f1, f2} {
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
		if c.Heads()[i].Running || !processGone(oldPIDs[i]) {
			t.Fatalf("head %d still running after Kill", i)
		}
	}
	if err := c.Kill(f1); err == nil {
		t.Fatal("Kill of a dead head succeeded")
	}
	addr := c.Heads()[leader].Address
	var last result
	eventually(t, 15*time.Second, "the lone head to report its quorum problem", func() bool {
		last = mantaCmd(t, nil, "", "status", "--json", "--address", addr, "--token-file", c.TokenFile())
		if last.code != 0 {
			return false
		}
		for _, h := range decodeJSON[statusReport](t, last).Heads {
			if h.Address == addr && strings.Contains(h.QuorumProblem, "quorum") {
				return true
			}
		}
		return false
	})
	st := decodeJSON[statusReport](t, last)
	if st.Leader != nil {
		t.Fatalf("a leader without quorum: %+v", st.Leader)
	}
	if unreachable := countErrors(st); unreachable != 2 {
		t.Fatalf("%d heads shown unreachable; want 2:\n%v", unreachable, last)
	}

	// Restarted, they rejoin; nothing acknowledged is lost.
	for _, i := range []int{f1, f2} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Restart(f1); err == nil {
		t.Fatal("Restart of a running head succeeded")
	}
	if _, _, err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	put("after-restart")
	for _, k := range []string{"while-paused", "after-restart"} {
		if v, err := cl.Get(ctx, "", k); err != nil || string(v) != k {
			t.Fatalf("get %s = %q, %v", k, v, err)
		}
	}
	cf := readClusterJSON(t, filepath.Join(c.DataDir(), launcher.ClusterFile))
	for _, i := range []int{f1, f2} {
		if got, now := cf.Heads[i].PID, c.Heads()[i].PID; got != now || got == oldPIDs[i] {
			t.Fatalf("cluster.json has pid %d for head %d; running pid %d, old %d", got, i, now, oldPIDs[i])
		}
	}

	// Stop is a clean SIGTERM shutdown.
	if err := c.Stop(f2); err != nil {
		t.Fatal(err)
	}
	if h := c.Heads()[f2]; h.Running || !processGone(h.PID) {
		t.Fatalf("head %d still running after Stop", f2)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.Heads() {
		if !processGone(h.PID) {
			t.Fatalf("%s (pid %d) still running after Close", h.ID, h.PID)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func countErrors(st statusReport) int {
	n := 0
	for _, h := range st.Heads {
		if h.Error != "" {
			n++
		}
	}
	return n
}

// TestDemo runs `manta demo` end to end.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a 3-head cluster")
	}
	r := mantaCmd(t, nil, "", "demo")
	if r.code != 0 || !strings.Contains(r.stdout, "demo passed") {
		t.Fatalf("demo: %v", r)
	}
	t.Log(r.stdout)
}

// TestDemoNetns runs `manta demo --hosts netns`: every check of the demo
// with each head and raylet a host of its own and the demo's driver on
// the launcher's host.
func TestDemoNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a 3-head cluster")
	}
	if why := launcher.NetnsSupport(); why != "" {
		t.Skip(why)
	}
	r := mantaCmd(t, nil, "", "demo", "--hosts", "netns")
	if r.code != 0 || !strings.Contains(r.stdout, "demo passed") {
		t.Fatalf("demo --hosts netns: %v", r)
	}
}
