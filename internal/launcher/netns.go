package launcher

// Hosts in network namespaces (Options.Hosts = HostsNetns): every head and
// every raylet runs as a host of its own, so nothing reaches another host
// except over a network, as on separate machines.
//
//   - Network: a Linux bridge in the launcher's namespace holds the first
//     address of a private /24 (10.213.K.1, K free on this machine); the
//     launcher itself, and any driver it runs in-process, is the host at
//     that address. Each host is a network namespace joined to the bridge
//     by a veth pair, with the address 10.213.K.(10+n) on its eth0 and no
//     default route: a host can reach the other hosts and nothing else.
//   - /dev/shm: each host's processes run in a mount namespace of their own
//     with a fresh tmpfs on /dev/shm, so a reader on another host can never
//     map a raylet's arena file and must pull the object over the network.
//     A process is started as
//     ip netns exec NS unshare --mount sh -c 'mount -t tmpfs ... /dev/shm && exec "$0" "$@"' manta ARGS
//     Each of ip, unshare and sh execs the next in place, so the PID the
//     launcher holds is manta's own (kill, pause and the leak checks need
//     it), and the raylet's workers inherit both namespaces. A re-exec
//     helper in manta would have to setns and unshare from Go, which is
//     unsafe in a multi-threaded runtime before exec (the mount namespace
//     cannot be joined by one thread of many); these tools do it
//     single-threaded. The tmpfs goes away with the last process inside.
//   - Names carry the launcher's PID and a per-process letter
//     (manta-<pid><x>-head-1, mtb<pid><x>, mtv<pid><x><n>), so a new run
//     removes what a crashed one left (sweepNetns) and concurrent runs,
//     also of other processes, never collide.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Host modes of Options.Hosts.
const (
	HostsLocal = "local" // every process on this host's loopback (default)
	HostsNetns = "netns" // each head and raylet a host of its own
)

// ErrHostsUnsupported says a host could not be made here; the message says
// why and what to do. Tests skip on it.
var ErrHostsUnsupported = errors.New("launcher: cannot create netns hosts")

// subnetPrefix is the private range the hosts' /24s are taken from; it
// exists only inside namespaces the run creates and on its bridge.
const subnetPrefix = "10.213."

// netnsSeq tells apart the networks of one process (tests start several).
var netnsSeq atomic.Int64

// NetnsSupport says whether netns hosts can be made here, without making
// any: "" if they can, else why not and what to do.
func NetnsSupport() string {
	if os.Geteuid() != 0 {
		return "netns hosts need root (network namespaces, a bridge, veth pairs and tmpfs mounts): run as root"
	}
	for _, tool := range []string{"ip", "unshare", "mount", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%s not found: install Debian's iproute2 and util-linux (mount)", tool)
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return "the kernel has no network namespaces (CONFIG_NET_NS)"
	}
	return ""
}

// Host is one host of a netns network.
type Host struct {
	Name      string // the process it runs: head-1, node-2, driver
	Namespace string // ip netns name
	IP        string // its address on the bridge
	veth      string // the veth end in the launcher's namespace
}

// Network is the bridge and the hosts of one cluster. Its methods are safe
// for concurrent use.
type Network struct {
	log    *zap.Logger
	base   string // <pid><letter>
	bridge string
	subnet string // 10.213.K.
	prefix string // 10.213.K.0/24

	mu     sync.Mutex
	hosts  map[string]*Host
	order  []*Host
	next   int
	closed bool
}

// NewNetwork removes what crashed runs left, then makes a bridge on a free
// /24 of 10.213.0.0/16 with the launcher's address on it.
func NewNetwork(log *zap.Logger) (_ *Network, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	if why := NetnsSupport(); why != "" {
		return nil, fmt.Errorf("%w: %s", ErrHostsUnsupported, why)
	}
	sweepNetns(log)
	seq := netnsSeq.Add(1)
	if seq > 26 {
		return nil, fmt.Errorf("launcher: more than 26 netns networks in one process")
	}
	n := &Network{log: log.Named("netns"), base: strconv.Itoa(os.Getpid()) + string(rune('a'+seq-1)), hosts: map[string]*Host{}}
	n.bridge = "mtb" + n.base
	// One lock for every launcher on the machine, held while a /24 is
	// picked and claimed, so two runs never take the same one.
	unlock, err := lockFile("/run/manta-netns.lock")
	if err != nil {
		return nil, fmt.Errorf("%w: lock /run/manta-netns.lock: %v", ErrHostsUnsupported, err)
	}
	defer unlock()
	k, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	n.subnet = subnetPrefix + strconv.Itoa(k) + "."
	n.prefix = n.subnet + "0/24"
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := run("ip", "link", "add", n.bridge, "type", "bridge"); err != nil {
		return nil, fmt.Errorf("%w: create bridge %s: %v (is the bridge module available?)", ErrHostsUnsupported, n.bridge, err)
	}
	if err := run("ip", "addr", "add", n.subnet+"1/24", "dev", n.bridge); err != nil {
		return nil, err
	}
	if err := run("ip", "link", "set", n.bridge, "up"); err != nil {
		return nil, err
	}
	n.log.Info("netns network", zap.String("bridge", n.bridge), zap.String("subnet", n.prefix))
	return n, nil
}

// Gateway is the launcher's own address on the bridge: a driver running
// in the launcher's process is the host at this address.
func (n *Network) Gateway() string { return n.subnet + "1" }

// Subnet is the network's /24.
func (n *Network) Subnet() string { return n.prefix }

// Bridge is the bridge's interface name.
func (n *Network) Bridge() string { return n.bridge }

// AddHost makes a host (a network namespace on the bridge) named name,
// or returns the one that exists.
func (n *Network) AddHost(name string) (_ *Host, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("launcher: network is closed")
	}
	if h := n.hosts[name]; h != nil {
		return h, nil
	}
	if n.next >= 240 {
		return nil, errors.New("launcher: a netns network holds at most 240 hosts")
	}
	idx := n.next
	n.next++
	h := &Host{Name: name, Namespace: "manta-" + n.base + "-" + name, IP: n.subnet + strconv.Itoa(10+idx),
		veth: "mtv" + n.base + strconv.Itoa(idx)}
	peer := "mtp" + n.base + strconv.Itoa(idx)
	defer func() {
		if err != nil {
			run("ip", "link", "del", h.veth)
			run("ip", "netns", "del", h.Namespace)
		}
	}()
	steps := [][]string{
		{"ip", "netns", "add", h.Namespace},
		{"ip", "link", "add", h.veth, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", h.Namespace},
		{"ip", "-n", h.Namespace, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", h.Namespace, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"ip", "-n", h.Namespace, "link", "set", "eth0", "up"},
		{"ip", "-n", h.Namespace, "link", "set", "lo", "up"},
		{"ip", "link", "set", h.veth, "master", n.bridge},
		{"ip", "link", "set", h.veth, "up"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("%w: host %s: %v", ErrHostsUnsupported, name, err)
		}
	}
	n.hosts[name] = h
	n.order = append(n.order, h)
	n.log.Info("host", zap.String("host", name), zap.String("netns", h.Namespace), zap.String("ip", h.IP))
	return h, nil
}

// Host returns the host named name, or nil.
func (n *Network) Host(name string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hosts[name]
}

// Hosts returns every host, in the order they were made.
func (n *Network) Hosts() []Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Host, len(n.order))
	for i, h := range n.order {
		out[i] = *h
	}
	return out
}

// HostVeth is the name of the veth end of host name in the launcher's
// namespace: traffic on its egress enters the host.
func (n *Network) HostVeth(name string) string {
	if h := n.Host(name); h != nil {
		return h.veth
	}
	return ""
}

// Command returns a command that runs binary with args on host h, in its
// network namespace and with a private tmpfs on /dev/shm. The process's
// PID is binary's own.
func (h *Host) Command(binary string, args ...string) *exec.Cmd {
	// mode=1777 as the real /dev/shm; no size: tmpfs's default (half of
	// RAM), committed only as used.
	script := `mount -t tmpfs -o mode=1777 manta-shm /dev/shm && exec "$0" "$@"`
	full := append([]string{"netns", "exec", h.Namespace, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", script, binary}, args...)
	return exec.Command("ip", full...)
}

// Exec runs a command in the host's network namespace (tc, iptables) and
// returns its error with its output.
func (h *Host) Exec(name string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", h.Namespace, name}, args...)...)
}

// Close removes every host and the bridge; their processes must have
// exited. Idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	hosts := n.order
	n.mu.Unlock()
	var errs []error
	for _, h := range hosts {
		// Deleting the namespace destroys its veth end and so the pair.
		if err := run("ip", "netns", "del", h.Namespace); err != nil {
			errs = append(errs, err)
		}
		if linkExists(h.veth) {
			run("ip", "link", "del", h.veth)
		}
	}
	if linkExists(n.bridge) {
		if err := run("ip", "link", "del", n.bridge); err != nil {
			errs = append(errs, err)
		}
	}
	n.log.Info("netns network removed", zap.String("bridge", n.bridge))
	return errors.Join(errs...)
}

// Stale names: a namespace, bridge or veth of a run whose PID is gone.
var (
	staleNetns = regexp.MustCompile(`^manta-(\d+)[a-z]-`)
	staleLink  = regexp.MustCompile(`^mt[bvp](\d+)[a-z]`)
)

// sweepNetns removes the namespaces and links of launchers that died
// without removing theirs (SIGKILL, a crash).
func sweepNetns(log *zap.Logger) {
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			if m := staleNetns.FindStringSubmatch(name); m != nil && pidGone(m[1]) {
				if err := run("ip", "netns", "del", name); err == nil {
					log.Info("removed a stale netns host", zap.String("netns", name))
				}
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return
	}
	// veth ends first: a bridge goes once its ports have.
	for _, pass := range []string{"v", "b"} {
		for _, ifc := range ifs {
			m := staleLink.FindStringSubmatch(ifc.Name)
			if m == nil || ifc.Name[2:3] == "b" && pass == "v" || ifc.Name[2:3] != "b" && pass == "b" || !pidGone(m[1]) {
				continue
			}
			if linkExists(ifc.Name) && run("ip", "link", "del", ifc.Name) == nil {
				log.Info("removed a stale netns link", zap.String("link", ifc.Name))
			}
		}
	}
}

func pidGone(s string) bool {
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// freeSubnet returns a K in 1..254 such that no interface of this
// namespace has an address in 10.213.K.0/24.
func freeSubnet() (int, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return 0, err
	}
	used := map[int]bool{}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil {
			continue
		}
		ip := ipn.IP.To4()
		if ip[0] == 10 && ip[1] == 213 {
			used[int(ip[2])] = true
		}
	}
	// Start from the PID so that concurrent machines' runs in tests rarely
	// even look at the same ones.
	start := os.Getpid() % 254
	for i := range 254 {
		k := (start+i)%254 + 1
		if !used[k] {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w: every /24 of 10.213.0.0/16 is taken on this machine", ErrHostsUnsupported)
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// run runs a command and returns its output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// lockFile takes an exclusive flock on path; the returned func releases
// it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
