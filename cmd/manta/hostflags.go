package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/chaos"
	"github.com/manta-ray/manta/internal/launcher"
)

// hostFlags are the flags of commands that start a local cluster: where
// its processes run, and what the network between netns hosts does.
type hostFlags struct {
	hosts string
	link  chaos.LinkSpec
}

func addHostFlags(cmd *cobra.Command) *hostFlags {
	f := &hostFlags{}
	fs := cmd.Flags()
	fs.StringVar(&f.hosts, "hosts", launcher.HostsLocal, "local: every process on loopback; netns: each head and raylet a host of its own (network namespace on a bridge, private /dev/shm; needs root)")
	fs.DurationVar(&f.link.Delay, "link-delay", 0, "with --hosts netns: latency added to every packet a host sends to another host (one way; a round trip between hosts gets twice this)")
	fs.DurationVar(&f.link.Jitter, "link-jitter", 0, "with --link-delay: ± this much, without reordering")
	fs.Float64Var(&f.link.Loss, "link-loss", 0, "with --hosts netns: share of the packets each host sends that are dropped (0.01 is 1%)")
	fs.Int64Var(&f.link.RateBits, "link-rate", 0, "with --hosts netns: each host's bandwidth, bits/s each way (0: unlimited)")
	return f
}

func (f *hostFlags) validate() error {
	shaped := f.link != chaos.LinkSpec{}
	switch {
	case f.hosts != launcher.HostsLocal && f.hosts != launcher.HostsNetns:
		return usageErrorf("--hosts %q: want %s or %s", f.hosts, launcher.HostsLocal, launcher.HostsNetns)
	case shaped && f.hosts != launcher.HostsNetns:
		return usageErrorf("--link-delay, --link-jitter, --link-loss and --link-rate need --hosts netns")
	case f.link.Loss < 0 || f.link.Loss >= 1 || f.link.Delay < 0 || f.link.Jitter < 0 || f.link.Jitter > f.link.Delay || f.link.RateBits < 0:
		return usageErrorf("--link-*: loss in [0,1), delay and rate not negative, jitter at most the delay")
	}
	return nil
}

// shape applies the link flags to every host of c; the returned func
// undoes them (before the cluster closes: held packets are released).
func (f *hostFlags) shape(c *launcher.Cluster, log *zap.Logger) (func(), error) {
	if f.link == (chaos.LinkSpec{}) || c.Network() == nil {
		return func() {}, nil
	}
	s := chaos.NewNetShaper(c.Network(), 1, log)
	for _, h := range c.Network().Hosts() {
		if _, err := s.Impair(h.Name, nil, f.link); err != nil {
			s.HealAll()
			return nil, fmt.Errorf("shape %s: %w", h.Name, err)
		}
	}
	return func() { s.HealAll() }, nil
}

// hostsError adds what to do to an error of netns hosts.
func hostsError(err error) error {
	return fmt.Errorf("%w\n(run as root on Linux with iproute2, util-linux and iptables, or use --hosts local)", err)
}
