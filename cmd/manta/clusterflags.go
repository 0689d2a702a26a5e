package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/internal/currentcluster"
	"github.com/manta-ray/manta/internal/tlsconfig"
)

// errNoToken is returned when no token was given in any of the four ways.
var errNoToken = errors.New("no cluster token: pass --token or --token-file, or set " +
	cpclient.EnvToken + " or " + cpclient.EnvTokenFile + " (a head writes it to <data-dir>/" + head.TokenFile + ")")

// clusterFlags are the flags of every command that talks to a cluster.
// Flags win over the environment.
type clusterFlags struct {
	address   string
	token     string
	tokenFile string
	timeout   time.Duration
	tls       *tlsFlags
}

// addClusterFlags registers the flags on cmd, persistent so that a command
// group's subcommands share them.
func addClusterFlags(cmd *cobra.Command) *clusterFlags {
	f := &clusterFlags{}
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.address, "address", "", "heads' gRPC addresses, comma-separated (default $"+cpclient.EnvAddress+", else the cluster manta up or manta start --head started on this machine)")
	fs.StringVar(&f.token, "token", "", "cluster token (default $"+cpclient.EnvToken+")")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the cluster token (default $"+cpclient.EnvTokenFile+")")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "bound on one call, retries included")
	f.tls = addTLSFlags(fs)
	return f
}

// config resolves the address and token from the flags and environment.
func (f *clusterFlags) config() (cpclient.Config, error) {
	addr := f.address
	if addr == "" {
		addr = os.Getenv(cpclient.EnvAddress)
	}
	var current currentcluster.Info
	if strings.Trim(addr, ", ") == "" {
		// As a driver does: the cluster `manta up` or `manta start
		// --head` named in the current-cluster file.
		info, err := currentcluster.Lookup(context.Background(), 2*time.Second)
		if err != nil {
			return cpclient.Config{}, usageError{fmt.Errorf("%w, or start a cluster here with manta up (%v)", cpclient.ErrNoAddress, err)}
		}
		current, addr = info, strings.Join(info.Heads, ",")
	}
	if f.token != "" && f.tokenFile != "" {
		return cpclient.Config{}, usageErrorf("pass --token or --token-file, not both")
	}
	tok := strings.TrimSpace(f.token)
	if tok == "" && f.tokenFile != "" {
		var err error
		if tok, err = head.ReadTokenFile(f.tokenFile); err != nil {
			return cpclient.Config{}, err
		}
	}
	if tok == "" {
		var err error
		if tok, err = cpclient.TokenFromEnv(); err != nil {
			return cpclient.Config{}, err
		}
	}
	if tok == "" && current.TokenFile != "" {
		var err error
		if tok, err = head.ReadTokenFile(current.TokenFile); err != nil {
			return cpclient.Config{}, fmt.Errorf("the current cluster's token (%s): %w", currentcluster.Path(), err)
		}
	}
	if tok == "" {
		return cpclient.Config{}, usageError{errNoToken}
	}
	files := f.tls.resolved()
	if !files.Enabled() && current.TLS.Enabled() {
		files = current.TLS
	}
	if err := files.Validate(); err != nil {
		return cpclient.Config{}, usageError{err}
	}
	src, err := tlsconfig.LoadOptional(files, nil)
	if err != nil {
		return cpclient.Config{}, err
	}
	return cpclient.Config{Addresses: []string{addr}, Token: tok, Timeout: f.timeout, TLS: src}, nil
}

// client returns a client for the resolved cluster; the caller closes it.
func (f *clusterFlags) client() (*cpclient.Client, error) {
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	return cpclient.New(cfg)
}

// withClient runs fn with a client and a context bounded by --timeout.
func (f *clusterFlags) withClient(cmd *cobra.Command, fn func(ctx context.Context, cl *cpclient.Client) error) error {
	cl, err := f.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	return fn(ctx, cl)
}
