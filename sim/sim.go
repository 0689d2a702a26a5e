// Package sim runs many simulated raylets in one process against real
// heads, to measure what a large cluster costs the control plane. Each
// simulated node is a real gRPC client of the heads (its own connection,
// through cpclient) doing what a raylet does there: it registers, sends
// heartbeats with its free resources, refreshes its cluster view with
// ListNodes and watches jobs. Only the work is fake: a simulated node has
// no workers and no object store.
//
// `manta bench scale` drives it against a local cluster of head processes;
// its tests run it against in-process heads.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Options configures a simulated fleet. Zero values take the raylet's
// defaults.
type Options struct {
	Addresses []string
	Token     string
	TLS       *tlsconfig.Source // nil: plain text
	Logger    *zap.Logger

	// Nodes is how many simulated raylets to run.
	Nodes int
	// Prefix starts every node ID (default "sim-").
	Prefix string
	// HeartbeatInterval is each node's heartbeat period; default 500ms,
	// the raylet's.
	HeartbeatInterval time.Duration
	// ViewInterval is each node's ListNodes period; default 100ms, the
	// raylet's. Negative: no view refresh.
	ViewInterval time.Duration
	// FullViews has every view refresh ask for the whole list, as raylets
	// did before ListNodes answered with deltas (to measure the
	// difference).
	FullViews bool
	// NoWatch turns off each node's job watch.
	NoWatch bool
	// Resources every node registers with; default 8 CPUs.
	Resources map[string]float64
	// RegisterConcurrency bounds the registrations in flight; default 64.
	RegisterConcurrency int
	// Actors has every node serve the raylet and worker calls of actor
	// placement on a loopback port (actors.go), so the leader can place
	// actors on it. Not with TLS.
	Actors bool
	// StrayCheck, with Actors, runs the raylet's stray-actor check this
	// often (the raylet's default is 5s); 0: none.
	StrayCheck time.Duration
}

// Fleet is a running set of simulated nodes.
type Fleet struct {
	o     Options
	log   *zap.Logger
	nodes []*node

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	rec recorder
}

type node struct {
	f  *Fleet
	id string
	cl *cpclient.Client
	// lastOK is the UnixNano of the node's latest acknowledged heartbeat.
	lastOK atomic.Int64
	// dead is set when the control plane answered that it marked the
	// node dead.
	dead atomic.Bool
	// interval overrides the fleet's heartbeat interval (a flooding node).
	interval time.Duration
	flood    bool
	// host serves actor placement (Options.Actors), else nil.
	host *actorHost
}

// Start registers opts.Nodes simulated nodes and starts their loops. It
// returns once every node is registered.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if o.Prefix == "" {
		o.Prefix = "sim-"
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 500 * time.Millisecond
	}
	if o.ViewInterval == 0 {
		o.ViewInterval = 100 * time.Millisecond
	}
	if o.Resources == nil {
		o.Resources = map[string]float64{"CPU": 8}
	}
	if o.RegisterConcurrency <= 0 {
		o.RegisterConcurrency = 64
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Actors && o.TLS != nil {
		return nil, errors.New("sim: simulated actor hosts serve plain text only")
	}
	f := &Fleet{o: o, log: o.Logger.Named("sim")}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.rec.reset(time.Now())
	if err := f.Add(ctx, o.Nodes); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Add registers n more nodes and starts their loops.
func (f *Fleet) Add(ctx context.Context, n int) error {
	return f.add(ctx, n, 0)
}

// AddFlooder registers one node that heartbeats every interval (say 1ms,
// 1,000/s) instead of the fleet's period; its heartbeats are counted
// apart from the others'. It returns the node's ID.
func (f *Fleet) AddFlooder(ctx context.Context, interval time.Duration) (string, error) {
	if err := f.add(ctx, 1, interval); err != nil {
		return "", err
	}
	return f.nodes[len(f.nodes)-1].id, nil
}

func (f *Fleet) add(ctx context.Context, n int, flood time.Duration) error {
	first := len(f.nodes)
	var added []*node
	for i := range n {
		cl, err := cpclient.New(cpclient.Config{Addresses: f.o.Addresses, Token: f.o.Token, TLS: f.o.TLS, Logger: f.o.Logger})
		if err != nil {
			return err
		}
		nd := &node{f: f, id: fmt.Sprintf("%s%05d", f.o.Prefix, first+i), cl: cl, interval: f.o.HeartbeatInterval}
		if flood > 0 {
			nd.id, nd.interval, nd.flood = fmt.Sprintf("%sflood-%05d", f.o.Prefix, first+i), flood, true
		}
		added = append(added, nd)
		f.nodes = append(f.nodes, nd)
		if f.o.Actors && flood == 0 {
			if err := nd.startHost(); err != nil {
				return err
			}
		}
	}
	sem := make(chan struct{}, f.o.RegisterConcurrency)
	errs := make([]error, len(added))
	var wg sync.WaitGroup
	for i, nd := range added {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			t0 := time.Now()
			errs[i] = nd.register(ctx)
			if errs[i] == nil {
				f.rec.register(time.Since(t0))
				nd.lastOK.Store(time.Now().UnixNano())
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sim: register: %w", err)
	}
	for _, nd := range added {
		f.wg.Add(1)
		go func() { defer f.wg.Done(); nd.heartbeatLoop() }()
		if f.o.ViewInterval > 0 && !nd.flood {
			f.wg.Add(1)
			go func() { defer f.wg.Done(); nd.viewLoop() }()
		}
		if !f.o.NoWatch && !nd.flood {
			f.wg.Add(1)
			go func() { defer f.wg.Done(); nd.watchLoop() }()
		}
	}
	return nil
}

// IDs are the simulated nodes' IDs (flooders included).
func (f *Fleet) IDs() []string {
	out := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		out[i] = n.id
	}
	return out
}

// DeclaredDead lists the nodes the control plane told it had marked dead.
func (f *Fleet) DeclaredDead() []string {
	var out []string
	for _, n := range f.nodes {
		if n.dead.Load() {
			out = append(out, n.id)
		}
	}
	return out
}

// AllHeartbeatedSince reports whether every node not declared dead (and not
// flooding) had a heartbeat acknowledged after t.
func (f *Fleet) AllHeartbeatedSince(t time.Time) bool {
	for _, n := range f.nodes {
		if !n.flood && !n.dead.Load() && n.lastOK.Load() <= t.UnixNano() {
			return false
		}
	}
	return true
}

// WaitHeartbeatsSince waits until AllHeartbeatedSince(t) and returns when
// that became true (polled every 5ms), or ctx's error.
func (f *Fleet) WaitHeartbeatsSince(ctx context.Context, t time.Time) (time.Time, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !f.AllHeartbeatedSince(t) {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
	}
	return time.Now(), nil
}

// Collect returns what was measured since the previous Collect (or Start)
// and starts a new window.
func (f *Fleet) Collect() Stats {
	s := f.rec.collect(time.Now())
	s.Nodes = len(f.nodes)
	s.DeclaredDead = len(f.DeclaredDead())
	return s
}

// Close stops every node's loops and closes their connections. It does
// not unregister them: the point of a fleet is what the control plane
// holds.
func (f *Fleet) Close() {
	f.cancel()
	for _, n := range f.nodes {
		if n.host != nil {
			n.host.srv.Stop()
		}
	}
	f.wg.Wait()
	for _, n := range f.nodes {
		n.cl.Close()
	}
}

func (n *node) register(ctx context.Context) error {
	addr := "sim://" + n.id
	if n.host != nil {
		addr = n.host.addr
	}
	_, err := n.cl.RegisterNode(ctx, &pb.NodeInfo{NodeId: n.id, Address: addr,
		Resources: n.f.o.Resources, Labels: map[string]string{"sim": "true"}})
	return err
}

// heartbeatLoop heartbeats every interval from a random phase, as a fleet
// of raylets started at different times does.
func (n *node) heartbeatLoop() {
	ctx := n.f.ctx
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(n.interval)):
	}
	t := time.NewTicker(n.interval)
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		t0 := time.Now()
		avail := n.f.o.Resources
		if n.host != nil {
			avail = n.host.available(avail)
		}
		_, err := n.cl.Heartbeat(hctx, &pb.HeartbeatRequest{NodeId: n.id, Available: avail})
		cancel()
		rtt := time.Since(t0)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			n.lastOK.Store(time.Now().UnixNano())
			n.f.rec.heartbeat(n.flood, rtt, nil)
		case errors.Is(err, fsm.ErrNodeNotFound):
			// A leader that lost the registration: register again, as a
			// raylet does.
			n.f.rec.heartbeat(n.flood, rtt, err)
			_ = n.register(ctx)
		case errors.Is(err, fsm.ErrNodeDead):
			n.f.rec.heartbeat(n.flood, rtt, err)
			n.dead.Store(true)
			n.f.log.Warn("node declared dead", zap.String("node", n.id))
			return
		default:
			n.f.rec.heartbeat(n.flood, rtt, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// viewLoop lists the alive nodes every ViewInterval, as a raylet's
// cluster view does.
func (n *node) viewLoop() {
	ctx := n.f.ctx
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(n.f.o.ViewInterval)):
	}
	t := time.NewTicker(n.f.o.ViewInterval)
	defer t.Stop()
	view := n.cl.NewNodeView()
	for {
		vctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		t0 := time.Now()
		var err error
		seen := 0
		if n.f.o.FullViews {
			var resp *pb.ListNodesResponse
			if resp, err = n.cl.ListNodes(vctx, &pb.ListNodesRequest{AliveOnly: true}); err == nil {
				seen = len(resp.Nodes)
			}
		} else if _, err = view.Refresh(vctx); err == nil {
			seen = len(view.Nodes())
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		n.f.rec.view(time.Since(t0), seen, err)
		if !n.f.o.FullViews {
			t.Reset(view.Interval(n.f.o.ViewInterval))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchLoop watches jobs, as a raylet's job loop does.
func (n *node) watchLoop() {
	_ = n.cl.Watch(n.f.ctx, &pb.WatchRequest{Kinds: []pb.EventKind{pb.EventKind_EVENT_JOB}}, func(r *pb.WatchResponse) error {
		n.f.rec.watch(len(r.Events))
		return nil
	})
}

// Stats is one measurement window.
type Stats struct {
	Nodes        int
	DeclaredDead int
	Window       time.Duration

	Heartbeats, HeartbeatErrors int
	HeartbeatP50, HeartbeatP99  time.Duration
	Views, ViewErrors           int
	ViewP50, ViewP99            time.Duration
	// ViewNodesMin is the fewest alive nodes a view listed.
	ViewNodesMin int
	Registers    int
	RegisterP50  time.Duration
	RegisterP99  time.Duration
	WatchEvents  int

	// FloodSent counts flooding nodes' heartbeats; FloodRefused those the
	// control plane refused (rate-limited).
	FloodSent, FloodRefused int
	// LastError is the window's latest failed heartbeat or view refresh.
	LastError error `json:"-"`
}

// RPCRate is the fleet's control-plane calls per second in the window.
func (s Stats) RPCRate() float64 {
	if s.Window <= 0 {
		return 0
	}
	return float64(s.Heartbeats+s.Views+s.Registers+s.FloodSent) / s.Window.Seconds()
}

func (s Stats) String() string {
	return fmt.Sprintf("nodes=%d dead=%d window=%s rpc_rate=%.0f/s heartbeats=%d hb_errors=%d hb_p50=%s hb_p99=%s views=%d view_errors=%d view_p50=%s view_p99=%s view_nodes_min=%d registers=%d register_p50=%s register_p99=%s flood_sent=%d flood_refused=%d",
		s.Nodes, s.DeclaredDead, s.Window.Round(time.Millisecond), s.RPCRate(), s.Heartbeats, s.HeartbeatErrors,
		r(s.HeartbeatP50), r(s.HeartbeatP99), s.Views, s.ViewErrors, r(s.ViewP50), r(s.ViewP99), s.ViewNodesMin,
		s.Registers, r(s.RegisterP50), r(s.RegisterP99), s.FloodSent, s.FloodRefused) + lastErr(s.LastError)
}

func lastErr(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf(" last_error=%q", err.Error())
}

func r(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// recorder accumulates one window's samples.
type recorder struct {
	mu          sync.Mutex
	start       time.Time
	hb, views   []time.Duration
	reg         []time.Duration
	hbErr       int
	viewErr     int
	viewMin     int
	watchEvents int
	floodSent   int
	floodRef    int
	lastErr     error
}

func (r *recorder) reset(now time.Time) {
	r.start, r.hb, r.views, r.reg = now, nil, nil, nil
	r.hbErr, r.viewErr, r.viewMin, r.watchEvents, r.floodSent, r.floodRef = 0, 0, -1, 0, 0, 0
	r.lastErr = nil
}

func (r *recorder) heartbeat(flood bool, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if flood {
		r.floodSent++
		if err != nil {
			r.floodRef++
		}
		return
	}
	if err != nil {
		r.hbErr++
		r.lastErr = err
		return
	}
	r.hb = append(r.hb, d)
}

func (r *recorder) view(d time.Duration, nodes int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.viewErr++
		r.lastErr = err
		return
	}
	r.views = append(r.views, d)
	if r.viewMin < 0 || nodes < r.viewMin {
		r.viewMin = nodes
	}
}

func (r *recorder) register(d time.Duration) {
	r.mu.Lock()
	r.reg = append(r.reg, d)
	r.mu.Unlock()
}

func (r *recorder) watch(events int) {
	r.mu.Lock()
	r.watchEvents += events
	r.mu.Unlock()
}

func (r *recorder) collect(now time.Time) Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Window: now.Sub(r.start), Heartbeats: len(r.hb), HeartbeatErrors: r.hbErr,
		Views: len(r.views), ViewErrors: r.viewErr, ViewNodesMin: max(r.viewMin, 0), Registers: len(r.reg),
		WatchEvents: r.watchEvents, FloodSent: r.floodSent, FloodRefused: r.floodRef, LastError: r.lastErr}
	s.HeartbeatP50, s.HeartbeatP99 = quantiles(r.hb)
	s.ViewP50, s.ViewP99 = quantiles(r.views)
	s.RegisterP50, s.RegisterP99 = quantiles(r.reg)
	r.reset(now)
	return s
}

func quantiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[len(d)*99/100]
}
