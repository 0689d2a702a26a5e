package launcher

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

func newNetworkOrSkip(t *testing.T) *Network {
	t.Helper()
	if why := NetnsSupport(); why != "" {
		t.Skip(why)
	}
	n, err := NewNetwork(zaptest.NewLogger(t))
	if errors.Is(err, ErrHostsUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestNetnsHostHasPrivateShmAndAddress: a process on a host sees its own
// address on eth0 and a /dev/shm of its own; Close removes the host and
// the bridge.
func TestNetnsHostHasPrivateShmAndAddress(t *testing.T) {
	n := newNetworkOrSkip(t)
	h, err := n.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	name := "manta-netns-test-" + strconv.Itoa(os.Getpid())
	out, err := h.Command("sh", "-c", "touch /dev/shm/"+name+" && ls /dev/shm && ip -4 -o addr show dev eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), name) || !strings.Contains(string(out), h.IP+"/24") {
		t.Fatalf("the host's view: %s", out)
	}
	if _, err := os.Stat("/dev/shm/" + name); err == nil {
		os.Remove("/dev/shm/" + name)
		t.Fatal("a file the host made in its /dev/shm appeared in this host's")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if exec.Command("ip", "netns", "pids", h.Namespace).Run() == nil {
		t.Fatalf("namespace %s left behind", h.Namespace)
	}
	if linkExists(n.Bridge()) {
		t.Fatalf("bridge %s left behind", n.Bridge())
	}
}

// TestSweepRemovesStaleNetns: what a launcher that died left (its PID is
// gone) is removed by the next one.
func TestSweepRemovesStaleNetns(t *testing.T) {
	if why := NetnsSupport(); why != "" {
		t.Skip(why)
	}
	p := exec.Command("true")
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	dead := strconv.Itoa(p.Process.Pid) + "z"
	ns, link := "manta-"+dead+"-head-1", "mtb"+dead
	if err := run("ip", "netns", "add", ns); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { run("ip", "netns", "del", ns) })
	if err := run("ip", "link", "add", link, "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if linkExists(link) {
			run("ip", "link", "del", link)
		}
	})
	sweepNetns(zaptest.NewLogger(t))
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), ns) {
		t.Fatalf("stale namespace %s not swept", ns)
	}
	if linkExists(link) {
		t.Fatalf("stale bridge %s not swept", link)
	}
}

func TestStartRejectsUnknownHostsMode(t *testing.T) {
	_, err := Start(t.Context(), Options{Heads: 1, DataDir: t.TempDir(), Hosts: "vms"})
	if err == nil || !strings.Contains(err.Error(), "hosts mode") {
		t.Fatalf("err = %v; want a bad hosts mode", err)
	}
}
