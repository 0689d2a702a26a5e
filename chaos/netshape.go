package chaos

// Network faults between netns hosts (launcher.HostsNetns). Every rule
// lives inside the namespace of the host whose outgoing traffic it
// affects, in a chain of its own (MANTA-NET, jumped to from OUTPUT for
// eth0): so one direction of a link can be cut or slowed alone, and
// everything vanishes with the namespaces at the end of the run, also
// after a crash (the launcher sweeps stale namespaces).
//
//   - drop (partitions, one direction or both): iptables DROP by
//     destination address.
//   - loss: iptables' statistic match drops a random share.
//   - latency and jitter: NFQUEUE and a delayer in this process
//     (nfqueue.go), on the receiving host (MANTA-NET-IN, from INPUT), since
//     this machine's kernel (and CI's) has no sch_netem.
//   - bandwidth: tc tbf on the host's eth0 (its egress) and on its veth
//     end on the bridge (its ingress).

import (
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/launcher"
)

// LinkSpec is what a network fault does to the packets it applies to.
type LinkSpec struct {
	Drop   bool          // every packet (a partition)
	Loss   float64       // a random share, 0..1
	Delay  time.Duration // added latency ...
	Jitter time.Duration // ... ± this, never reordering a flow
	// RateBits limits the host's bandwidth, both ways, in bits per
	// second (per host only: to must be empty).
	RateBits int64
}

func (s LinkSpec) String() string {
	var p []string
	if s.Drop {
		p = append(p, "drop")
	}
	if s.Loss > 0 {
		p = append(p, fmt.Sprintf("loss %.1f%%", 100*s.Loss))
	}
	if s.Delay > 0 {
		p = append(p, fmt.Sprintf("delay %v±%v", s.Delay, s.Jitter))
	}
	if s.RateBits > 0 {
		p = append(p, fmt.Sprintf("rate %dkbit", s.RateBits/1000))
	}
	return strings.Join(p, ", ")
}

// NetShaper applies LinkSpecs to the hosts of a netns network. Safe for
// concurrent use.
type NetShaper struct {
	net *launcher.Network
	log *zap.Logger

	mu       sync.Mutex
	chains   map[string]bool // hosts with MANTA-NET in place
	queue    uint16
	undo     map[int]func() error // every impairment in place, by id
	nextUndo int
	seed     uint64
}

// NewNetShaper shapes the hosts of n.
func NewNetShaper(n *launcher.Network, seed uint64, log *zap.Logger) *NetShaper {
	if log == nil {
		log = zap.NewNop()
	}
	return &NetShaper{net: n, log: log.Named("netshape"), chains: map[string]bool{}, undo: map[int]func() error{}, seed: seed}
}

// NetShapeSupport says whether network faults can be made here: "" if
// they can.
func NetShapeSupport() string {
	if _, err := exec.LookPath("iptables"); err != nil {
		return "iptables not found (install Debian's iptables package)"
	}
	if _, err := exec.LookPath("tc"); err != nil {
		return "tc not found (install Debian's iproute2 package)"
	}
	return ""
}

// netChain holds a host's rules for what it sends (drops, losses),
// netChainIn for what it receives (delays: see Impair).
const (
	netChain   = "MANTA-NET"
	netChainIn = "MANTA-NET-IN"
)

func (s *NetShaper) host(name string) (*launcher.Host, error) {
	h := s.net.Host(name)
	if h == nil {
		return nil, fmt.Errorf("no netns host %q", name)
	}
	return h, nil
}

// chain makes MANTA-NET in h's namespace, once.
func (s *NetShaper) chain(h *launcher.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chains[h.Name] {
		return nil
	}
	if err := h.Exec("iptables", "-w", "-N", netChain); err != nil {
		return err
	}
	if err := h.Exec("iptables", "-w", "-A", "OUTPUT", "-o", "eth0", "-j", netChain); err != nil {
		return err
	}
	if err := h.Exec("iptables", "-w", "-N", netChainIn); err != nil {
		return err
	}
	if err := h.Exec("iptables", "-w", "-A", "INPUT", "-i", "eth0", "-j", netChainIn); err != nil {
		return err
	}
	s.chains[h.Name] = true
	return nil
}

// Impair applies spec to the traffic host from sends to each host of to
// (every host when to is empty) until the returned undo runs.
func (s *NetShaper) Impair(from string, to []string, spec LinkSpec) (undo func() error, err error) {
	h, err := s.host(from)
	if err != nil {
		return nil, err
	}
	if spec.RateBits > 0 && len(to) > 0 {
		return nil, errors.New("a bandwidth limit applies to a whole host")
	}
	if err := s.chain(h); err != nil {
		return nil, err
	}
	var dsts []string // -d arguments; nil: everything on eth0
	for _, name := range to {
		d, err := s.host(name)
		if err != nil {
			return nil, err
		}
		dsts = append(dsts, d.IP)
	}
	if len(dsts) == 0 {
		dsts = []string{s.net.Subnet()}
	}
	var undos []func() error
	undoAll := func() error {
		var errs []error
		// In reverse: the queue's rule goes before its delayer.
		for i := len(undos) - 1; i >= 0; i-- {
			errs = append(errs, undos[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			undoAll()
		}
	}()
	rule := func(insert bool, args ...string) error {
		op := "-A"
		if insert {
			op = "-I" // drops and losses go before a delay's queue
		}
		if err := h.Exec("iptables", append([]string{"-w", op, netChain}, args...)...); err != nil {
			return err
		}
		undos = append(undos, func() error { return h.Exec("iptables", append([]string{"-w", "-D", netChain}, args...)...) })
		return nil
	}
	for _, d := range dsts {
		switch {
		case spec.Drop:
			if err := rule(true, "-d", d, "-j", "DROP"); err != nil {
				return nil, err
			}
		case spec.Loss > 0:
			if err := rule(true, "-d", d, "-m", "statistic", "--mode", "random", "--probability",
				strconv.FormatFloat(spec.Loss, 'f', 4, 64), "-j", "DROP"); err != nil {
				return nil, err
			}
		}
	}
	if spec.Delay > 0 && !spec.Drop {
		// Packets are held where they arrive, not where they leave: a
		// packet held in its sender's namespace still counts against its
		// socket's TCP small-queue budget (about 1 ms of data), which caps
		// a delayed flow at a trickle; once across the veth it belongs to
		// no socket. (netem orphans the packets it holds for the same
		// reason.) So the delay of A -> B is an NFQUEUE rule in B's
		// namespace on packets from A; for all of A's traffic, one in
		// every other host (the launcher's own host excepted).
		var dstHosts []string
		if len(to) > 0 {
			dstHosts = to
		} else {
			for _, o := range s.net.Hosts() {
				if o.Name != from {
					dstHosts = append(dstHosts, o.Name)
				}
			}
		}
		for _, name := range dstHosts {
			dh, err := s.host(name)
			if err != nil {
				return nil, err
			}
			if err := s.chain(dh); err != nil {
				return nil, err
			}
			s.mu.Lock()
			s.queue++
			q := s.queue
			s.mu.Unlock()
			d, err := newDelayer("/run/netns/"+dh.Namespace, q, spec.Delay, spec.Jitter, s.seed)
			if err != nil {
				return nil, fmt.Errorf("delay on %s: %w", name, err)
			}
			undos = append(undos, func() error { d.Close(); return nil })
			// --queue-bypass: should the delayer be gone, packets pass.
			args := []string{"-s", h.IP, "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(q)), "--queue-bypass"}
			if err := dh.Exec("iptables", append([]string{"-w", "-A", netChainIn}, args...)...); err != nil {
				return nil, err
			}
			undos = append(undos, func() error { return dh.Exec("iptables", append([]string{"-w", "-D", netChainIn}, args...)...) })
		}
	}
	if spec.RateBits > 0 {
		rate := strconv.FormatInt(spec.RateBits, 10) + "bit"
		// Both ways: eth0's egress leaves the host, the bridge port's
		// egress enters it. A burst of 256 KiB passes whole GSO segments.
		tbf := []string{"root", "tbf", "rate", rate, "burst", "256kb", "latency", "200ms"}
		if err := run("tc", append([]string{"-n", h.Namespace, "qdisc", "replace", "dev", "eth0"}, tbf...)...); err != nil {
			return nil, err
		}
		undos = append(undos, func() error { return run("tc", "-n", h.Namespace, "qdisc", "del", "dev", "eth0", "root") })
		veth := s.net.HostVeth(from)
		if err := run("tc", append([]string{"qdisc", "replace", "dev", veth}, tbf...)...); err != nil {
			return nil, err
		}
		undos = append(undos, func() error { return run("tc", "qdisc", "del", "dev", veth, "root") })
	}
	s.mu.Lock()
	id := s.nextUndo
	s.nextUndo++
	s.undo[id] = undoAll
	s.mu.Unlock()
	s.log.Info("impaired", zap.String("from", from), zap.Strings("to", to), zap.Stringer("spec", spec))
	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			s.mu.Lock()
			delete(s.undo, id)
			s.mu.Unlock()
			uerr = undoAll()
		})
		return uerr
	}, nil
}

// HealAll undoes every impairment in place.
func (s *NetShaper) HealAll() error {
	s.mu.Lock()
	undos := s.undo
	s.undo = map[int]func() error{}
	s.mu.Unlock()
	var errs []error
	for _, u := range undos {
		errs = append(errs, u())
	}
	return errors.Join(errs...)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// netnsPartition cuts heads off by DROP rules in the hosts' namespaces.
type netnsPartition struct {
	mu     sync.Mutex
	shaper *NetShaper // set once the cluster is up
}

func (p *netnsPartition) bind(s *NetShaper) {
	p.mu.Lock()
	p.shaper = s
	p.mu.Unlock()
}

func (p *netnsPartition) get() (*NetShaper, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shaper == nil {
		return nil, errors.New("netns partition: the cluster is not up")
	}
	return p.shaper, nil
}

func (*netnsPartition) Mechanism() string { return "netns" }
func (*netnsPartition) Describe() string {
	return "netns: iptables DROP rules inside the heads' network namespaces"
}
func (*netnsPartition) Unsupported() string { return NetShapeSupport() }

func (p *netnsPartition) Isolate(heads []launcher.HeadProc, i int) (func() error, error) {
	s, err := p.get()
	if err != nil {
		return nil, err
	}
	var others []string
	for j, h := range heads {
		if j != i {
			others = append(others, h.Host)
		}
	}
	var undos []func() error
	heal := func() error {
		var errs []error
		for _, u := range undos {
			errs = append(errs, u())
		}
		return errors.Join(errs...)
	}
	u, err := s.Impair(heads[i].Host, others, LinkSpec{Drop: true})
	if err != nil {
		return nil, err
	}
	undos = append(undos, u)
	for _, o := range others {
		u, err := s.Impair(o, []string{heads[i].Host}, LinkSpec{Drop: true})
		if err != nil {
			heal()
			return nil, err
		}
		undos = append(undos, u)
	}
	return heal, nil
}

func (p *netnsPartition) HealAll() error {
	s, err := p.get()
	if err != nil {
		return nil
	}
	return s.HealAll()
}

// Close: the rules go with the namespaces, which the launcher removes.
func (p *netnsPartition) Close() error     { return p.HealAll() }
func (p *netnsPartition) Leftovers() []int { return nil }
