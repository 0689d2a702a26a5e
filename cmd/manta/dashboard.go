package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/dashboard"
	"github.com/manta-ray/manta/controlplane/head"
	"github.com/manta-ray/manta/controlplane/jobsapi"
	"github.com/manta-ray/manta/controlplane/stateapi"
	"github.com/manta-ray/manta/internal/metrics"
	"github.com/manta-ray/manta/internal/tlsconfig"
)

// defaultDashboardPort is Ray's dashboard port, where its clients look.
const defaultDashboardPort = 8265

// dashboardAddressFile, in a head's data dir, holds the address its Jobs
// API listens on (useful with --dashboard-port 0).
const dashboardAddressFile = "dashboard_address"

// startJobsAPI serves Ray's Jobs REST API and the dashboard on the head. When the port was
// not asked for and is taken (another head on this machine), the head goes
// on without it and says so.
func startJobsAPI(ctx context.Context, h *head.Head, f *startFlags, explicit bool, tls *tlsconfig.Source, log *zap.Logger) (*jobsAPI, error) {
	// The token is known once the cluster bootstrapped.
	for h.Token() == "" {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	cl, err := cpclient.New(cpclient.Config{Addresses: []string{h.Address()}, Token: h.Token(), TLS: tls, Logger: log})
	if err != nil {
		return nil, err
	}
	dash := dashboard.New(dashboard.Config{Client: cl, Token: h.Token, Logger: log})
	api, err := jobsapi.New(jobsapi.Config{Addr: net.JoinHostPort(f.host, strconv.Itoa(f.dashboardPort)),
		Client: cl, Token: h.Token, Scope: h.ScopeOf, TLS: tls, Logger: log,
		// The head's metrics on the dashboard port too, as Ray's dashboard
		// serves them; the token check covers this path as every other.
		Mount: []func(*http.ServeMux){stateapi.Register(cl), dash.Register, func(mux *http.ServeMux) {
			mux.Handle("GET "+metrics.Path, metrics.Handler(h.Registry(), log))
		}}, Public: []string{dashboard.StaticPrefix}})
	if err != nil {
		dash.Close()
		cl.Close()
		if !explicit && errors.Is(err, syscall.EADDRINUSE) {
			log.Warn("the jobs api's default port is taken; this head serves none (pass --dashboard-port)", zap.Error(err))
			return nil, nil
		}
		return nil, err
	}
	// Written whole, then renamed: a reader never sees half an address.
	path := filepath.Join(f.dataDir, dashboardAddressFile)
	err = os.WriteFile(path+".tmp", []byte(api.Address()+"\n"), 0o644)
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		api.Close()
		dash.Close()
		cl.Close()
		return nil, err
	}
	return &jobsAPI{api, dash, cl}, nil
}

// jobsAPI is the server with the dashboard and the client it owns.
type jobsAPI struct {
	*jobsapi.Server
	dash *dashboard.Dashboard
	cl   *cpclient.Client
}

func (a *jobsAPI) Close() error {
	err := a.Server.Close()
	a.dash.Close()
	a.cl.Close()
	return err
}
