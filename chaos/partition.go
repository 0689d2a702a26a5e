package chaos

import (
	"fmt"
	"os"
	"os/exec"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/launcher"
)

// Partition modes for Options.Partition.
const (
	PartitionAuto     = "auto"     // iptables when it works here, else none
	PartitionIPTables = "iptables" // iptables or fail
	PartitionNone     = "none"     // never partition
)

// A Partitioner cuts heads off from each other while clients can still
// reach every head, so a cut-off head is seen refusing writes.
type Partitioner interface {
	// Mechanism names how partitions are made: "iptables" or "none".
	Mechanism() string
	// Describe says how, for the report.
	Describe() string
	// Supported is "" when Isolate works, else why not.
	Unsupported() string
	// Isolate cuts head i off from every other head until heal is called.
	Isolate(heads []launcher.HeadProc, i int) (heal func() error, err error)
	// HealAll undoes every cut still in place.
	HealAll() error
	// Close removes everything the partitioner set up; the heads must
	// have exited. Idempotent.
	Close() error
	// Leftovers names processes still inside the partitioner's process
	// groups, which Close cannot remove: a leak check that also sees a
	// head's own children.
	Leftovers() []int
}

// PartitionSupport says whether the iptables mechanism can work here,
// without changing anything: "" if it can, else why not.
func PartitionSupport() string {
	if os.Geteuid() != 0 {
		return "not running as root (iptables needs it)"
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return "iptables not found (install Debian's iptables package)"
	}
	if _, _, err := cgroup2Mount(); err != nil {
		return err.Error()
	}
	return ""
}

// setupPartition prepares partitions for a cluster of n heads before it
// starts: with iptables it returns the binary the launcher must start (a
// wrapper that puts each head in its own cgroup), otherwise binary
// unchanged and a partitioner whose Unsupported says why.
func setupPartition(mode string, n int, binary, dir string, log *zap.Logger) (Partitioner, string, error) {
	switch mode {
	case PartitionNone:
		return noPartition{reason: "disabled (--partition none)"}, binary, nil
	case PartitionAuto, PartitionIPTables:
	default:
		return nil, "", fmt.Errorf("%w: partition mode %q; want %s, %s or %s", ErrBadOptions, mode, PartitionAuto, PartitionIPTables, PartitionNone)
	}
	why := PartitionSupport()
	if why == "" {
		p, wrapper, err := newIPTablesPartition(n, binary, dir, log)
		if err == nil {
			return p, wrapper, nil
		}
		why = err.Error()
	}
	if mode == PartitionIPTables {
		return nil, "", fmt.Errorf("%w: %s", ErrPartitionUnsupported, why)
	}
	log.Info("partitions unsupported here; partition faults are skipped", zap.String("reason", why))
	return noPartition{reason: why}, binary, nil
}

// noPartition is the partitioner where none works.
type noPartition struct{ reason string }

func (p noPartition) Mechanism() string   { return "none" }
func (p noPartition) Describe() string    { return "none: " + p.reason }
func (p noPartition) Unsupported() string { return p.reason }
func (p noPartition) Isolate([]launcher.HeadProc, int) (func() error, error) {
	return nil, fmt.Errorf("%w: %s", ErrPartitionUnsupported, p.reason)
}
func (p noPartition) HealAll() error   { return nil }
func (p noPartition) Close() error     { return nil }
func (p noPartition) Leftovers() []int { return nil }
