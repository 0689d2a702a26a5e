package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Network faults: they need each head and raylet on a host of its own
// (Options.Hosts = launcher.HostsNetns) and are made by the env's
// NetShaper (netshape.go).
const (
	faultSlowLeader = "slow-leader"
	faultLossyLinks = "lossy-links"
	faultAsymCut    = "asymmetric-partition"
)

// netFaultUnsupported is "" when part is the netns partitioner, i.e. the
// run has netns hosts.
func netFaultUnsupported(part Partitioner) string {
	if _, ok := part.(*netnsPartition); !ok {
		return "needs --hosts netns (each head and raylet a host of its own)"
	}
	return part.Unsupported()
}

// undoAll runs every undo, all of them even when one fails.
func undoAll(undos []func() error) error {
	var errs []error
	for _, u := range undos {
		errs = append(errs, u())
	}
	return errors.Join(errs...)
}

// slowLeader adds 50 ms ± 20 ms each way between the leader's host and
// every other host (100 ms more per round trip), without reordering.
type slowLeader struct{}

func (slowLeader) Name() string { return faultSlowLeader }

func (slowLeader) Unsupported(heads, _ int, part Partitioner) string {
	if heads < 3 {
		return "needs at least 3 heads to keep a quorum"
	}
	return netFaultUnsupported(part)
}

func (slowLeader) Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error) {
	i, role, err := target(ctx, env, true, pick)
	if err != nil {
		return nil, err
	}
	h := env.Cluster.Heads()[i]
	spec := LinkSpec{Delay: 50 * time.Millisecond, Jitter: 20 * time.Millisecond}
	var undos []func() error
	u, err := env.shaper.Impair(h.Host, nil, spec)
	if err != nil {
		return nil, err
	}
	undos = append(undos, u)
	for _, o := range env.hostNames() {
		if o == h.Host {
			continue
		}
		u, err := env.shaper.Impair(o, []string{h.Host}, spec)
		if err != nil {
			undoAll(undos)
			return nil, err
		}
		undos = append(undos, u)
	}
	return &Injection{Target: h.ID, Role: role, PID: h.PID, Action: "links to and from its host: " + spec.String(), At: time.Now(),
		Recover: func(context.Context) error { return undoAll(undos) }}, nil
}

// lossyLinks drops 1-10 % of the packets both ways on one to three links
// between hosts (heads and raylets) drawn by pick, with 5 ms ± 2 ms of
// delay; on odd picks it also limits a raylet's host to 20 Mbit/s.
type lossyLinks struct{}

func (lossyLinks) Name() string { return faultLossyLinks }

func (lossyLinks) Unsupported(_, _ int, part Partitioner) string { return netFaultUnsupported(part) }

func (lossyLinks) Inject(_ context.Context, env *Env, pick uint64) (*Injection, error) {
	hosts := env.hostNames()
	if len(hosts) < 2 {
		return nil, errors.New("fewer than 2 hosts")
	}
	links := 1 + int(pick%3)
	loss := float64(1+(pick/3)%10) / 100
	spec := LinkSpec{Loss: loss, Delay: 5 * time.Millisecond, Jitter: 2 * time.Millisecond}
	var undos []func() error
	var targets []string
	r := pick
	for range links {
		a := hosts[r%uint64(len(hosts))]
		r /= uint64(len(hosts))
		b := hosts[(r%uint64(len(hosts)-1)+1+indexOf(hosts, a))%uint64(len(hosts))]
		r /= uint64(len(hosts) - 1)
		for _, dir := range [][2]string{{a, b}, {b, a}} {
			u, err := env.shaper.Impair(dir[0], []string{dir[1]}, spec)
			if err != nil {
				undoAll(undos)
				return nil, err
			}
			undos = append(undos, u)
		}
		targets = append(targets, a+"<->"+b)
	}
	action := fmt.Sprintf("%s on %v", spec, targets)
	if nodes := env.Cluster.Nodes(); pick%2 == 1 && len(nodes) > 0 {
		n := nodes[(pick/2)%uint64(len(nodes))]
		if n.Running && n.Host != "" {
			limit := LinkSpec{RateBits: 20_000_000}
			u, err := env.shaper.Impair(n.Host, nil, limit)
			if err != nil {
				undoAll(undos)
				return nil, err
			}
			undos = append(undos, u)
			action += fmt.Sprintf("; %s limited to %s", n.Host, limit)
		}
	}
	return &Injection{Target: fmt.Sprint(targets), Role: "links", Action: action, At: time.Now(),
		Recover: func(context.Context) error { return undoAll(undos) }}, nil
}

func indexOf(s []string, v string) uint64 {
	for i, x := range s {
		if x == v {
			return uint64(i)
		}
	}
	return 0
}

// asymCut cuts one direction only between a head (even picks: the
// leader) and the other heads: what it sends is lost (pick/2 even), or
// what it is sent.
type asymCut struct{}

func (asymCut) Name() string { return faultAsymCut }

func (asymCut) Unsupported(heads, _ int, part Partitioner) string {
	if heads < 3 {
		return "needs at least 3 heads to keep a quorum"
	}
	return netFaultUnsupported(part)
}

func (asymCut) Inject(ctx context.Context, env *Env, pick uint64) (*Injection, error) {
	i, role, err := target(ctx, env, pick%2 == 0, pick/4)
	if err != nil {
		return nil, err
	}
	heads := env.Cluster.Heads()
	h := heads[i]
	outgoing := (pick/2)%2 == 0
	var undos []func() error
	var action string
	if outgoing {
		var others []string
		for j, o := range heads {
			if j != i {
				others = append(others, o.Host)
			}
		}
		u, err := env.shaper.Impair(h.Host, others, LinkSpec{Drop: true})
		if err != nil {
			return nil, err
		}
		undos = append(undos, u)
		action = "drops what it sends to the other heads"
	} else {
		for j, o := range heads {
			if j == i {
				continue
			}
			u, err := env.shaper.Impair(o.Host, []string{h.Host}, LinkSpec{Drop: true})
			if err != nil {
				undoAll(undos)
				return nil, err
			}
			undos = append(undos, u)
		}
		action = "drops what the other heads send it"
	}
	return &Injection{Target: h.ID, Role: role, PID: h.PID, Action: action, At: time.Now(),
		Recover: func(context.Context) error { return undoAll(undos) }}, nil
}

// hostNames lists the hosts of the running heads and raylets.
func (e *Env) hostNames() []string {
	var out []string
	for _, h := range e.Cluster.Heads() {
		if h.Host != "" {
			out = append(out, h.Host)
		}
	}
	for _, n := range e.Cluster.Nodes() {
		if n.Running && n.Host != "" {
			out = append(out, n.Host)
		}
	}
	return out
}
