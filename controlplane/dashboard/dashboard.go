// Package dashboard is manta's web dashboard, served by every head on the
// port of the Jobs API (jobsapi mounts it behind the same token check):
// the cluster overview with each head's Raft state, nodes, actors, tasks,
// objects, workers, jobs with their logs, placement groups, and an
// object's lineage drawn as a graph.
//
// Pages are Go templates with a small vanilla script (assets/), embedded
// in the binary. The script reads Ray's State API (/api/v0/..., served by
// the state package on the same port), the Jobs API (/api/jobs/...), and
// this package's own JSON under /api/manta/, which it fills from the
// control plane through cpclient. Updates arrive as server-sent events fed
// by the control-plane watch of the head serving the page, so a
// follower's page moves as soon as that head applies a change.
package dashboard

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
)

// StaticPrefix is where the assets are served; jobsapi lets it through
// without a token (the login page uses them).
const StaticPrefix = "/static/"

// Config configures a Dashboard.
type Config struct {
	// Client reaches the control plane, usually only the local head: the
	// dashboard then shows that head's view (and its watch) even when the
	// leader is gone.
	Client *cpclient.Client
	// Token returns the cluster token, for asking raylets their status.
	Token func() string
	// StatusInterval is how often the heads' Raft state is pushed to open
	// pages; default 1s.
	StatusInterval time.Duration
	Logger         *zap.Logger
}

// Dashboard serves the pages. Close stops its watch.
type Dashboard struct {
	cfg Config
	log *zap.Logger
	hub *hub

	nodes nodeCache

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New starts the dashboard's watch of the control plane.
func New(cfg Config) *Dashboard {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.Token == nil {
		cfg.Token = func() string { return "" }
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dashboard{cfg: cfg, log: cfg.Logger.Named("dashboard"), ctx: ctx, cancel: cancel}
	d.hub = newHub(d.log)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		d.watch(ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.pollHeads(ctx)
	}()
	return d
}

// Close stops the watch and ends open event streams. Idempotent.
func (d *Dashboard) Close() error {
	d.once.Do(func() {
		d.cancel()
		d.hub.close()
		d.wg.Wait()
	})
	return nil
}
