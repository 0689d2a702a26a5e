// Package launcher runs a local cluster of separate manta processes: the
// heads of `manta up` and `manta demo`, the chaos harness and the
// multi-process tests. With Options.Hosts = HostsNetns each head and
// raylet runs as a host of its own (netns.go). Each head is a `manta start --head` child in its own
// process group that dies with the launcher; the Cluster reaps every child
// and can kill, stop, pause, resume and restart them one by one.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/tlsconfig"
)

// DefaultHeadPort is a netns head's gRPC port; Raft takes the next one.
const DefaultHeadPort = 7379

// DefaultStartTimeout bounds Start when its context has no deadline.
const DefaultStartTimeout = 60 * time.Second

// ClusterFile is the name of the file in Options.DataDir that describes the
// running cluster.
const ClusterFile = "cluster.json"

// Options configures a local cluster.
type Options struct {
	// Binary is the manta binary; default os.Executable().
	Binary string
	// Heads is the number of heads, usually 1, 3 or 5.
	Heads int
	// Nodes is the number of raylets (node-1 ... node-N, separate
	// `manta start --address` processes) Start adds once the heads are up;
	// NodeArgs(i) adds arguments to raylet i's command line. AddNode adds
	// more later.
	Nodes    int
	NodeArgs func(i int) []string
	// DataDir holds one directory per head (head-1 ... head-N, which are
	// also the heads' IDs), their logs (head.log) and cluster.json.
	DataDir string
	// Token presets the cluster token; when empty the bootstrap leader
	// generates one, read back from DataDir/head-1/token.
	Token string
	// ExtraHeadArgs are appended to every head's command line.
	ExtraHeadArgs []string
	// Autoscale, when set, is an autoscaler config every head runs with
	// (the leader's launches raylets, kept in DataDir/autoscaler).
	Autoscale string
	// Hosts is HostsLocal (default: every process on loopback) or
	// HostsNetns (each head and raylet a host of its own in a network
	// namespace with a private /dev/shm; see netns.go). Needs root.
	Hosts  string
	Logger *zap.Logger
	// TLS makes a CA (DataDir/tls, kept across restarts) and a certificate
	// for every head, raylet and this launcher's clients, and starts every
	// process with mutual TLS.
	TLS bool
	// Ports chooses n loopback ports for a fresh local cluster; nil picks
	// free ones. Tests set it to lose the race for a port on purpose.
	Ports func(n int) ([]int, error)
}

// HeadProc describes one head of the cluster.
type HeadProc struct {
	ID          string
	Address     string // gRPC
	RaftAddress string
	DataDir     string
	PID         int // of the latest start
	Running     bool
	Paused      bool
	// Host is the head's netns host (HostsNetns), else "".
	Host string
}

type headState struct {
	HeadProc
	args []string
	proc *proc
	host *Host // its netns host, or nil on loopback
}

// Cluster is a running local cluster. Its methods are safe for concurrent
// use; head indexes are 0-based (index i is head-(i+1)).
type Cluster struct {
	opts Options
	log  *zap.Logger

	mu     sync.Mutex
	heads  []*headState
	nodes  []*nodeState
	token  string
	closed bool
	// net is the hosts' network in HostsNetns mode, else nil.
	net *Network
	// ca issues the processes' certificates and tls is the launcher's own
	// client identity (Options.TLS; else nil).
	ca  tlsconfig.CA
	tls *tlsconfig.Source

	wg        sync.WaitGroup // reapers, one per child ever started
	closeOnce sync.Once
	closeErr  error
}

// Start launches the heads, waits until a leader is elected, the token
// file exists and every head answers with the same leader and a heads
// table that lists them all, and writes
// DataDir/cluster.json. On failure it stops everything it started. A
// DataDir that already holds a cluster.json with as many heads restarts
// that cluster on the same addresses.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Heads < 1 {
		return nil, fmt.Errorf("launcher: Heads is %d; want at least 1", o.Heads)
	}
	if o.Nodes < 0 {
		return nil, fmt.Errorf("launcher: Nodes is %d", o.Nodes)
	}
	if o.DataDir == "" {
		return nil, errors.New("launcher: DataDir is required")
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("launcher: find own binary: %w", err)
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	switch o.Hosts {
	case "":
		o.Hosts = HostsLocal
	case HostsLocal, HostsNetns:
	default:
		return nil, fmt.Errorf("launcher: hosts mode %q; want %s or %s", o.Hosts, HostsLocal, HostsNetns)
	}
	if o.DataDir, err = filepath.Abs(o.DataDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("launcher: data dir: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}

	c := &Cluster{opts: o, log: o.Logger.Named("launcher"), token: o.Token}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	var hosts []*Host
	if o.Hosts == HostsNetns {
		// Raft keeps its peers' addresses, and netns hosts get new ones
		// every run: a cluster in this data dir could not form again.
		if cf, ok, _ := readClusterFile(filepath.Join(o.DataDir, ClusterFile)); ok && len(cf.Heads) > 0 {
			return nil, fmt.Errorf("launcher: %s holds a cluster already; netns hosts get fresh addresses every run, so use an empty data dir", o.DataDir)
		}
		if c.net, err = NewNetwork(o.Logger); err != nil {
			return nil, err
		}
		for i := range o.Heads {
			h, err := c.net.AddHost("head-" + strconv.Itoa(i+1))
			if err != nil {
				return nil, err
			}
			hosts = append(hosts, h)
		}
	}
	grpcAddrs, raftAddrs, fresh, err := c.addresses(hosts)
	if err != nil {
		return nil, err
	}
	if o.TLS {
		if err := c.setupTLS(); err != nil {
			return nil, err
		}
	}
	var tokenArgs []string
	if o.Token != "" {
		// A file keeps the token off the command line (and out of ps).
		tf := filepath.Join(o.DataDir, "preset-token")
		if err := os.WriteFile(tf, []byte(o.Token+"\n"), 0o600); err != nil {
			return nil, err
		}
		tokenArgs = []string{"--token-file", tf}
	}
	for attempt := 1; ; attempt++ {
		c.configureHeads(grpcAddrs, raftAddrs, hosts, tokenArgs)
		err = c.startHeads(ctx)
		if err == nil {
			break
		}
		// A port that was free when chosen can be taken before the head
		// binds it. A fresh cluster has nothing to keep: start it over
		// on other ports.
		if !fresh || attempt == portAttempts || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
		c.log.Warn("a head's port was taken before it bound it; starting the heads again on other ports", zap.Error(err))
		if err := c.discardHeads(); err != nil {
			return nil, err
		}
		if grpcAddrs, raftAddrs, fresh, err = c.addresses(hosts); err != nil {
			return nil, err
		}
	}
	for i := range o.Nodes {
		var extra []string
		if o.NodeArgs != nil {
			extra = o.NodeArgs(i)
		}
		if _, err := c.AddNode(ctx, extra...); err != nil {
			return nil, err
		}
	}
	if err := c.writeClusterFile(); err != nil {
		return nil, err
	}
	c.log.Info("cluster ready", zap.Strings("heads", grpcAddrs), zap.String("data_dir", o.DataDir))
	return c, nil
}

// addresses reuses the addresses of a cluster.json of the same size in the
// data dir, so a restarted cluster keeps its Raft membership, and otherwise
// allocates fresh loopback ports. Netns hosts each have an address of
// their own and take the default ports on it; their network is new every
// run, so a cluster in a reused data dir does not keep its addresses.
func (c *Cluster) addresses(hosts []*Host) (grpcAddrs, raftAddrs []string, fresh bool, err error) {
	if hosts != nil {
		for _, h := range hosts {
			grpcAddrs = append(grpcAddrs, net.JoinHostPort(h.IP, strconv.Itoa(DefaultHeadPort)))
			raftAddrs = append(raftAddrs, net.JoinHostPort(h.IP, strconv.Itoa(DefaultHeadPort+1)))
		}
		return grpcAddrs, raftAddrs, false, nil
	}
	if cf, ok, err := readClusterFile(filepath.Join(c.opts.DataDir, ClusterFile)); err != nil {
		return nil, nil, false, err
	} else if ok && len(cf.Heads) == c.opts.Heads {
		for _, h := range cf.Heads {
			grpcAddrs = append(grpcAddrs, h.Address)
			raftAddrs = append(raftAddrs, h.RaftAddress)
		}
		c.log.Info("reusing the addresses of the cluster in the data dir", zap.Strings("heads", grpcAddrs))
		return grpcAddrs, raftAddrs, false, nil
	}
	pick := c.opts.Ports
	if pick == nil {
		pick = FreePorts
	}
	ports, err := pick(2 * c.opts.Heads)
	if err != nil {
		return nil, nil, false, err
	}
	if len(ports) != 2*c.opts.Heads {
		return nil, nil, false, fmt.Errorf("launcher: %d ports chosen; want %d", len(ports), 2*c.opts.Heads)
	}
	for i := range c.opts.Heads {
		grpcAddrs = append(grpcAddrs, "127.0.0.1:"+strconv.Itoa(ports[2*i]))
		raftAddrs = append(raftAddrs, "127.0.0.1:"+strconv.Itoa(ports[2*i+1]))
	}
	return grpcAddrs, raftAddrs, true, nil
}

// portAttempts bounds how often Start picks new ports for a fresh cluster
// whose head lost a port race.
const portAttempts = 3

// configureHeads records each head's identity, addresses and arguments.
func (c *Cluster) configureHeads(grpcAddrs, raftAddrs []string, hosts []*Host, tokenArgs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heads = nil
	for i := range c.opts.Heads {
		id := "head-" + strconv.Itoa(i+1)
		dir := filepath.Join(c.opts.DataDir, id)
		host, port, _ := strings.Cut(grpcAddrs[i], ":")
		_, rport, _ := strings.Cut(raftAddrs[i], ":")
		args := []string{"start", "--head", "--node-id", id, "--data-dir", dir,
			"--host", host, "--port", port, "--raft-port", rport,
			"--peers", strings.Join(grpcAddrs, ","), "--no-raylet",
			// Heads share this machine: each takes a free port for the Jobs API
			// (written to its data dir) instead of all fighting for 8265.
			"--dashboard-port", "0"}
		args = append(append(args, tokenArgs...), c.opts.ExtraHeadArgs...)
		if c.opts.Autoscale != "" {
			args = append(args, "--autoscale", c.opts.Autoscale, "--autoscale-dir", c.AutoscaleDir())
		}
		if c.opts.TLS {
			f, err := c.issue(tlsconfig.RoleHead, id, host)
			if err != nil {
				c.log.Error("issue a head certificate", zap.Error(err)) // the head then fails to start, visibly
			}
			args = append(args, tlsArgs(f)...)
		}
		c.heads = append(c.heads, &headState{
			HeadProc: HeadProc{ID: id, Address: grpcAddrs[i], RaftAddress: raftAddrs[i], DataDir: dir},
			args:     args,
		})
		if hosts != nil {
			c.heads[i].host, c.heads[i].Host = hosts[i], hosts[i].Name
		}
	}
}

// startHeads spawns every head and waits until they form one cluster.
func (c *Cluster) startHeads(ctx context.Context) error {
	for i := range c.heads {
		if err := c.start(i); err != nil {
			return err
		}
	}
	return c.waitReady(ctx)
}

// discardHeads kills the heads of a failed fresh start and deletes their
// data dirs: Raft there was bootstrapped with the addresses being given up.
func (c *Cluster) discardHeads() error {
	c.mu.Lock()
	heads := c.heads
	c.heads = nil
	c.mu.Unlock()
	var errs []error
	for _, h := range heads {
		if h.proc != nil && !h.proc.exited() {
			errs = append(errs, h.proc.kill())
		}
		errs = append(errs, os.RemoveAll(h.DataDir))
	}
	return errors.Join(errs...)
}

// start spawns head i with its recorded arguments.
func (c *Cluster) start(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("launcher: cluster is closed")
	}
	h := c.heads[i]
	if h.proc != nil && !h.proc.exited() {
		return fmt.Errorf("launcher: %s is already running (pid %d)", h.ID, h.PID)
	}
	if err := os.MkdirAll(h.DataDir, 0o700); err != nil {
		return err
	}
	p, err := c.spawn(h.host, h.args, filepath.Join(h.DataDir, "head.log"))
	if err != nil {
		return fmt.Errorf("launcher: %s: %w", h.ID, err)
	}
	h.proc, h.PID, h.Paused = p, p.pid, false
	c.log.Info("head started", zap.String("head", h.ID), zap.Int("pid", p.pid), zap.String("address", h.Address))
	return nil
}

// waitReady waits for the token file, then for every head to name the
// same leader and to know every head, failing early if a head exits.
func (c *Cluster) waitReady(ctx context.Context) error {
	tf := c.TokenFile()
	err := c.poll(ctx, func() (bool, error) {
		if err := c.checkAlive(); err != nil {
			return false, err
		}
		tok, err := head.ReadTokenFile(tf)
		if err != nil {
			return false, nil
		}
		c.mu.Lock()
		c.token = tok
		c.mu.Unlock()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("launcher: waiting for the cluster token in %s: %w", tf, err)
	}
	cl, err := c.statusClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	var last string
	err = c.poll(ctx, func() (bool, error) {
		if err := c.checkAlive(); err != nil {
			return false, err
		}
		views := c.views(ctx, cl)
		leader := ""
		for _, v := range views {
			switch {
			case v.err != nil:
				last = fmt.Sprintf("%s: %v", v.id, v.err)
				return false, nil
			case v.leader == "" || (leader != "" && v.leader != leader):
				last = fmt.Sprintf("%s sees leader %q", v.id, v.leader)
				return false, nil
			case len(v.status.Heads) < len(c.heads):
				// Clients and `manta status` find heads through this table.
				last = fmt.Sprintf("%s knows %d of %d heads", v.id, len(v.status.Heads), len(c.heads))
				return false, nil
			}
			leader = v.leader
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("launcher: waiting for every head to agree on a leader (last: %s): %w", last, err)
	}
	return nil
}

// checkAlive fails if a head that should be running has exited, with the
// end of its log.
func (c *Cluster) checkAlive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.heads {
		if h.proc != nil && h.proc.exited() {
			return fmt.Errorf("%s (pid %d) %s; end of %s:\n%s", h.ID, h.PID, h.proc.exitDescription(),
				filepath.Join(h.DataDir, "head.log"), logTail(filepath.Join(h.DataDir, "head.log"), 20))
		}
	}
	return nil
}

// poll calls cond every 50ms until it returns true or an error, or ctx ends.
func (c *Cluster) poll(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Heads returns a snapshot of the heads, in ID order.
func (c *Cluster) Heads() []HeadProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]HeadProc, len(c.heads))
	for i, h := range c.heads {
		out[i] = h.HeadProc
		out[i].Running = h.proc != nil && !h.proc.exited()
		out[i].Paused = out[i].Running && h.Paused
	}
	return out
}

// Addresses returns every head's gRPC address.
func (c *Cluster) Addresses() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.heads))
	for i, h := range c.heads {
		out[i] = h.Address
	}
	return out
}

// Token returns the cluster token.
func (c *Cluster) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// TokenFile is the path of the file holding the token, in head-1's data
// dir.
func (c *Cluster) TokenFile() string {
	return filepath.Join(c.opts.DataDir, "head-1", head.TokenFile)
}

// Network is the hosts' network in HostsNetns mode, else nil.
func (c *Cluster) Network() *Network { return c.net }

// AddHost makes a host of its own on the cluster's network (e.g. for a
// driver) in HostsNetns mode; the caller runs processes there with
// Host.Command and ends them before Close.
func (c *Cluster) AddHost(name string) (*Host, error) {
	if c.net == nil {
		return nil, fmt.Errorf("launcher: hosts are %s; a host of its own needs %s", c.opts.Hosts, HostsNetns)
	}
	return c.net.AddHost(name)
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.opts.DataDir }

// ClusterFile is the path of cluster.json.
func (c *Cluster) ClusterFile() string { return filepath.Join(c.opts.DataDir, ClusterFile) }

// Client returns a new client over all heads with the token; the caller
// closes it.
func (c *Cluster) Client() (*cpclient.Client, error) {
	return cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), TLS: c.tls, Logger: c.opts.Logger})
}

// statusClient is a client whose per-head calls give up quickly, so a
// paused head does not hold a poll.
func (c *Cluster) statusClient() (*cpclient.Client, error) {
	return cpclient.New(cpclient.Config{Addresses: c.Addresses(), Token: c.Token(), AttemptTimeout: time.Second, TLS: c.tls, Logger: c.opts.Logger})
}

func (c *Cluster) head(i int) (*headState, error) {
	if i < 0 || i >= len(c.heads) {
		return nil, fmt.Errorf("launcher: no head %d (have %d)", i, len(c.heads))
	}
	return c.heads[i], nil
}

// running returns head i's process, or ErrNotRunning.
func (c *Cluster) running(i int) (*headState, *proc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, err := c.head(i)
	if err != nil {
		return nil, nil, err
	}
	if h.proc == nil || h.proc.exited() {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotRunning, h.ID)
	}
	return h, h.proc, nil
}

// Kill sends SIGKILL to head i and waits until it is reaped.
func (c *Cluster) Kill(i int) error {
	h, p, err := c.running(i)
	if err != nil {
		return err
	}
	c.log.Info("killing head", zap.String("head", h.ID), zap.Int("pid", p.pid))
	return p.kill()
}

// Stop sends SIGTERM to head i, then SIGKILL after 5s, and waits until it
// is reaped.
func (c *Cluster) Stop(i int) error {
	h, p, err := c.running(i)
	if err != nil {
		return err
	}
	c.log.Info("stopping head", zap.String("head", h.ID), zap.Int("pid", p.pid))
	return p.terminate(stopGrace)
}

// Pause sends SIGSTOP to head i.
func (c *Cluster) Pause(i int) error { return c.setPaused(i, syscall.SIGSTOP, true) }

// Resume sends SIGCONT to head i.
func (c *Cluster) Resume(i int) error { return c.setPaused(i, syscall.SIGCONT, false) }

func (c *Cluster) setPaused(i int, sig syscall.Signal, paused bool) error {
	h, p, err := c.running(i)
	if err != nil {
		return err
	}
	if err := p.signal(sig); err != nil {
		return fmt.Errorf("%s: %w", h.ID, err)
	}
	c.mu.Lock()
	h.Paused = paused
	c.mu.Unlock()
	return nil
}

// Restart starts head i again with the same arguments, ports and data dir,
// and rewrites cluster.json. The head must not be running.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	_, err := c.head(i)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.start(i); err != nil {
		return err
	}
	return c.writeClusterFile()
}

// Close stops every running head (SIGTERM, SIGKILL after 5s), waits for
// every child to be reaped, and is idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		var procs []*proc
		for _, n := range c.nodes {
			procs = append(procs, n.proc)
		}
		for _, h := range c.heads {
			if h.proc != nil {
				procs = append(procs, h.proc)
			}
		}
		c.mu.Unlock()
		var wg sync.WaitGroup
		errs := make([]error, len(procs))
		for i, p := range procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = p.terminate(stopGrace)
			}()
		}
		wg.Wait()
		c.wg.Wait()
		// Raylets the heads' autoscaler launched outlive a killed head.
		stopAutoscaled(c.AutoscaleDir())
		c.removeDeadArenas()
		if c.net != nil {
			// Every process inside has been reaped; workers die with
			// their raylet (Pdeathsig).
			errs = append(errs, c.net.Close())
		}
		c.closeErr = errors.Join(errs...)
		c.log.Info("cluster stopped")
	})
	return c.closeErr
}
