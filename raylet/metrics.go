package raylet

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/manta-ray/manta/internal/metrics"
)

// rayletMetrics are the raylet's Prometheus series (README, "Metrics"):
// its RPCs (grpc-ecosystem's middleware), the scheduler's decisions, the
// worker pool, the object store and transfers, and runtime env setups.
// Counters move on the paths they count; levels are read at scrape time.
type rayletMetrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	leaseRequests   prometheus.Counter
	leaseGrants     prometheus.Counter
	leaseSpillbacks prometheus.Counter
	leaseInfeasible prometheus.Counter
	leaseFailures   prometheus.Counter
	workerExits     atomic.Int64
	envSetups       *prometheus.CounterVec
	envSetupSeconds prometheus.Histogram

	srv *metrics.Server
}

func newRayletMetrics(r *Raylet) *rayletMetrics {
	reg := metrics.NewRegistry()
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "raylet", Name: name, Help: help})
	}
	m := &rayletMetrics{
		reg:             reg,
		grpc:            metrics.NewGRPCServerMetrics(reg),
		leaseRequests:   counter("lease_requests_total", "Worker lease requests received from owners."),
		leaseGrants:     counter("lease_grants_total", "Worker leases granted on this node."),
		leaseSpillbacks: counter("lease_spillbacks_total", "Lease requests answered with another node to ask."),
		leaseInfeasible: counter("lease_infeasible_total", "Lease requests found infeasible (no live node could ever fit them); they wait."),
		leaseFailures:   counter("lease_failures_total", "Lease requests that failed after scheduling (worker or runtime env could not start)."),
		envSetups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Subsystem: "raylet",
			Name: "runtime_env_setups_total", Help: "Runtime env working dirs prepared for leases, by result (ok, error)."}, []string{"result"}),
		envSetupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metrics.Namespace, Subsystem: "raylet",
			Name: "runtime_env_setup_duration_seconds", Buckets: metrics.LatencyBuckets,
			Help: "Time to fetch and unpack (or find cached) a lease's working dir."}),
	}
	m.envSetups.WithLabelValues("ok")
	m.envSetups.WithLabelValues("error")
	reg.MustRegister(m.leaseRequests, m.leaseGrants, m.leaseSpillbacks, m.leaseInfeasible, m.leaseFailures,
		m.envSetups, m.envSetupSeconds, &rayletCollector{r: r})
	return m
}

// observeEnvSetup records one working dir preparation.
func (m *rayletMetrics) observeEnvSetup(start time.Time, err error) {
	m.envSetupSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		m.envSetups.WithLabelValues("error").Inc()
	} else {
		m.envSetups.WithLabelValues("ok").Inc()
	}
}

// startMetrics serves /metrics on Config.MetricsAddr, by default an
// ephemeral port on the raylet's own host.
func (r *Raylet) startMetrics() error {
	addr := r.cfg.MetricsAddr
	if addr == "" {
		host, _, err := net.SplitHostPort(r.cfg.ListenAddr)
		if err != nil {
			return err
		}
		addr = net.JoinHostPort(host, "0")
	}
	srv, err := metrics.ListenTLS(addr, r.metrics.reg, func() string { return r.cfg.Token }, r.log, r.cfg.TLS, nil)
	if err != nil {
		return err
	}
	r.metrics.srv = srv
	return nil
}

// MetricsAddress is where the raylet serves /metrics.
func (r *Raylet) MetricsAddress() string {
	if r.metrics == nil || r.metrics.srv == nil {
		return ""
	}
	return r.metrics.srv.Address()
}

// Registry is the raylet's metrics registry.
func (r *Raylet) Registry() *prometheus.Registry { return r.metrics.reg }

func (r *Raylet) closeMetrics() {
	if r.metrics != nil && r.metrics.srv != nil {
		r.metrics.srv.Close()
	}
}

var (
	descQueued     = prometheus.NewDesc("manta_raylet_lease_requests_queued", "Lease requests waiting here, by reason: resources (busy) or infeasible.", []string{"reason"}, nil)
	descLeases     = prometheus.NewDesc("manta_raylet_leases_active", "Worker leases granted and not yet returned.", nil, nil)
	descResCap     = prometheus.NewDesc("manta_raylet_resource_capacity", "Resources the node offers, by resource.", []string{"resource"}, nil)
	descResAvail   = prometheus.NewDesc("manta_raylet_resource_available", "Resources not leased now, by resource.", []string{"resource"}, nil)
	descWorkers    = prometheus.NewDesc("manta_raylet_workers", "Live worker processes by job.", []string{"job"}, nil)
	descStarted    = prometheus.NewDesc("manta_raylet_workers_started_total", "Worker processes started.", nil, nil)
	descExited     = prometheus.NewDesc("manta_raylet_workers_exited_total", "Worker processes that ended.", nil, nil)
	descStoreUsed  = prometheus.NewDesc("manta_object_store_used_bytes", "Arena bytes allocated to objects.", nil, nil)
	descStoreCap   = prometheus.NewDesc("manta_object_store_capacity_bytes", "Arena capacity.", nil, nil)
	descStoreObjs  = prometheus.NewDesc("manta_object_store_objects", "Objects in the store, in memory or spilled.", nil, nil)
	descStoreLive  = prometheus.NewDesc("manta_object_store_live_bytes", "Sizes of the objects in the store, in memory or on disk.", nil, nil)
	descSpilledNow = prometheus.NewDesc("manta_object_store_spilled_bytes", "Bytes of objects on disk now.", nil, nil)
	descSpills     = prometheus.NewDesc("manta_object_store_spills_total", "Primary copies spilled to disk.", nil, nil)
	descSpilledTot = prometheus.NewDesc("manta_object_store_spilled_bytes_total", "Bytes spilled to disk.", nil, nil)
	descRestores   = prometheus.NewDesc("manta_object_store_restores_total", "Spilled objects read back into memory.", nil, nil)
	descRestoredB  = prometheus.NewDesc("manta_object_store_restored_bytes_total", "Bytes read back from disk.", nil, nil)
	descPulls      = prometheus.NewDesc("manta_object_pulls_total", "Objects pulled from other nodes.", nil, nil)
	descTransfer   = prometheus.NewDesc("manta_object_transfer_bytes_total", "Object bytes moved between nodes, by direction: in (pulled here), out (served to others).", []string{"direction"}, nil)
)

// rayletCollector reads levels at scrape time.
type rayletCollector struct {
	r *Raylet

	// workers started = exited + alive, except for the moment between a
	// worker leaving the pool and its exit being counted; the collector
	// never reports less than it did, so the counter never goes back.
	mu      sync.Mutex
	started float64
}

func (c *rayletCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descLeases, descResCap, descResAvail, descWorkers, descStarted, descExited,
		descStoreUsed, descStoreCap, descStoreObjs, descStoreLive, descSpilledNow, descSpills, descSpilledTot,
		descRestores, descRestoredB, descPulls, descTransfer} {
		ch <- d
	}
}

func (c *rayletCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	count := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	r.mu.Lock()
	var waiting, infeasible int
	for _, q := range r.queue {
		if q.infeasible {
			infeasible++
		} else {
			waiting++
		}
	}
	leases := len(r.leases)
	total, avail := r.total.Clone(), r.avail.Clone()
	r.mu.Unlock()
	gauge(descQueued, float64(waiting), "resources")
	gauge(descQueued, float64(infeasible), "infeasible")
	gauge(descLeases, float64(leases))
	for k, v := range total {
		gauge(descResCap, v, k)
		gauge(descResAvail, avail[k], k)
	}

	// Exits are read before the pool: a worker that leaves in between is
	// then missed once, never counted twice.
	exited := float64(r.metrics.workerExits.Load())
	byJob := map[string]int{}
	alive := 0
	if r.pool != nil {
		for _, w := range r.pool.Workers() {
			byJob[w.JobID]++
			alive++
		}
	}
	for job, n := range byJob {
		gauge(descWorkers, float64(n), job)
	}
	c.mu.Lock()
	c.started = max(c.started, exited+float64(alive))
	started := c.started
	c.mu.Unlock()
	count(descStarted, started)
	count(descExited, exited)

	objs, bytes := r.store.Stats()
	gauge(descStoreObjs, float64(objs))
	gauge(descStoreLive, float64(bytes))
	if r.shm != nil {
		u := r.shm.Usage()
		gauge(descStoreUsed, float64(u.Allocated))
		gauge(descStoreCap, float64(u.Capacity))
		gauge(descSpilledNow, float64(u.SpilledBytes))
		k := r.shm.Counters()
		count(descSpills, float64(k.Spills))
		count(descSpilledTot, float64(k.SpilledBytes))
		count(descRestores, float64(k.Restores))
		count(descRestoredB, float64(k.RestoredBytes))
	}
	count(descPulls, float64(r.pulledObjects.Load()))
	count(descTransfer, float64(r.pulledBytes.Load()), "in")
	count(descTransfer, float64(r.servedBytes.Load()), "out")
}
