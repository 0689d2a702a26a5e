package chaos

// How a head is cut off on loopback, where every head has the address
// 127.0.0.1 and every head-to-head connection is dialed from an ephemeral
// port. Port rules alone cannot do it: "drop to head B's Raft port" would
// also cut C from B, and a head's own dials to its peers come from ports
// no rule can name in advance. So:
//
//  1. Each head runs in its own cgroup (v2): the launcher starts a small
//     wrapper that moves itself into <chaos cgroup>/head-N and execs manta,
//     so every socket the head ever opens belongs to that cgroup.
//  2. From before the heads start until the run ends, a rule in a chain of
//     our own (MANTA-CHAOS-<pid>-<n>, jumped to from OUTPUT for lo) tags
//     every connection with its dialer: a packet in the original
//     direction whose socket is in head-N's cgroup sets CONNMARK N (in
//     bits 24-31). Every packet on loopback passes OUTPUT with its sending
//     socket, and a dialer's SYN is its first packet, so every
//     head-to-head connection is tagged before it carries a byte.
//     The harness's own client connections are in no head's cgroup and
//     stay untagged.
//  3. Isolating head A adds, for each peer B, DROP rules for connections
//     whose dialer is A and whose original destination port (conntrack's
//     --ctorigdstport, the same for both directions) is one of B's two
//     listening ports, and for connections dialed by B to A's ports. A
//     head-to-head connection is exactly (dialer, listener port), so this
//     drops both directions of every connection between A and its peers,
//     new and established, and nothing else: clients still reach A (and
//     see it refuse writes), and B and C still talk to each other.
//     The rules go in a chain of A's own, made live by one jump rule, so
//     the cut starts (and, deleting the jump, ends) at one instant.
//  4. Healing deletes exactly the rules added; closing deletes the chain
//     and its jump, then the cgroups. A run killed with SIGKILL leaves its
//     chain behind; the next run removes chains and cgroups whose PID is
//     gone.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/launcher"
)

// partitionSeq tells apart partitioners of one process (tests run several).
var partitionSeq atomic.Int64

// markMask holds the dialer's head number in a connection's mark, away
// from the low bits other software uses.
const markMask = 0xff000000

type ipTablesPartition struct {
	log   *zap.Logger
	chain string
	cgFS  string // our cgroup directory on the filesystem
	cgRel string // the same, relative to the cgroup2 root, for --path
	n     int

	mu     sync.Mutex
	hooked bool         // the chain exists and OUTPUT jumps to it
	cuts   map[int]bool // heads cut off, each by a chain of its own
	closed bool
}

// newIPTablesPartition creates the cgroups, the chain with its tag rules
// and the wrapper script; on failure it removes what it made.
func newIPTablesPartition(n int, binary, dir string, log *zap.Logger) (_ *ipTablesPartition, wrapper string, err error) {
	if n > 254 {
		return nil, "", fmt.Errorf("%d heads do not fit the connection mark", n)
	}
	mount, root, err := cgroup2Mount()
	if err != nil {
		return nil, "", err
	}
	sweepStale(mount, log)
	name := fmt.Sprintf("manta-chaos-%d-%d", os.Getpid(), partitionSeq.Add(1))
	p := &ipTablesPartition{
		log:   log.Named("partition"),
		chain: strings.ToUpper(name),
		cgFS:  filepath.Join(mount, name),
		cgRel: strings.TrimPrefix(filepath.Join(root, name), "/"),
		n:     n,
		cuts:  map[int]bool{},
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for i := range n {
		if err := os.MkdirAll(filepath.Join(p.cgFS, headID(i)), 0o755); err != nil {
			return nil, "", fmt.Errorf("create cgroup: %w", err)
		}
	}
	if err := iptables("-N", p.chain); err != nil {
		return nil, "", err
	}
	p.hooked = true
	if err := iptables("-I", "OUTPUT", "1", "-o", "lo", "-j", p.chain); err != nil {
		iptables("-X", p.chain)
		p.hooked = false
		return nil, "", err
	}
	for i := range n {
		if err := iptables(append([]string{"-A", p.chain}, p.tagRule(i)...)...); err != nil {
			return nil, "", fmt.Errorf("iptables cannot match cgroups or marks here: %w", err)
		}
	}
	if wrapper, err = p.writeWrapper(binary, dir); err != nil {
		return nil, "", err
	}
	p.log.Info("partitions by iptables", zap.String("chain", p.chain), zap.String("cgroup", p.cgFS))
	return p, wrapper, nil
}

func headID(i int) string { return "head-" + strconv.Itoa(i+1) }

func mark(i int) string { return fmt.Sprintf("0x%x/0x%x", (i+1)<<24, markMask) }

func (p *ipTablesPartition) tagRule(i int) []string {
	return []string{"-m", "conntrack", "--ctdir", "ORIGINAL",
		"-m", "cgroup", "--path", p.cgRel + "/" + headID(i),
		"-j", "CONNMARK", "--set-xmark", mark(i)}
}

func dropRule(dialer int, port string) []string {
	return []string{"-p", "tcp", "-m", "connmark", "--mark", mark(dialer),
		"-m", "conntrack", "--ctorigdstport", port, "-j", "DROP"}
}

// writeWrapper writes the script the launcher starts instead of manta.
func (p *ipTablesPartition) writeWrapper(binary, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "manta-in-cgroup.sh")
	script := `#!/bin/sh
# Written by manta chaos: runs a head in its own cgroup, so that partitions
# can tell its connections from its peers' (see chaos/partition_iptables.go).
id=
prev=
for a in "$@"; do
	if [ "$prev" = "--node-id" ]; then id=$a; fi
	prev=$a
done
# Only heads are partitioned; anything else runs where it is.
case "$id" in
head-*)
	if ! echo $$ > ` + shellQuote(p.cgFS) + `/"$id"/cgroup.procs; then
		echo "manta chaos: cannot join the cgroup of head '$id'" >&2
		exit 70
	fi
	;;
esac
exec ` + shellQuote(binary) + ` "$@"
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", err
	}
	return path, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (p *ipTablesPartition) Mechanism() string { return "iptables" }

func (p *ipTablesPartition) Describe() string {
	return fmt.Sprintf("iptables: chain %s (OUTPUT, lo) drops both directions of every connection between the cut-off head and its peers, "+
		"identified by dialer (CONNMARK set from the dialer's cgroup %s/head-N) and listener port (conntrack original destination port); "+
		"client connections are untouched", p.chain, p.cgRel)
}

func (p *ipTablesPartition) Unsupported() string { return "" }

func ports(h launcher.HeadProc) ([]string, error) {
	var out []string
	for _, a := range []string{h.Address, h.RaftAddress} {
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("%s: address %q: %w", h.ID, a, err)
		}
		out = append(out, port)
	}
	return out, nil
}

// Isolate cuts head i off from every other head. The DROP rules go into a
// chain of their own first, and one jump to it makes them all take effect
// at once; healing removes that jump first, likewise.
func (p *ipTablesPartition) Isolate(heads []launcher.HeadProc, i int) (func() error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("partitioner closed")
	}
	if i < 0 || i >= len(heads) || i >= p.n {
		return nil, fmt.Errorf("no head %d", i)
	}
	if p.cuts[i] {
		return nil, fmt.Errorf("%s is already cut off", heads[i].ID)
	}
	mine, err := ports(heads[i])
	if err != nil {
		return nil, err
	}
	var rules [][]string
	for j, h := range heads {
		if j == i {
			continue
		}
		theirs, err := ports(h)
		if err != nil {
			return nil, err
		}
		for _, port := range theirs {
			rules = append(rules, dropRule(i, port))
		}
		for _, port := range mine {
			rules = append(rules, dropRule(j, port))
		}
	}
	cut := p.cutChain(i)
	if err := iptables("-N", cut); err != nil {
		return nil, err
	}
	p.cuts[i] = true
	for _, r := range rules {
		if err := iptables(append([]string{"-A", cut}, r...)...); err != nil {
			p.healLocked(i)
			return nil, err
		}
	}
	if err := iptables("-A", p.chain, "-j", cut); err != nil {
		p.healLocked(i)
		return nil, err
	}
	p.log.Info("head cut off", zap.String("head", heads[i].ID), zap.String("chain", cut), zap.Int("rules", len(rules)))
	var once sync.Once
	var healErr error
	return func() error {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			healErr = p.healLocked(i)
			p.log.Info("partition healed", zap.String("head", heads[i].ID))
		})
		return healErr
	}, nil
}

// cutChain names the chain of head i's DROP rules.
func (p *ipTablesPartition) cutChain(i int) string { return p.chain + "-C" + strconv.Itoa(i+1) }

// healLocked removes the jump to head i's cut chain, then the chain. A
// cut it could not remove stays recorded, so Close tries again.
func (p *ipTablesPartition) healLocked(i int) error {
	if !p.cuts[i] {
		return nil
	}
	cut := p.cutChain(i)
	// The jump may not exist (Isolate failed before adding it).
	iptables("-D", p.chain, "-j", cut)
	iptables("-F", cut)
	if err := iptables("-X", cut); err != nil {
		return err
	}
	delete(p.cuts, i)
	return nil
}

func (p *ipTablesPartition) HealAll() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for i := range p.cuts {
		errs = append(errs, p.healLocked(i))
	}
	return errors.Join(errs...)
}

// Close deletes the jump, the chain and the cgroups.
func (p *ipTablesPartition) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for i := range p.cuts {
		errs = append(errs, p.healLocked(i))
	}
	if p.hooked {
		// -D fails if the jump is already gone; -X then says whether the
		// chain is really removed.
		iptables("-D", "OUTPUT", "-o", "lo", "-j", p.chain)
		iptables("-F", p.chain)
		if err := iptables("-X", p.chain); err != nil {
			errs = append(errs, err)
		} else {
			p.hooked = false
		}
	}
	if !p.closed {
		for i := range p.n {
			if err := os.Remove(filepath.Join(p.cgFS, headID(i))); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
			}
		}
		if err := os.Remove(p.cgFS); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
		}
	}
	p.closed = true
	return errors.Join(errs...)
}

// Leftovers lists the processes still in the heads' cgroups.
func (p *ipTablesPartition) Leftovers() []int {
	var out []int
	for i := range p.n {
		b, err := os.ReadFile(filepath.Join(p.cgFS, headID(i), "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// Chain is the iptables chain's name (tests check it is gone).
func (p *ipTablesPartition) Chain() string { return p.chain }

func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cgroup2Mount finds a writable cgroup v2 hierarchy: its mount point and
// the path its root has in the hierarchy (non-"/" inside a cgroup
// namespace's bind mount).
func cgroup2Mount() (mount, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		pre, post, ok := strings.Cut(s.Text(), " - ")
		fields, fs := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(fs) < 1 || fs[0] != "cgroup2" {
			continue
		}
		if syscall.Access(fields[4], 2 /* W_OK */) != nil {
			return "", "", fmt.Errorf("cgroup v2 at %s is not writable", fields[4])
		}
		return fields[4], fields[3], nil
	}
	return "", "", errors.New("no cgroup v2 hierarchy mounted")
}

var staleName = regexp.MustCompile(`^(?i:manta-chaos)-(\d+)-\d+(-C\d+)?$`)

// sweepStale removes the chains and cgroups of runs whose process is gone
// (killed before they could clean up). Best effort.
func sweepStale(mount string, log *zap.Logger) {
	dead := func(name string) bool {
		m := staleName.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			return false
		}
		// A killed run may linger as a zombie until its reaper gets to it.
		_, state, ok := procStart(pid)
		return !ok || state == "Z"
	}
	if out, err := exec.Command("iptables", "-w", "-S").Output(); err == nil {
		var chains []string
		var jumps [][]string
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && f[0] == "-N" && dead(f[1]):
				chains = append(chains, f[1])
			case len(f) > 2 && f[0] == "-A" && f[1] == "OUTPUT" && f[len(f)-2] == "-j" && dead(f[len(f)-1]):
				jumps = append(jumps, append([]string{"-D"}, f[1:]...))
			}
		}
		for _, j := range jumps {
			iptables(j...)
		}
		// Flush them all before deleting any: a cut chain is referenced
		// from its main chain.
		for _, c := range chains {
			iptables("-F", c)
		}
		for _, c := range chains {
			if iptables("-X", c) == nil {
				log.Info("removed a stale chaos chain", zap.String("chain", c))
			}
		}
	}
	entries, _ := os.ReadDir(mount)
	for _, e := range entries {
		if !e.IsDir() || !dead(e.Name()) {
			continue
		}
		dir := filepath.Join(mount, e.Name())
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			if s.IsDir() {
				os.Remove(filepath.Join(dir, s.Name()))
			}
		}
		if os.Remove(dir) == nil {
			log.Info("removed a stale chaos cgroup", zap.String("cgroup", dir))
		}
	}
}
