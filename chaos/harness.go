package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
)

// Bounds of a run's phases.
const (
	startTimeout   = 60 * time.Second // the cluster forming
	wholeTimeout   = 30 * time.Second // the cluster whole again after a fault
	warmupTimeout  = 30 * time.Second // the first successful operation
	convergeWithin = 30 * time.Second // every head at the same state hash
)

// Options configures a run. Zero values take the defaults named.
type Options struct {
	Scenario string
	// Duration is how long faults are injected; default 60s.
	Duration time.Duration
	// Seed draws the schedule, the targets and the workload's mix.
	Seed uint64
	// Heads is the number of heads; default 3, at least 3.
	Heads int
	// Nodes is the number of raylets; default the scenario's DefaultNodes
	// (2 for raylet-kill and worker-kill, else 0). With nodes the harness
	// is also a driver and runs the task workload; node-1 is its raylet.
	Nodes int
	// ReportDir receives report.json, summary.txt and the cluster's data
	// and logs (cluster/). It must be empty or absent unless Force.
	ReportDir string
	Force     bool
	// Binary is the manta binary the heads run; default os.Executable().
	Binary string
	// Clients is the number of KV clients; default 6.
	Clients int
	// TaskClients is the number of task workload clients; default 3.
	TaskClients int
	// ActorClients is the number of actor workload clients (each with its
	// own counter actor, alternately at-most-once and at-least-once);
	// default 2, negative for none.
	ActorClients int
	// OwnerClients is the number of owner workload clients (borrowed
	// objects whose owner the kill-owner fault kills); 0 runs one when
	// the scenario kills owners, negative none.
	OwnerClients int
	// LineageClients is the number of lineage workload clients (chains
	// whose lost stages must be rebuilt); default 2, negative for none.
	LineageClients int
	// PlacementGroupClients is the number of placement-group workload
	// clients (create, use, remove in a loop; leaks checked at the end);
	// default 1, negative for none.
	PlacementGroupClients int
	// TaskOpTimeout bounds one task operation; default
	// DefaultTaskOpTimeout.
	TaskOpTimeout time.Duration
	// OpTimeout bounds one operation with its retries; default 10s.
	OpTimeout time.Duration
	// Partition is PartitionAuto (default), PartitionIPTables or
	// PartitionNone. With netns hosts partitions are made in the hosts'
	// namespaces instead (unless PartitionNone).
	Partition string
	// Hosts is launcher.HostsLocal (default) or launcher.HostsNetns: each
	// head and raylet a host of its own, which the network faults need;
	// the harness (and its driver) is then the host at the bridge's
	// address.
	Hosts string
	// TLS runs the cluster on mutual TLS (launcher.Options.TLS); this
	// process's driver takes the launcher's client certificate.
	TLS bool
	// LinearizabilityTimeout bounds the porcupine search; default 60s.
	LinearizabilityTimeout time.Duration
	Logger                 *zap.Logger
	Knobs                  Knobs
}

// Knobs are testing seams.
type Knobs struct {
	// BeforeCheck runs after the workloads stop, before the checkers:
	// tests corrupt a history here to see the checkers catch it.
	BeforeCheck func(ws []Workload)
	// AfterInject runs once each fault is in place: tests interrupt a run
	// mid-fault here.
	AfterInject func(fault string)
}

// validate fills defaults and rejects bad options before anything starts.
func (o *Options) validate() (Scenario, error) {
	sc, err := LookupScenario(o.Scenario)
	if err != nil {
		return sc, err
	}
	if sc.Needs != "" {
		return sc, fmt.Errorf("%w: %s needs %s, which the harness does not have yet", ErrScenarioNeeds, sc.Name, sc.Needs)
	}
	if o.Duration == 0 {
		o.Duration = 60 * time.Second
	}
	if o.Heads == 0 {
		o.Heads = 3
	}
	if o.Clients == 0 {
		o.Clients = 6
	}
	if o.Nodes == 0 {
		o.Nodes = sc.DefaultNodes
	}
	if o.TaskClients == 0 {
		o.TaskClients = 3
	}
	if o.ActorClients == 0 {
		o.ActorClients = 2
	}
	if o.LineageClients == 0 {
		o.LineageClients = 2
	}
	if o.PlacementGroupClients == 0 {
		o.PlacementGroupClients = 1
	}
	if o.TaskOpTimeout == 0 {
		o.TaskOpTimeout = DefaultTaskOpTimeout
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	if o.Partition == "" {
		o.Partition = PartitionAuto
	}
	if o.LinearizabilityTimeout == 0 {
		o.LinearizabilityTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Hosts == "" {
		o.Hosts = launcher.HostsLocal
	}
	switch {
	case o.Hosts != launcher.HostsLocal && o.Hosts != launcher.HostsNetns:
		return sc, fmt.Errorf("%w: hosts %q; want %s or %s", ErrBadOptions, o.Hosts, launcher.HostsLocal, launcher.HostsNetns)
	case o.Duration < 0:
		return sc, fmt.Errorf("%w: duration %v", ErrBadOptions, o.Duration)
	case o.Heads < 3:
		return sc, fmt.Errorf("%w: %d heads; head faults need at least 3 to keep a quorum", ErrBadOptions, o.Heads)
	case o.Nodes < 0:
		return sc, fmt.Errorf("%w: %d nodes", ErrBadOptions, o.Nodes)
	case o.Clients < 1:
		return sc, fmt.Errorf("%w: %d clients", ErrBadOptions, o.Clients)
	case o.TaskClients < 1:
		return sc, fmt.Errorf("%w: %d task clients", ErrBadOptions, o.TaskClients)
	case o.ReportDir == "":
		return sc, fmt.Errorf("%w: a report directory is required", ErrBadOptions)
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return sc, fmt.Errorf("find the manta binary: %w", err)
		}
	}
	if o.ReportDir, err = filepath.Abs(o.ReportDir); err != nil {
		return sc, err
	}
	// A scenario of partitions alone is pointless where none can be made.
	onlyPartitions := len(sc.Faults) == 1 && sc.Faults[0] == faultPartitionOne
	if onlyPartitions && o.Partition == PartitionNone {
		return sc, fmt.Errorf("%w: scenario %s with --partition none", ErrPartitionUnsupported, sc.Name)
	}
	var probe Partitioner = noPartition{}
	if o.Hosts == launcher.HostsNetns {
		if why := launcher.NetnsSupport(); why != "" {
			return sc, fmt.Errorf("%w: --hosts netns: %s", ErrHostsUnsupported, why)
		}
		probe = &netnsPartition{}
	} else if onlyPartitions {
		if why := PartitionSupport(); why != "" {
			return sc, fmt.Errorf("%w: scenario %s: %s", ErrPartitionUnsupported, sc.Name, why)
		}
	}
	// A scenario none of whose faults fits the cluster's shape (raylet
	// faults without raylets) is bad input, told before anything starts.
	var why []string
	for _, name := range sc.Faults {
		if name == faultPartitionOne {
			return sc, nil // decided once the partitioner is set up
		}
		w := newFaults()[name].Unsupported(o.Heads, o.Nodes, probe)
		if w == "" {
			return sc, nil
		}
		why = append(why, name+": "+w)
	}
	return sc, fmt.Errorf("%w: no fault of scenario %s fits %d heads and %d nodes (%s)", ErrBadOptions, sc.Name, o.Heads, o.Nodes, strings.Join(why, "; "))
}

// Run starts a cluster, runs the workloads while the scenario's faults are
// injected, checks what the workloads saw and the cluster's final state,
// stops everything it started, and writes the report. Bad options return
// an error before anything starts. Otherwise the report comes back even
// when the run failed (its verdict says why); the error is then only for
// a harness that could not do its job. Cancelling ctx (Ctrl-C) ends the
// run early with a partial report.
func Run(ctx context.Context, o Options) (*Report, error) {
	sc, err := o.validate()
	if err != nil {
		return nil, err
	}
	if err := prepareReportDir(o.ReportDir, o.Force); err != nil {
		return nil, err
	}
	r := &runner{o: o, sc: sc, log: o.Logger.Named("chaos"), rep: &Report{
		Scenario: sc.Name, Seed: o.Seed, Heads: o.Heads, Nodes: o.Nodes, Duration: o.Duration.String(),
		StartedAt: time.Now().UTC(), ReportDir: o.ReportDir,
		Faults: []FaultEvent{}, Workloads: []WorkloadReport{}, Checks: []CheckResult{},
	}}
	err = r.run(ctx)
	return r.rep, err
}

type runner struct {
	o   Options
	sc  Scenario
	log *zap.Logger

	mu  sync.Mutex // rep's slices, written from the nemesis and cleanup
	rep *Report

	part      Partitioner
	cluster   *launcher.Cluster
	env       *Env
	workloads []Workload
	driver    bool          // this process is a driver of the cluster (ray.Init)
	stopProcs chan struct{} // ends the process sampler
	procsDone chan struct{}

	stopOnce   sync.Once
	stopWork   context.CancelFunc
	workDone   chan struct{}
	stuck      bool // workloads outlived their stop bound
	runStart   time.Duration
	runEnd     time.Duration
	summarised bool
	cleanedUp  bool
}

func (r *runner) addError(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.log.Error("harness error", zap.String("error", msg))
	r.mu.Lock()
	r.rep.Errors = append(r.rep.Errors, msg)
	r.mu.Unlock()
}

func (r *runner) addCheck(c CheckResult) {
	r.log.Info("check", zap.String("name", c.Name), zap.String("verdict", c.Verdict), zap.String("detail", c.Detail))
	r.mu.Lock()
	r.rep.Checks = append(r.rep.Checks, c)
	r.mu.Unlock()
}

// run is the whole run. Whatever happens — an error, Ctrl-C, a panic — its
// deferred part stops every process, removes every rule and writes the
// report.
func (r *runner) run(ctx context.Context) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("harness panic", zap.Any("panic", p), zap.Stack("stack"))
			r.addError("panic: %v", p)
			err = fmt.Errorf("chaos: harness panic: %v", p)
		}
		if ctx.Err() != nil {
			r.rep.Interrupted = true
		}
		r.cleanup()
		r.rep.decide()
		if werr := r.rep.write(r.o.ReportDir); werr != nil {
			err = errors.Join(err, fmt.Errorf("write the report: %w", werr))
		}
	}()

	clusterDir := filepath.Join(r.o.ReportDir, reportCluster)
	var part Partitioner = noPartition{reason: "not used by scenario " + r.sc.Name}
	binary := r.o.Binary
	if r.o.Hosts == launcher.HostsNetns && r.o.Partition != PartitionNone {
		// Cuts are rules inside the hosts' namespaces, made once they exist.
		part = &netnsPartition{}
	} else if slices.Contains(r.sc.Faults, faultPartitionOne) {
		// Only a scenario that partitions puts heads in cgroups and rules
		// in the kernel.
		if part, binary, err = setupPartition(r.o.Partition, r.o.Heads, r.o.Binary, clusterDir, r.log); err != nil {
			r.addError("%v", err)
			return err
		}
	}
	r.part = part
	r.rep.Partition = PartitionReport{Mechanism: part.Mechanism(), Detail: part.Describe()}
	faults, names := r.faults()
	if len(names) == 0 {
		err := fmt.Errorf("%w: no fault of scenario %s can run here (%s)", ErrPartitionUnsupported, r.sc.Name, strings.Join(r.rep.SkippedFaults, "; "))
		r.addError("%v", err)
		return err
	}

	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	c, err := launcher.Start(startCtx, launcher.Options{Binary: binary, Heads: r.o.Heads, Nodes: r.o.Nodes, DataDir: clusterDir,
		Hosts: r.o.Hosts, Logger: r.log, TLS: r.o.TLS})
	if err != nil {
		r.addError("start the cluster: %v", err)
		return err
	}
	r.cluster = c
	r.env = NewEnv(c, r.log)
	r.env.OpTimeout = r.o.OpTimeout
	r.env.part = part
	if n := c.Network(); n != nil {
		r.env.shaper = NewNetShaper(n, r.o.Seed, r.log)
		if np, ok := part.(*netnsPartition); ok {
			np.bind(r.env.shaper)
		}
	}
	r.env.Nodes = r.o.Nodes
	r.startProcSampler()
	r.log.Info("cluster up", zap.Strings("heads", c.Addresses()), zap.Int("nodes", r.o.Nodes), zap.String("partition", part.Mechanism()))

	kv := NewKVWorkload(r.o.Seed)
	kv.Clients = r.o.Clients
	r.workloads = []Workload{kv}
	if r.o.Nodes > 0 {
		if err := r.initDriver(startCtx); err != nil {
			r.addError("start the harness's driver: %v", err)
			return err
		}
		if r.o.PlacementGroupClients > 0 {
			// Before the task workload: its check removes the groups a
			// fault left behind, which cpus-free-after then sees gone.
			pw := NewPlacementGroupWorkload()
			pw.Clients = r.o.PlacementGroupClients
			pw.OpTimeout = r.o.TaskOpTimeout
			r.workloads = append(r.workloads, pw)
		}
		tw := NewTaskWorkload(r.o.Seed)
		tw.Clients = r.o.TaskClients
		tw.OpTimeout = r.o.TaskOpTimeout
		tw.Accept = acceptedTaskErrors(names)
		r.workloads = append(r.workloads, tw)
		if r.o.LineageClients > 0 {
			lw := NewLineageWorkload(r.o.Seed)
			lw.Clients = r.o.LineageClients
			lw.OpTimeout = r.o.TaskOpTimeout
			lw.Accept = acceptedLineageErrors(names)
			r.workloads = append(r.workloads, lw)
		}
		if r.o.OwnerClients > 0 || (r.o.OwnerClients == 0 && slices.Contains(names, faultKillOwner)) {
			ow := NewOwnerWorkload(r.o.Seed)
			ow.Clients = max(r.o.OwnerClients, 1)
			ow.OpTimeout = r.o.TaskOpTimeout
			ow.Accept = acceptedOwnerErrors(names)
			r.workloads = append(r.workloads, ow)
		}
		if r.o.ActorClients > 0 {
			aw := NewActorWorkload(r.o.Seed)
			aw.Clients = r.o.ActorClients
			aw.OpTimeout = r.o.TaskOpTimeout
			aw.Accept = acceptedActorErrors(names)
			r.workloads = append(r.workloads, aw)
		}
	}
	r.startWorkloads(ctx)

	// Faults start once every workload has had a success.
	wctx, cancel := context.WithTimeout(ctx, warmupTimeout)
	var idle []string
	err = poll(wctx, 20*time.Millisecond, func() bool {
		idle = idle[:0]
		for _, w := range r.workloads {
			if r.env.progressOf(w.Name()).count() == 0 {
				idle = append(idle, w.Name())
			}
		}
		return len(idle) == 0
	})
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			r.addError("no %s operation succeeded within %v of the cluster forming", strings.Join(idle, " or "), warmupTimeout)
		}
		return nil
	}
	r.runStart = r.env.Now()
	deadline := time.Now().Add(r.o.Duration)
	r.nemesis(ctx, deadline, faults, newPlanner(r.sc, names, r.o.Seed))
	if ctx.Err() == nil {
		// The faults are done; the workloads go on to the end.
		wait(ctx, time.Until(deadline))
	}
	if ctx.Err() == nil {
		r.tail(ctx)
	}
	r.stopWorkloads()
	r.summariseRun()
	if ctx.Err() != nil {
		// Interrupted: a bounded look at the partial history, nothing that
		// needs the cluster.
		for _, w := range r.workloads {
			switch w := w.(type) {
			case *KVWorkload:
				r.addCheck(checkLinearizable(w.History(), r.log, CheckOptions{ReportDir: r.o.ReportDir, LinearizabilityTimeout: 10 * time.Second}))
			case *TaskWorkload:
				for _, c := range w.check() {
					r.addCheck(c)
				}
			case *ActorWorkload, *LineageWorkload:
				for _, c := range w.Check(ctx, r.env, CheckOptions{}) {
					r.addCheck(c)
				}
			case *PlacementGroupWorkload:
				// Its leak check needs the cluster: only its verdict on
				// the placements it saw.
				r.addCheck(w.Check(ctx, r.env, CheckOptions{})[0])
			}
		}
		return nil
	}
	r.check(ctx)
	return nil
}

// faults returns the scenario's faults that can run here, and notes the
// others in the report.
func (r *runner) faults() (map[string]Fault, []string) {
	all := newFaults()
	out := map[string]Fault{}
	var names []string
	for _, name := range r.sc.Faults {
		f := all[name]
		if why := f.Unsupported(r.o.Heads, r.o.Nodes, r.part); why != "" {
			r.rep.SkippedFaults = append(r.rep.SkippedFaults, name+": "+why)
			continue
		}
		out[name] = f
		names = append(names, name)
	}
	return out, names
}

func (r *runner) startWorkloads(ctx context.Context) {
	wctx, cancel := context.WithCancel(ctx)
	r.stopWork = cancel
	r.workDone = make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range r.workloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				// A panicking workload fails the run instead of killing the
				// process before it has cleaned up.
				if p := recover(); p != nil {
					r.log.Error("workload panic", zap.String("workload", w.Name()), zap.Any("panic", p), zap.Stack("stack"))
					r.addError("workload %s panicked: %v", w.Name(), p)
				}
			}()
			if err := w.Run(wctx, r.env); err != nil {
				r.addError("workload %s: %v", w.Name(), err)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(r.workDone)
	}()
}

// stopWorkloads cancels the workloads and waits for them, at most as long
// as one operation may take; workloads still running then are hung.
func (r *runner) stopWorkloads() {
	r.stopOnce.Do(func() {
		if r.stopWork == nil {
			return
		}
		r.stopWork()
		t := time.NewTimer(r.o.OpTimeout + hangGrace)
		defer t.Stop()
		select {
		case <-r.workDone:
		case <-t.C:
			r.stuck = true
		}
		r.runEnd = r.env.Now()
	})
}

// nemesis injects faults from the plan until the next would not end
// before deadline. Every fault it injects it also undoes, even when ctx
// ends during the fault.
func (r *runner) nemesis(ctx context.Context, deadline time.Time, faults map[string]Fault, plan *planner) {
	for seq := 1; ; seq++ {
		st := plan.next()
		if time.Until(deadline) < st.Gap+st.Hold {
			return
		}
		if !wait(ctx, st.Gap) {
			return
		}
		if err := r.env.waitHealthy(ctx, wholeTimeout); err != nil {
			if ctx.Err() == nil {
				r.addError("before fault %d: %v", seq, err)
			}
			return
		}
		ev := FaultEvent{Seq: seq, Fault: st.Fault, HoldMs: ms(st.Hold)}
		inj, err := faults[st.Fault].Inject(ctx, r.env, st.Pick)
		if err != nil {
			ev.at = r.env.Now()
			ev.At = secs(ev.at)
			ev.Error = "inject: " + err.Error()
			r.log.Warn("fault not injected", zap.Int("seq", seq), zap.String("fault", st.Fault), zap.Error(err))
			r.addFault(ev)
			if ctx.Err() != nil {
				return
			}
			continue
		}
		ev.at = r.env.Since(inj.At)
		ev.At, ev.Target, ev.Role, ev.PID, ev.Action = secs(ev.at), inj.Target, inj.Role, inj.PID, inj.Action
		r.log.Info("fault", zap.Int("seq", seq), zap.String("fault", st.Fault), zap.String("target", inj.Target),
			zap.String("role", inj.Role), zap.Int("pid", inj.PID), zap.Duration("hold", st.Hold))
		if k := r.o.Knobs.AfterInject; k != nil {
			k(st.Fault)
		}
		wait(ctx, st.Hold)
		// Undo even when interrupted: a paused head or a cut must not
		// outlive the run.
		uctx, cancel := context.WithTimeout(context.Background(), wholeTimeout)
		err = inj.Recover(uctx)
		cancel()
		undone := r.env.Now()
		ev.UndoneAt = secs(undone)
		if err != nil {
			ev.Error = "undo: " + err.Error()
			r.addError("fault %d (%s on %s): undo: %v", seq, st.Fault, inj.Target, err)
		}
		if ctx.Err() != nil {
			r.addFault(ev)
			return
		}
		if err := r.env.waitHealthy(ctx, wholeTimeout); err != nil {
			if ev.Error == "" {
				ev.Error = err.Error()
			}
		} else {
			d := ms(r.env.Now() - undone)
			ev.WholeAfterMs = &d
		}
		r.addFault(ev)
	}
}

func (r *runner) addFault(ev FaultEvent) {
	r.mu.Lock()
	r.rep.Faults = append(r.rep.Faults, ev)
	r.mu.Unlock()
}

// tail keeps the workloads running until the cluster is whole and an
// operation has succeeded after the last fault, so every fault has a
// recovery time.
func (r *runner) tail(ctx context.Context) {
	if err := r.env.waitHealthy(ctx, wholeTimeout); err != nil {
		r.addError("after the faults: %v", err)
		return
	}
	r.mu.Lock()
	faults := append([]FaultEvent(nil), r.rep.Faults...)
	r.mu.Unlock()
	tctx, cancel := context.WithTimeout(ctx, wholeTimeout)
	defer cancel()
	poll(tctx, 20*time.Millisecond, func() bool {
		for _, f := range faults {
			if _, ok := r.env.progressOf(measuredBy[f.Fault]).firstAfter(f.at); !ok {
				return false
			}
		}
		return true
	})
}

// summariseRun fills in the counts, rates and recovery times.
func (r *runner) summariseRun() {
	if r.env == nil || r.summarised {
		return
	}
	r.summarised = true
	if r.runEnd == 0 {
		r.runEnd = r.env.Now()
	}
	run := r.runEnd - r.runStart
	r.rep.RunSeconds = secs(run)
	r.mu.Lock()
	defer r.mu.Unlock()
	injected := func(f *FaultEvent) bool { return f.Error == "" || f.Target != "" }
	total := 0
	for _, w := range r.workloads {
		s := w.Stats()
		wr := WorkloadReport{Name: w.Name(), OpStats: s, MaxLatencyMs: ms(s.MaxLatency)}
		if run > 0 {
			wr.OpsPerSec = float64(s.OK) / run.Seconds()
		}
		if o, ok := w.(interface{ Outcomes() map[string]int }); ok {
			wr.Outcomes = o.Outcomes()
		}
		var rec []float64
		p := r.env.progressOf(w.Name())
		for i := range r.rep.Faults {
			if f := &r.rep.Faults[i]; injected(f) {
				if t, ok := p.firstAfter(f.at); ok {
					rec = append(rec, ms(t-f.at))
				}
			}
		}
		wr.Recovery = statsOf(rec)
		total += s.OK
		r.rep.Workloads = append(r.rep.Workloads, wr)
	}
	if run > 0 {
		r.rep.OpsPerSec = float64(total) / run.Seconds()
	}
	var rec []float64
	for i := range r.rep.Faults {
		f := &r.rep.Faults[i]
		if !injected(f) {
			continue
		}
		f.MeasuredBy = measuredBy[f.Fault]
		if t, ok := r.env.progressOf(f.MeasuredBy).firstAfter(f.at); ok {
			d := ms(t - f.at)
			f.RecoveryMs = &d
			rec = append(rec, d)
		}
	}
	r.rep.Recovery = statsOf(rec)
}

// check runs every checker on a whole cluster.
func (r *runner) check(ctx context.Context) {
	if k := r.o.Knobs.BeforeCheck; k != nil {
		k(r.workloads)
	}
	co := CheckOptions{ReportDir: r.o.ReportDir, LinearizabilityTimeout: r.o.LinearizabilityTimeout}
	if err := r.env.waitHealthy(ctx, wholeTimeout); err != nil {
		r.addError("before the checks: %v", err)
	}
	for _, w := range r.workloads {
		for _, c := range w.Check(ctx, r.env, co) {
			r.addCheck(c)
		}
	}
	r.addCheck(r.checkRecovery())
	r.addCheck(r.checkNoHangs())
	r.addCheck(r.checkStateHash(ctx))
}

// checkRecovery fails a fault the cluster did not come back from: no
// successful operation after it, or never whole again after its undo.
func (r *runner) checkRecovery() CheckResult {
	res := CheckResult{Name: "recovery"}
	r.mu.Lock()
	defer r.mu.Unlock()
	var bad []string
	for _, f := range r.rep.Faults {
		switch {
		case f.Error != "":
			bad = append(bad, fmt.Sprintf("fault %d (%s): %s", f.Seq, f.Fault, f.Error))
		case f.RecoveryMs == nil:
			bad = append(bad, fmt.Sprintf("fault %d (%s): no operation succeeded after it", f.Seq, f.Fault))
		case f.WholeAfterMs == nil:
			bad = append(bad, fmt.Sprintf("fault %d (%s): the cluster was not whole again", f.Seq, f.Fault))
		}
	}
	if len(bad) > 0 {
		res.Verdict, res.Detail = Fail, firstFew(bad, 3)
		return res
	}
	res.Verdict = Pass
	s := r.rep.Recovery
	if s.Count == 0 {
		res.Detail = "no faults injected"
		return res
	}
	res.Detail = fmt.Sprintf("%d faults; next ok operation after min %.0fms, median %.0fms, max %.0fms", s.Count, s.MinMs, s.MedianMs, s.MaxMs)
	return res
}

// checkNoHangs fails operations that outlived their timeout, and
// workloads that did not stop.
func (r *runner) checkNoHangs() CheckResult {
	res := CheckResult{Name: "no-hangs"}
	var hangs, slowest []string
	for _, w := range r.workloads {
		s := w.Stats()
		hangs = append(hangs, s.Hangs...)
		bound := r.o.OpTimeout + hangGrace
		switch w.(type) {
		case *TaskWorkload, *ActorWorkload, *LineageWorkload, *PlacementGroupWorkload:
			bound = r.o.TaskOpTimeout
		}
		slowest = append(slowest, fmt.Sprintf("slowest %s operation %v (bound %v)", w.Name(), s.MaxLatency.Round(time.Millisecond), bound))
	}
	if r.stuck {
		hangs = append(hangs, fmt.Sprintf("workloads still running %v after they were stopped", r.o.OpTimeout+hangGrace))
	}
	if len(hangs) > 0 {
		res.Verdict, res.Detail = Fail, firstFew(hangs, 3)
		return res
	}
	res.Verdict = Pass
	res.Detail = strings.Join(slowest, ", ")
	return res
}

// checkStateHash writes a fence through the leader, so every head has
// something to apply past whatever was in flight, then waits until every
// head reports the same FSM state hash.
func (r *runner) checkStateHash(ctx context.Context) CheckResult {
	res := CheckResult{Name: "state-hash-equal"}
	cl, err := r.env.Client()
	if err != nil {
		res.Verdict, res.Detail = Fail, err.Error()
		return res
	}
	defer cl.Close()
	if _, err := cl.Put(ctx, kvNamespace, "fence", []byte(time.Now().String())); err != nil {
		res.Verdict, res.Detail = Fail, "fencing write: "+err.Error()
		return res
	}
	var last []string
	cctx, cancel := context.WithTimeout(ctx, convergeWithin)
	defer cancel()
	err = poll(cctx, 100*time.Millisecond, func() bool {
		last = last[:0]
		hashes := map[string]bool{}
		for _, h := range r.cluster.Heads() {
			sh, err := cl.StateHashOf(cctx, h.Address)
			if err != nil {
				last = append(last, fmt.Sprintf("%s: %v", h.ID, err))
				return false
			}
			hashes[sh.Hash] = true
			last = append(last, fmt.Sprintf("%s %.12s@%d", h.ID, sh.Hash, sh.AppliedIndex))
		}
		return len(hashes) == 1
	})
	sort.Strings(last)
	if err != nil {
		res.Verdict = Fail
		res.Detail = fmt.Sprintf("heads did not converge within %v: %s", convergeWithin, strings.Join(last, ", "))
		return res
	}
	res.Verdict, res.Detail = Pass, strings.Join(last, ", ")
	return res
}

// cleanup stops the workloads, heals every cut, stops every head, checks
// that none is left, and removes the partition set-up.
func (r *runner) cleanup() {
	if r.cleanedUp {
		return
	}
	r.cleanedUp = true
	r.stopWorkloads()
	r.summariseRun()
	if r.driver {
		// Ends the job, so its raylets kill its workers, while the heads
		// still run.
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := ray.Shutdown(sctx); err != nil {
			r.log.Warn("shut the driver down", zap.Error(err))
		}
		cancel()
		r.driver = false
	}
	if r.part != nil {
		if err := r.part.HealAll(); err != nil {
			r.addError("heal partitions: %v", err)
		}
	}
	if r.env != nil && r.env.shaper != nil {
		// Before the processes stop: a held packet must not outlive them.
		if err := r.env.shaper.HealAll(); err != nil {
			r.addError("heal network faults: %v", err)
		}
	}
	if r.cluster != nil {
		r.stopProcSampler()
		if r.env != nil {
			r.env.observeProcs()
		}
		if err := r.cluster.Close(); err != nil {
			r.log.Warn("close the cluster", zap.Error(err))
		}
		if r.env != nil {
			r.addCheck(r.checkNoLeaks())
		}
	}
	if r.part != nil {
		if err := r.part.Close(); err != nil {
			r.addError("remove the partition set-up: %v", err)
		}
	}
}

// checkNoLeaks: every head, raylet and worker process the run saw is
// gone, and nothing is left in the heads' cgroups (which would also catch
// their children). Workers die with their raylet a moment after it is
// reaped, so the check waits a little for them.
func (r *runner) checkNoLeaks() CheckResult {
	res := CheckResult{Name: "no-leaked-processes"}
	var leaked map[string][]int
	var tracked map[string]int
	var left []int
	ctx, cancel := context.WithTimeout(context.Background(), leakWait)
	defer cancel()
	poll(ctx, 50*time.Millisecond, func() bool {
		leaked, tracked = r.env.procs.leaked()
		left = r.part.Leftovers()
		return len(leaked) == 0 && len(left) == 0
	})
	kinds := []string{procHead, procRaylet, procWorker}
	if len(leaked) > 0 || len(left) > 0 {
		var parts []string
		for _, k := range kinds {
			if len(leaked[k]) > 0 {
				parts = append(parts, fmt.Sprintf("%s PIDs %v", k, leaked[k]))
			}
		}
		if len(left) > 0 {
			parts = append(parts, fmt.Sprintf("in the heads' cgroups %v", left))
		}
		res.Verdict = Fail
		res.Detail = fmt.Sprintf("still running %v after close: %s", leakWait, strings.Join(parts, ", "))
		return res
	}
	var parts []string
	for _, k := range kinds {
		if tracked[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", tracked[k], k))
		}
	}
	res.Verdict = Pass
	res.Detail = "every process seen is gone: " + strings.Join(parts, ", ")
	return res
}

// leakWait bounds the wait for processes to go after the cluster closed.
const leakWait = 5 * time.Second

// initDriver makes this process a driver of the cluster, submitting
// through node-1 (the raylet no fault kills).
func (r *runner) initDriver(ctx context.Context) error {
	home := r.cluster.Nodes()[0]
	r.env.HomeNode = home.ID
	// The SDK takes its TLS identity from the environment.
	for _, kv := range r.cluster.TLSFiles().Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	err := ray.Init(ctx, ray.Address(strings.Join(r.cluster.Addresses(), ",")), ray.Token(r.cluster.Token()),
		ray.Raylet(home.Address), ray.Logger(r.log.Named("driver")))
	if err != nil {
		return err
	}
	r.driver = true
	return nil
}

// startProcSampler notes every head, raylet and worker process every
// procSampleEvery until stopProcSampler, so short-lived workers are
// tracked too.
func (r *runner) startProcSampler() {
	r.stopProcs, r.procsDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.procsDone)
		t := time.NewTicker(procSampleEvery)
		defer t.Stop()
		for {
			select {
			case <-r.stopProcs:
				return
			case <-t.C:
				r.env.observeProcs()
			}
		}
	}()
}

func (r *runner) stopProcSampler() {
	if r.stopProcs != nil {
		close(r.stopProcs)
		<-r.procsDone
		r.stopProcs = nil
	}
}

const procSampleEvery = 250 * time.Millisecond

// wait waits d or until ctx ends, and says whether it waited d.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
