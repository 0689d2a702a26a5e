package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/currentcluster"
	"github.com/manta-ray/manta/internal/metrics"
	"github.com/manta-ray/manta/objectstore"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// defaultPort is a head's default gRPC port; Raft takes the next one.
const defaultPort = 7379

type startFlags struct {
	head            bool
	nodeID          string
	dataDir         string
	host            string
	port            int
	raftPort        int
	peers           []string
	bootstrapExpect int
	join            []string
	token           string
	tokenFile       string
	address         string
	noRaylet        bool
	logLevel        string
	pprofAddr       string
	dashboardPort   int
	metricsPort     int

	// The raylet's.
	numCPUs   float64
	numGPUs   float64
	memory    float64
	resources string
	labels    string
	// pgPrepareDelay is a testing knob: the leader pauses this long between
	// preparing a placement group's bundles and recording the placement.
	pgPrepareDelay time.Duration
	// The raylet's object store.
	objectStoreMemory string
	objectSpillDir    string
	objectSpillEngine string

	heartbeatTimeout  time.Duration
	electionTimeout   time.Duration
	leaseTimeout      time.Duration
	nodeTimeout       time.Duration
	pullStallTimeout  time.Duration
	forwardTimeout    time.Duration
	snapshotThreshold uint64
	maxKVValue        int
	raftLogStore      string
	maxInflight       int
	pipelineMinBatch  int

	tls *tlsFlags

	// autoscale is the autoscaler's config file (a head runs it while it
	// leads); autoscaleDir is where the local provider keeps its raylets.
	autoscale    string
	autoscaleDir string
}

func newStartCommand() *cobra.Command {
	f := &startFlags{}
	cmd := &cobra.Command{
		Use:   "start (--head --node-id ID --data-dir DIR [--peers ADDR,... | --join ADDR,...] | --address HEADS)",
		Short: "Start a head (with a raylet unless --no-raylet) or a raylet in the foreground",
		Long: `Start a head in the foreground; SIGINT or SIGTERM stops it cleanly.

A cluster of N heads is formed by starting each with the same --peers list
(every head's gRPC address); they bootstrap once all N have met, or once
--bootstrap-expect of them have. A head joins an existing cluster with
--join and the cluster's token. A head restarted on its data dir rejoins
its cluster on its own.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStart(cmd, f)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&f.head, "head", false, "start a head: a control-plane server and Raft voter")
	fs.StringVar(&f.nodeID, "node-id", "", "the head's ID, stable across restarts (required with --head)")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, snapshots and token (required with --head)")
	fs.StringVar(&f.host, "host", "127.0.0.1", "this host's address that the other hosts reach it at: heads listen on it and advertise it for gRPC and Raft, raylets for their server, and a raylet's workers listen on it too (not 0.0.0.0: it is advertised)")
	fs.IntVar(&f.port, "port", defaultPort, "gRPC port; 0 picks a free one")
	fs.IntVar(&f.raftPort, "raft-port", 0, "Raft port (default --port + 1, or a free one with --port 0)")
	fs.StringSliceVar(&f.peers, "peers", nil, "gRPC addresses of the heads that form the cluster, this one's included")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "bootstrap once this many heads of --peers are known (default all of them)")
	fs.StringSliceVar(&f.join, "join", nil, "gRPC addresses of an existing cluster to join instead of bootstrapping")
	fs.StringVar(&f.token, "token", "", "preset cluster token (a joining head needs the cluster's); default: generated at bootstrap")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token (instead of --token)")
	fs.StringVar(&f.address, "address", "", "heads' addresses, to start a raylet that joins their cluster")
	fs.BoolVar(&f.noRaylet, "no-raylet", false, "start only the head, without a raylet")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&f.dashboardPort, "dashboard-port", defaultDashboardPort, "HTTP port of Ray's Jobs REST API on this head; 0 picks a free one (written to DATA_DIR/"+dashboardAddressFile+"), -1 disables it")
	fs.IntVar(&f.metricsPort, "metrics-port", 0, "port of Prometheus /metrics (behind the cluster token) of the head, or of the raylet with --address; 0 picks a free one (a head's own raylet always does); targets are listed in DATA_DIR/"+metrics.SDFileName)
	fs.StringVar(&f.pprofAddr, "pprof-addr", "", "serve Go's net/http/pprof profiles on this address (e.g. 127.0.0.1:6060)")
	fs.DurationVar(&f.heartbeatTimeout, "heartbeat-timeout", 0, "Raft heartbeat timeout (default 500ms)")
	fs.DurationVar(&f.electionTimeout, "election-timeout", 0, "Raft election timeout (default 500ms)")
	fs.DurationVar(&f.leaseTimeout, "lease-timeout", 0, "Raft leader lease timeout (default 250ms)")
	fs.DurationVar(&f.nodeTimeout, "node-timeout", 0, "how long a node may miss heartbeats before it is marked dead (default 5s)")
	fs.DurationVar(&f.forwardTimeout, "forward-timeout", 0, "how long a follower waits for the leader to answer a write it forwarded (default 4 × --election-timeout)")
	fs.DurationVar(&f.pullStallTimeout, "pull-stall-timeout", 0, "how long a raylet's pull waits for the next chunk before it tries another copy (default 5s)")
	fs.Uint64Var(&f.snapshotThreshold, "snapshot-threshold", 0, "Raft log entries between snapshots (default 8192)")
	fs.IntVar(&f.maxKVValue, "max-kv-value", 0, "largest KV value in bytes (default 1 MiB)")
	fs.IntVar(&f.maxInflight, "max-inflight", 0, "group commit: Raft entries the leader keeps in flight (default 1)")
	fs.IntVar(&f.pipelineMinBatch, "pipeline-min-batch", 0, "group commit: writes an entry needs to go while another is in flight (default 64)")
	fs.StringVar(&f.raftLogStore, "raft-log-store", head.LogStoreBoltDB, "Raft log store of a head: boltdb or wal (hashicorp/raft-wal); a data dir keeps the kind it was created with")
	fs.Float64Var(&f.numCPUs, "num-cpus", -1, "CPUs the raylet offers (default: the machine's)")
	fs.Float64Var(&f.numGPUs, "num-gpus", -1, "GPUs the raylet offers (default: as many as nvidia-smi lists, else 0); each lease gets its own indices as CUDA_VISIBLE_DEVICES")
	fs.Float64Var(&f.memory, "memory", 0, "memory the raylet offers to tasks, in bytes")
	fs.StringVar(&f.resources, "resources", "", "custom resources the raylet offers: name=qty,...")
	fs.StringVar(&f.labels, "labels", "", "the node's labels, for ray.NodeLabels: key=value,...")
	fs.DurationVar(&f.pgPrepareDelay, "testing-pg-prepare-delay", 0, "testing: pause between a placement group's prepare and its recorded placement")
	_ = fs.MarkHidden("testing-pg-prepare-delay")
	fs.StringVar(&f.objectStoreMemory, "object-store-memory", "", "the raylet's shared-memory object store capacity: bytes, or with a unit (512MiB, 8GiB, 2GB); default 30% of RAM")
	fs.StringVar(&f.objectSpillDir, "object-spill-dir", "", "where the raylet spills objects when its store is full (default DATA_DIR/spill)")
	f.tls = addTLSFlags(fs)
	fs.StringVar(&f.autoscale, "autoscale", "", "autoscaler config (YAML): the leader head launches and removes nodes from demand")
	fs.StringVar(&f.autoscaleDir, "autoscale-dir", "", "where the local provider keeps the raylets it launches; heads of one machine share it (default DATA_DIR/autoscaler)")
	fs.StringVar(&f.objectSpillEngine, "object-spill-engine", "files", "how spilled objects are kept: files (one per object) or badger")
	return cmd
}

func runStart(cmd *cobra.Command, f *startFlags) error {
	if ip := net.ParseIP(f.host); f.host == "" || ip != nil && ip.IsUnspecified() {
		// Every address a process listens on is also the one it tells
		// the others to dial.
		return usageErrorf("--host %q: give this host's address that the other hosts reach it at (it is advertised as well as listened on)", f.host)
	}
	switch {
	case f.head && f.address != "":
		return usageErrorf("--head starts a head, --address a raylet: pass one of them")
	case f.address != "":
		return runRaylet(cmd, f)
	case !f.head:
		return usageErrorf("pass --head to start a head, or --address HEADS to start a raylet")
	case f.nodeID == "":
		return usageErrorf("--node-id is required with --head")
	case f.dataDir == "":
		return usageErrorf("--data-dir is required with --head")
	case f.bootstrapExpect < 0:
		return usageErrorf("--bootstrap-expect must be positive")
	case len(f.join) > 0 && (len(f.peers) > 0 || f.bootstrapExpect > 0):
		return usageErrorf("--join joins an existing cluster; --peers and --bootstrap-expect form a new one: pass one or the other")
	case f.token != "" && f.tokenFile != "":
		return usageErrorf("pass --token or --token-file, not both")
	}
	raftPort := f.raftPort
	if !cmd.Flags().Changed("raft-port") && f.port != 0 {
		raftPort = f.port + 1
	}
	token := f.token
	if f.tokenFile != "" {
		var err error
		if token, err = head.ReadTokenFile(f.tokenFile); err != nil {
			return err
		}
	}
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	tls, err := f.tls.load(log)
	if err != nil {
		return err
	}
	res, err := f.rayletResources()
	if err != nil {
		return err
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return err
	}
	storeBytes, engine, err := f.objectStore()
	if err != nil {
		return err
	}

	if f.pprofAddr != "" {
		stopPprof, err := servePprof(f.pprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	var h *head.Head
	scaleCfg, provider, err := f.autoscaler(func() []string { return []string{h.Address()} }, log)
	if err != nil {
		return err
	}
	if c, ok := provider.(interface{ Close() error }); ok {
		defer c.Close()
	}
	// Signals are caught before the head starts, so none is lost.
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	h, err = newHeadInterruptible(ctx, head.Config{
		ID:                 f.nodeID,
		DataDir:            f.dataDir,
		GRPCAddr:           net.JoinHostPort(f.host, strconv.Itoa(f.port)),
		RaftAddr:           net.JoinHostPort(f.host, strconv.Itoa(raftPort)),
		Peers:              f.peers,
		BootstrapExpect:    f.bootstrapExpect,
		Join:               f.join,
		Token:              token,
		HeartbeatTimeout:   f.heartbeatTimeout,
		ElectionTimeout:    f.electionTimeout,
		LeaderLeaseTimeout: f.leaseTimeout,
		NodeTimeout:        f.nodeTimeout,
		ForwardTimeout:     f.forwardTimeout,
		SnapshotThreshold:  f.snapshotThreshold,
		MaxKVValueBytes:    f.maxKVValue,
		RaftLogStore:       f.raftLogStore,
		MaxInflight:        f.maxInflight,
		PipelineMinBatch:   f.pipelineMinBatch,
		MetricsAddr:        net.JoinHostPort(f.host, strconv.Itoa(f.metricsPort)),
		TLS:                tls,
		Logger:             log,
		Knobs:              f.headKnobs(),
		Autoscaler:         scaleCfg,
		ScaleProvider:      provider,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "head %s serving on %s (raft %s)\n", h.ID(), h.Address(), h.RaftAddress())
	scheme := "http"
	if tls != nil {
		scheme = "https"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "head metrics on %s://%s%s\n", scheme, h.MetricsAddress(), metrics.Path)
	if f.dashboardPort >= 0 {
		api, err := startJobsAPI(ctx, h, f, cmd.Flags().Changed("dashboard-port"), tls, log)
		if err != nil {
			h.Close()
			return err
		}
		if api != nil {
			defer api.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "jobs api serving on %s://%s (dashboard: %s://%s/)\n", scheme, api.Address(), scheme, api.Address())
		}
	}
	var fatal <-chan error
	if !f.noRaylet {
		// The raylet needs the cluster's token, known once it bootstrapped.
		for h.Token() == "" && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
		if ctx.Err() == nil {
			r, err := raylet.New(raylet.Config{NodeID: f.nodeID, Heads: []string{h.Address()}, Token: h.Token(),
				ListenAddr: net.JoinHostPort(f.host, "0"), DataDir: filepath.Join(f.dataDir, "raylet"),
				Resources: res, ObjectStoreMemory: storeBytes, SpillDir: f.objectSpillDir, SpillEngine: engine,
				PullStallTimeout: f.pullStallTimeout, Labels: labels, TLS: tls, Logger: log})
			if err != nil {
				h.Close()
				return err
			}
			defer r.Close()
			fatal = r.Fatal()
			fmt.Fprintf(cmd.OutOrStdout(), "raylet %s serving on %s (metrics %s://%s%s)\n", r.NodeID(), r.Address(), scheme, r.MetricsAddress(), metrics.Path)
		}
	}
	// Name this cluster for drivers and commands started here without an
	// address (internal/currentcluster).
	if err := currentcluster.Write(currentcluster.Info{Heads: []string{h.Address()},
		TokenFile: filepath.Join(f.dataDir, head.TokenFile), PID: os.Getpid(), TLS: f.tls.resolved()}); err != nil {
		log.Warn("write the current-cluster file", zap.String("path", currentcluster.Path()), zap.Error(err))
	}
	defer currentcluster.Remove(os.Getpid())
	select {
	case <-ctx.Done():
	case err := <-fatal:
		log.Error("raylet stopped", zap.Error(err))
	}
	stop() // a second signal ends the process at once
	log.Info("signal received; stopping the head")
	if err := h.Close(); err != nil {
		log.Warn("closing the head", zap.Error(err))
	}
	return nil
}

func (f *startFlags) rayletResources() (resources.Set, error) {
	res, err := resources.Parse(f.resources)
	if err != nil {
		return nil, usageError{err}
	}
	if f.numCPUs >= 0 {
		res[resources.CPU] = f.numCPUs
	}
	gpus := f.numGPUs
	if gpus < 0 {
		gpus = detectGPUs()
	}
	if gpus > 0 {
		res[resources.GPU] = gpus
	}
	if f.memory > 0 {
		res[resources.Memory] = f.memory
	}
	if err := resources.Validate(res); err != nil {
		return nil, usageError{err}
	}
	return res, nil
}

// runRaylet runs a raylet that joins the cluster of --address. A raylet
// whose node the control plane marked dead exits with an error.
func runRaylet(cmd *cobra.Command, f *startFlags) error {
	res, err := f.rayletResources()
	if err != nil {
		return err
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return err
	}
	storeBytes, engine, err := f.objectStore()
	if err != nil {
		return err
	}
	token := strings.TrimSpace(f.token)
	if f.tokenFile != "" {
		if token, err = head.ReadTokenFile(f.tokenFile); err != nil {
			return err
		}
	}
	if token == "" {
		if token, err = cpclient.TokenFromEnv(); err != nil {
			return err
		}
	}
	if token == "" {
		return usageError{errNoToken}
	}
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	tls, err := f.tls.load(log)
	if err != nil {
		return err
	}
	port := f.port
	if !cmd.Flags().Changed("port") {
		port = 0
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := raylet.New(raylet.Config{NodeID: f.nodeID, Heads: strings.Split(f.address, ","), Token: token,
		ListenAddr: net.JoinHostPort(f.host, strconv.Itoa(port)), DataDir: f.dataDir, Resources: res,
		ObjectStoreMemory: storeBytes, SpillDir: f.objectSpillDir, SpillEngine: engine, PullStallTimeout: f.pullStallTimeout,
		MetricsAddr: net.JoinHostPort(f.host, strconv.Itoa(f.metricsPort)), Labels: labels, TLS: tls, Logger: log})
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "raylet %s serving on %s (metrics http://%s%s)\n", r.NodeID(), r.Address(), r.MetricsAddress(), metrics.Path)
	select {
	case <-ctx.Done():
		stop()
		log.Info("signal received; stopping the raylet")
		return r.Close()
	case err := <-r.Fatal():
		r.Close()
		return err
	}
}

// newHeadInterruptible runs head.New, but gives up when ctx ends first:
// New normally returns at once, yet blocks while another process holds the
// data dir's Raft log, and a signal must still end the process then. The
// abandoned New ends with the process, which exits on this error.
func newHeadInterruptible(ctx context.Context, cfg head.Config) (*head.Head, error) {
	type result struct {
		h   *head.Head
		err error
	}
	done := make(chan result, 1)
	go func() {
		h, err := head.New(cfg)
		done <- result{h, err}
	}()
	select {
	case r := <-done:
		return r.h, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("interrupted while starting head %s (is another process using --data-dir %s?)", cfg.ID, cfg.DataDir)
	}
}

// byteUnits are the suffixes parseBytes accepts, longest first so "MiB"
// is not read as "B".
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// parseBytes reads a size: plain bytes ("536870912") or a number with a
// unit ("512MiB", "1.5GiB", "2GB"; K/M/G alone are binary). Empty is 0,
// the default.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	orig, mult := s, int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(strings.ToUpper(s), strings.ToUpper(u.suffix)) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && n <= math.MaxInt64/mult {
		return n * mult, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a positive size in bytes", orig)
	}
	return int64(v * float64(mult)), nil
}

// objectStore parses the raylet's object store flags: the arena's size
// (--object-store-memory) and the spill engine (--object-spill-engine).
func (f *startFlags) objectStore() (int64, objectstore.SpillEngine, error) {
	size, err := parseBytes(f.objectStoreMemory)
	if err != nil {
		return 0, 0, usageErrorf("--object-store-memory: %v", err)
	}
	switch f.objectSpillEngine {
	case "", "files":
		return size, objectstore.SpillFiles, nil
	case "badger":
		return size, objectstore.SpillBadger, nil
	}
	return 0, 0, usageErrorf("--object-spill-engine %q: want files or badger", f.objectSpillEngine)
}

// parseLabels reads --labels: key=value pairs separated by commas.
func parseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--labels: key %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// headKnobs are the testing knobs set by hidden flags.
func (f *startFlags) headKnobs() head.TestingKnobs {
	var k head.TestingKnobs
	if d := f.pgPrepareDelay; d > 0 {
		k.AfterPrepare = func(string) { time.Sleep(d) }
	}
	return k
}
