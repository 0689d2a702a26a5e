package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/chaos"
	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/currentcluster"
	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/internal/metrics"
)

type upFlags struct {
	heads, nodes int
	dataDir      string
	token        string
	timeout      time.Duration
	logLevel     string
	hf           *hostFlags
	headArgs     []string
	// objectStoreMemory is every raylet's --object-store-memory ("" for
	// its default).
	objectStoreMemory string
	tls               bool
	autoscale         string
}

func newUpCommand() *cobra.Command {
	f := &upFlags{}
	cmd := &cobra.Command{
		Use:   "up [--heads N] [--nodes N] [--data-dir DIR]",
		Short: "Run a local cluster of separate head and raylet processes in the foreground",
		Long: `Run a local development cluster: every head and every raylet is its own
"manta start" process, logging to <data-dir>/head-N/head.log and
<data-dir>/node-N/raylet.log; <data-dir>/cluster.json lists them. SIGINT or SIGTERM stops them all. A --data-dir that holds a
cluster of the same size restarts it on its old addresses.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(cmd, f) },
	}
	f.hf = addHostFlags(cmd)
	fs := cmd.Flags()
	fs.IntVar(&f.heads, "heads", 3, "number of heads")
	fs.StringSliceVar(&f.headArgs, "head-arg", nil, "extra `manta start` arguments for every head, e.g. --head-arg=--election-timeout=1s")
	fs.IntVar(&f.nodes, "nodes", 0, "number of raylets, separate processes (node-1 ... node-N)")
	fs.StringVar(&f.objectStoreMemory, "object-store-memory", "", "each raylet's shared-memory object store, e.g. 512MiB (default: 30% of RAM, committed as used)")
	fs.StringVar(&f.dataDir, "data-dir", "", "cluster directory (default: a fresh temp dir, removed on exit)")
	fs.StringVar(&f.token, "token", "", "preset cluster token (default: generated)")
	fs.DurationVar(&f.timeout, "timeout", 60*time.Second, "how long to wait for the cluster to form")
	fs.BoolVar(&f.tls, "tls", false, "mutual TLS on every port: a CA and certificates for every process in <data-dir>/"+launcher.TLSDir)
	fs.StringVar(&f.autoscale, "autoscale", "", "autoscaler config (YAML, provider local): the leader head launches raylets from demand and removes idle ones")
	fs.StringVar(&f.logLevel, "log-level", "warn", "launcher log level: debug, info, warn or error")
	return cmd
}

func runUp(cmd *cobra.Command, f *upFlags) error {
	out := cmd.OutOrStdout()
	if err := f.hf.validate(); err != nil {
		return err
	}
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the manta binary: %w", err)
	}
	dir, temp := f.dataDir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "manta-up-"); err != nil {
			return err
		}
		temp = true
		defer os.RemoveAll(dir)
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	autoscalePath := f.autoscale
	if autoscalePath != "" {
		// Checked here, so a bad config is one clear error, not N heads failing.
		if _, err := autoscaler.LoadConfig(autoscalePath); err != nil {
			return usageErrorf("--autoscale: %v", err)
		}
		if autoscalePath, err = filepath.Abs(autoscalePath); err != nil {
			return err
		}
	}
	var storeArgs []string
	if f.objectStoreMemory != "" {
		if _, err := parseBytes(f.objectStoreMemory); err != nil {
			return usageErrorf("--object-store-memory: %v", err)
		}
		storeArgs = []string{"--object-store-memory", f.objectStoreMemory}
	}
	c, err := launcher.Start(startCtx, launcher.Options{
		Binary: self, Heads: f.heads, Nodes: f.nodes, DataDir: dir, Token: f.token, Logger: log, TLS: f.tls, Autoscale: autoscalePath,
		ExtraHeadArgs: append(append([]string(nil), storeArgs...), f.headArgs...), NodeArgs: func(int) []string { return storeArgs }, Hosts: f.hf.hosts,
	})
	if errors.Is(err, launcher.ErrHostsUnsupported) {
		return hostsError(err)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if c.Network() != nil {
		// A host of its own for drivers (nothing runs there until one is
		// started in it), shaped like the others.
		if _, err := c.AddHost("driver"); err != nil {
			return err
		}
	}
	unshape, err := f.hf.shape(c, log)
	if err != nil {
		return err
	}
	defer unshape()

	addrs := strings.Join(c.Addresses(), ",")
	if n := c.Network(); n != nil {
		fmt.Fprintf(out, "netns hosts on bridge %s (%s); this host is %s\n", n.Bridge(), n.Subnet(), n.Gateway())
		if f.hf.link != (chaos.LinkSpec{}) {
			fmt.Fprintf(out, "every host's outgoing packets: %s\n", f.hf.link)
		}
		for _, h := range n.Hosts() {
			fmt.Fprintf(out, "  %s  %s  ip netns exec %s ...\n", h.Name, h.IP, h.Namespace)
		}
		if d := n.Host("driver"); d != nil {
			fmt.Fprintf(out, "run a driver on a host of its own: ip netns exec %s PROGRAM (with the exports below)\n", d.Namespace)
		}
	}
	fmt.Fprintf(out, "cluster ready: %d heads at %s; token file %s\n", f.heads, addrs, c.TokenFile())
	for _, h := range c.Heads() {
		api := ""
		if b, err := os.ReadFile(filepath.Join(h.DataDir, dashboardAddressFile)); err == nil {
			scheme := "http"
			if c.TLS() != nil {
				scheme = "https"
			}
			api = "  dashboard and jobs api " + scheme + "://" + strings.TrimSpace(string(b)) + "/"
		}
		fmt.Fprintf(out, "  %s  %s  pid %d  log %s/head.log%s\n", h.ID, h.Address, h.PID, h.DataDir, api)
	}
	for _, n := range c.Nodes() {
		fmt.Fprintf(out, "  %s  %s  pid %d  log %s/raylet.log\n", n.ID, n.Address, n.PID, n.DataDir)
	}
	fmt.Fprintf(out, "cluster file %s\n", c.ClusterFile())
	// The cluster as a whole is this machine's current one; its heads
	// (launcher's children) write no file of their own.
	if err := currentcluster.Write(currentcluster.Info{Heads: c.Addresses(), TokenFile: c.TokenFile(), PID: os.Getpid(), TLS: c.TLSFiles()}); err != nil {
		log.Warn("write the current-cluster file", zap.String("path", currentcluster.Path()), zap.Error(err))
	} else if p := currentcluster.Path(); p != "" {
		fmt.Fprintf(out, "current cluster file %s (drivers and manta commands here find the cluster through it)\n", p)
	}
	defer currentcluster.Remove(os.Getpid())
	sdCl, err := c.Client()
	if err != nil {
		return err
	}
	defer sdCl.Close()
	sdPath := filepath.Join(dir, metrics.SDFileName)
	sdCtx, sdStop := context.WithCancel(ctx)
	sdDone := make(chan struct{})
	go func() {
		defer close(sdDone)
		writeSDLoop(sdCtx, sdCl, sdPath, log)
	}()
	defer func() { sdStop(); <-sdDone }()
	fmt.Fprintf(out, "prometheus targets %s (file_sd; scrape with the token file)\n", sdPath)
	fmt.Fprintln(out, "to use it from another shell:")
	fmt.Fprintf(out, "  export %s=%s\n", cpclient.EnvAddress, addrs)
	fmt.Fprintf(out, "  export %s=%s\n", cpclient.EnvTokenFile, c.TokenFile())
	if tf := c.TLSFiles(); tf.Enabled() {
		for _, kv := range tf.Env() {
			fmt.Fprintf(out, "  export %s\n", kv)
		}
	}
	if temp {
		fmt.Fprintln(out, "press Ctrl-C to stop the cluster (its temp dir is removed then)")
	} else {
		fmt.Fprintln(out, "press Ctrl-C to stop the cluster")
	}

	<-ctx.Done()
	stop() // a second signal ends the process at once; the heads die with it
	fmt.Fprintln(cmd.ErrOrStderr(), "stopping the cluster")
	unshape()
	return c.Close()
}
