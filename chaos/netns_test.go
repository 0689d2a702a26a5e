package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/sdk/ray"
)

// envNetnsDriver makes the test binary, started on the driver's host by
// TestNetnsCluster, run TestNetnsDriver as that cluster's driver.
const envNetnsDriver = "MANTA_TEST_NETNS_DRIVER"

// The netns driver's remote functions: each says which node ran it.
var (
	netnsSquare = ray.Func1x2("manta.chaos.netns.square", func(_ context.Context, x int) (int, string, error) {
		return x * x, os.Getenv("MANTA_NODE_ID"), nil
	})
	netnsBlob = ray.Func1x2("manta.chaos.netns.blob", func(_ context.Context, n int) ([]byte, string, error) {
		return blob(n, n), os.Getenv("MANTA_NODE_ID"), nil
	})
	netnsDigest = ray.Func1x2("manta.chaos.netns.digest", func(_ context.Context, b []byte) (int, string, error) {
		return digest(b), os.Getenv("MANTA_NODE_ID"), nil
	})
	netnsCounter = ray.Actor0("manta.chaos.netns.Counter", func(context.Context) (*netnsCount, error) { return &netnsCount{}, nil })
	netnsIncr    = ray.Method0(netnsCounter, "Incr", (*netnsCount).Incr)
)

type netnsCount struct{ n int }

func (c *netnsCount) Incr(context.Context) (int, error) { c.n++; return c.n, nil }

// netnsBlobBytes is well above the inline limit: the value lives in an
// arena and crosses hosts only by a pull.
const netnsBlobBytes = 8 << 20

// TestNetnsCluster runs 3 heads and 3 raylets each on a host of its own
// and a driver on a fourth host (this test binary, re-executed there),
// which runs the demo's core cases through the network: tasks on every
// node, an 8 MiB object made on node-2 and read on node-3 and by the
// driver (pulled, as the transfer counters show, since no host can map
// another's arena), a result rebuilt from lineage after its node is
// SIGKILLed, and tasks and an actor after the leader head is SIGKILLed.
func TestNetnsCluster(t *testing.T) {
	if why := launcher.NetnsSupport(); why != "" {
		t.Skip(why)
	}
	ctx := tc.Ctx(t, 3*time.Minute)
	c, err := launcher.Start(ctx, launcher.Options{Binary: mantaBin, Heads: 3, Nodes: 3, DataDir: t.TempDir(),
		Hosts: launcher.HostsNetns, Logger: zaptest.NewLogger(t),
		NodeArgs: func(i int) []string {
			res := fmt.Sprintf("pin-node-%d=100", i+1)
			if i > 0 {
				res += ",rebuildable=100" // node-2 and node-3: lineage may rebuild on either
			}
			return []string{"--num-cpus", "2", "--object-store-memory", "256MiB", "--resources", res}
		}})
	if errors.Is(err, launcher.ErrHostsUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	host, err := c.AddHost("driver")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := host.Command(self, "-test.run=^TestNetnsDriver$", "-test.v")
	cmd.Env = append(os.Environ(), envNetnsDriver+"=1", "MANTA_ADDRESS="+strings.Join(c.Addresses(), ","), "MANTA_TOKEN="+c.Token(),
		"MANTA_TEST_MANTA_BIN="+mantaBin)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		cmd.Process.Kill() // by its PID; a no-op once it exited
		<-done
	})

	// The driver asks for faults on its stdout ("netns: kill NODE",
	// "netns: kill leader") and is told when they are done.
	var mu sync.Mutex
	var lines []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		mu.Lock()
		lines = append(lines, line)
		mu.Unlock()
		t.Log("driver: " + line)
		switch {
		case strings.HasPrefix(line, "netns: kill node-"):
			id := strings.TrimPrefix(line, "netns: kill ")
			i, _ := strconv.Atoi(strings.TrimPrefix(id, "node-"))
			if err := c.KillNode(i - 1); err != nil {
				t.Errorf("kill %s: %v", id, err)
			}
			fmt.Fprintln(stdin, "done")
		case line == "netns: check transfers":
			checkTransfers(t, ctx, c)
			fmt.Fprintln(stdin, "done")
		case line == "netns: kill leader":
			li, _, err := c.WaitLeader(ctx)
			if err == nil {
				err = c.Kill(li)
			}
			if err != nil {
				t.Errorf("kill the leader: %v", err)
			}
			fmt.Fprintln(stdin, "done")
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("the driver failed: %v", err)
	}
	done <- nil // for the cleanup
	mu.Lock()
	passed := false
	for _, l := range lines {
		passed = passed || strings.HasPrefix(l, "--- PASS: TestNetnsDriver")
	}
	mu.Unlock()
	if !passed {
		t.Fatal("the driver did not pass")
	}

}

// checkTransfers asserts that the 8 MiB object crossed hosts by a pull:
// node-3 (where the task reading it ran) pulled it, and node-2 (where it
// was made) sent it.
func checkTransfers(t *testing.T, ctx context.Context, c *launcher.Cluster) {
	nodes := c.Nodes()
	st2, err := raylet.Status(ctx, nodes[1].Address, c.Token())
	if err != nil {
		t.Fatal(err)
	}
	st3, err := raylet.Status(ctx, nodes[2].Address, c.Token())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node-2 served %d bytes; node-3 pulled %d objects, %d bytes", st2.ServedBytes, st3.PulledObjects, st3.PulledBytes)
	if st3.PulledObjects < 1 || st3.PulledBytes < netnsBlobBytes {
		t.Errorf("node-3 pulled %d objects, %d bytes; want the %d-byte blob pulled over the network", st3.PulledObjects, st3.PulledBytes, netnsBlobBytes)
	}
	if st2.ServedBytes < 2*netnsBlobBytes {
		// node-3's pull and the driver's read (the driver's host has no arena of node-2's).
		t.Errorf("node-2 served %d bytes; want at least %d (the blob, to node-3 and to the driver's side)", st2.ServedBytes, 2*netnsBlobBytes)
	}
}

// TestNetnsDriver is the driver of TestNetnsCluster, run on its own host.
func TestNetnsDriver(t *testing.T) {
	if os.Getenv(envNetnsDriver) == "" {
		t.Skip("run by TestNetnsCluster on the driver's host")
	}
	ctx := tc.Ctx(t, 2*time.Minute)
	if err := ray.Init(ctx, ray.Address(os.Getenv("MANTA_ADDRESS")), ray.Token(os.Getenv("MANTA_TOKEN"))); err != nil {
		t.Fatal(err)
	}
	defer ray.Shutdown(context.Background())
	in := bufio.NewScanner(os.Stdin)
	ask := func(what string) {
		fmt.Println("netns: " + what)
		if !in.Scan() {
			t.Fatalf("no answer to %q", what)
		}
	}
	pin := func(node string) ray.CallOption { return ray.Resources(map[string]float64{"pin-" + node: 1}) }

	// Tasks on every node, each result right.
	for _, node := range []string{"node-1", "node-2", "node-3"} {
		sq, where := netnsSquare.Remote(ctx, ray.Val(7), pin(node))
		v, err := ray.Get(ctx, sq)
		if err != nil || v != 49 {
			t.Fatalf("square on %s: %v, %v", node, v, err)
		}
		if w, _ := ray.Get(ctx, where); w != node {
			t.Fatalf("square pinned to %s ran on %q", node, w)
		}
	}

	// A large object made on node-2, read on node-3 and by the driver.
	b, made := netnsBlob.Remote(ctx, ray.Val(netnsBlobBytes), pin("node-2"))
	if w, err := ray.Get(ctx, made); err != nil || w != "node-2" {
		t.Fatalf("blob made on %q: %v", w, err)
	}
	d, where := netnsDigest.Remote(ctx, b, pin("node-3"))
	if v, err := ray.Get(ctx, d); err != nil || v != digest(blob(netnsBlobBytes, netnsBlobBytes)) {
		t.Fatalf("digest of the blob on node-3: %v, %v", v, err)
	}
	if w, _ := ray.Get(ctx, where); w != "node-3" {
		t.Fatalf("digest ran on %q", w)
	}
	got, err := ray.Get(ctx, b)
	if err != nil || digest(got) != digest(blob(netnsBlobBytes, netnsBlobBytes)) {
		t.Fatalf("the driver's read of the blob: %v", err)
	}

	ask("check transfers")

	// Lineage: the only copy of a result dies with its node; the next
	// read rebuilds it on the other node that fits.
	lb, lmade := netnsBlob.Remote(ctx, ray.Val(netnsBlobBytes/2), ray.Resources(map[string]float64{"rebuildable": 1}))
	node, err := ray.Get(ctx, lmade)
	if err != nil {
		t.Fatal(err)
	}
	ask("kill " + node)
	ld, _ := netnsDigest.Remote(ctx, lb, ray.Resources(map[string]float64{"rebuildable": 1}))
	if v, err := ray.Get(ctx, ld); err != nil || v != digest(blob(netnsBlobBytes/2, netnsBlobBytes/2)) {
		t.Fatalf("the digest of a result whose node died: %v, %v", v, err)
	}

	// The leader head dies; tasks and a new actor go on.
	ask("kill leader")
	for i := range 10 {
		sq, _ := netnsSquare.Remote(ctx, ray.Val(i))
		if v, err := ray.Get(ctx, sq); err != nil || v != i*i {
			t.Fatalf("square(%d) after the leader died: %v, %v", i, v, err)
		}
	}
	h, err := netnsCounter.Remote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		if v, err := ray.Get(ctx, netnsIncr.Remote(ctx, h)); err != nil || v != want {
			t.Fatalf("actor call %d: %v, %v", want, v, err)
		}
	}
}

// TestChaosNetnsSmoke runs a short netns scenario end to end: the
// leader's host slowed to 50±20 ms each way while KV, task, lineage and
// actor workloads run on 2 raylets, every checker passing, and nothing of
// the run's network left behind.
func TestChaosNetnsSmoke(t *testing.T) {
	if why := launcher.NetnsSupport(); why != "" {
		t.Skip(why)
	}
	if why := NetShapeSupport(); why != "" {
		t.Skip(why)
	}
	ctx := tc.Ctx(t, 3*time.Minute)
	rep := runChaos(t, ctx, Options{Scenario: "slow-leader", Hosts: launcher.HostsNetns, Nodes: 2, Duration: 20 * time.Second, Seed: 1})
	var sb strings.Builder
	rep.Summary(&sb)
	t.Logf("summary:\n%s", sb.String())
	if !rep.Pass() {
		t.Fatalf("verdict %s", rep.Verdict)
	}
	if len(rep.Faults) < 1 {
		t.Fatal("no fault injected")
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if mine := fmt.Sprintf("manta-%d", os.Getpid()); strings.Contains(string(out), mine) {
		t.Fatalf("namespaces of this run left behind:\n%s", out)
	}
}

// TestNetworkScenariosNeedNetnsHosts: a network scenario on loopback hosts
// is bad input, told before anything starts.
func TestNetworkScenariosNeedNetnsHosts(t *testing.T) {
	for _, name := range []string{"slow-leader", "lossy-links", "asymmetric-partition"} {
		dir := t.TempDir()
		_, err := Run(t.Context(), Options{Scenario: name, ReportDir: dir})
		if !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), "--hosts netns") {
			t.Errorf("%s on loopback: %v; want ErrBadOptions naming --hosts netns", name, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: bad options wrote %d entries into the report dir", name, len(entries))
		}
	}
	if _, err := Run(t.Context(), Options{Scenario: "slow-leader", Hosts: "vms", ReportDir: t.TempDir()}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("hosts vms: %v; want ErrBadOptions", err)
	}
}
