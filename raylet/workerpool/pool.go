// Package workerpool starts, reuses and reaps a raylet's worker processes.
// A worker is the job's own binary re-executed in worker mode (see the
// Env* variables); it handshakes back through Register. Idle workers of a
// job are reused, retired after IdleTimeout, and all of a job's workers
// are killed when the job ends. With Prestart set, the pool keeps up to
// that many warm (started, unleased) workers per job, refilled in the
// background after each Prestart call, so that a dedicated worker (an
// actor's) is usually leased without waiting for a process start. Every
// process is reaped by a goroutine the pool owns, and dies with the raylet
// (Pdeathsig).
package workerpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/raylet/logmonitor"
)

// Environment a worker process starts with.
const (
	EnvWorkerID      = "MANTA_WORKER_ID"
	EnvRayletAddress = "MANTA_RAYLET_ADDRESS"
	EnvJobID         = "MANTA_JOB_ID"
	EnvNodeID        = "MANTA_NODE_ID"
	EnvToken         = "MANTA_WORKER_TOKEN"
	// EnvBinarySHA256 is the job binary's digest ("" in embedded mode),
	// which the worker's own lease requests (nested tasks) name.
	EnvBinarySHA256 = "MANTA_BINARY_SHA256"
	// EnvHeads lists the control plane's addresses (comma-separated), for
	// workers that look actors up.
	EnvHeads = "MANTA_HEADS"
	// EnvProcsPreset marks a GOMAXPROCS the pool chose (1, what most tasks
	// ask for) rather than the user: the worker starts with one P instead
	// of shrinking to it on its first task, a stop-the-world that cost
	// ~14% of a short-lived actor worker's CPU. The worker still resizes
	// for a task that asks for more CPUs.
	EnvProcsPreset = "MANTA_GOMAXPROCS_PRESET"
)

// Defaults of Config.LogMaxBytes and LogBackups: at most 160 MiB of output
// kept per worker.
const (
	DefaultLogMaxBytes    = 32 << 20
	DefaultLogBackups     = 4
	DefaultKeepExitedLogs = 1000
)

// ErrClosed is returned once the pool is closed.
var ErrClosed = errors.New("workerpool: closed")

// Config configures a Pool.
type Config struct {
	RayletAddress string
	Heads         []string
	NodeID        string
	Token         string
	// TLSEnv hands workers the raylet's TLS files (tlsconfig.Files.Env).
	TLSEnv []string
	// LogDir receives each worker's stdout and stderr, together, in a
	// rotated file of its own (logmonitor.FileName). Output, when set, also
	// receives every worker's output (embedded mode prints it).
	LogDir string
	Output io.Writer
	// LogMaxBytes bounds one log file before it rotates (default 32 MiB);
	// LogBackups is how many rotated files are kept (default 4).
	LogMaxBytes int64
	LogBackups  int
	// KeepExitedLogs bounds the exited workers whose log files are kept
	// (the oldest go first); default 1000, negative keeps all.
	KeepExitedLogs int
	// StartTimeout bounds a worker's start up to its handshake; default 30s.
	StartTimeout time.Duration
	// IdleTimeout retires idle workers; default 10s.
	IdleTimeout time.Duration
	// Prestart bounds a job's warm workers (idle, or started and not yet
	// handshaken, and not leased) that Prestart tops up; 0 disables it.
	Prestart int
	// OnExit is called (without the pool's lock) when a worker process ends.
	OnExit func(w *Worker)
	// KeepIdle, when set, is asked (without the pool's lock) before an
	// idle worker is retired; true keeps it another IdleTimeout. A worker
	// that owns objects other processes borrow is kept: retiring it would
	// take them with it.
	KeepIdle func(w *Worker) bool
	Logger   *zap.Logger
}

// Worker is one worker process.
type Worker struct {
	ID      string
	JobID   string
	Binary  string
	PID     int
	Address string // its CoreWorker server, once registered
	// LogPath is its output's file ("" without Config.LogDir).
	LogPath string

	// Env is the runtime env the process was started in; key pools it
	// (the job ID alone for the job's plain env).
	Env        RuntimeEnv
	key        string
	cmd        *exec.Cmd
	registered chan struct{}
	exited     chan struct{}
	idleSince  time.Time
	detached   bool // a detached actor's: it outlives its job (under Pool.mu)
}

// Exited is closed when the process has ended and been reaped.
func (w *Worker) Exited() <-chan struct{} { return w.exited }

// Pool holds the raylet's workers.
type Pool struct {
	cfg Config
	log *zap.Logger

	mu   sync.Mutex
	all  map[string]*Worker
	idle map[string][]*Worker // by pool key: job ID (+ runtime env)
	// warming are prestarted workers not yet handshaken nor claimed, by
	// pool key; they move to idle on their handshake.
	warming map[string][]*Worker
	// ended are jobs whose workers were killed: never prestarted again.
	ended  map[string]bool
	closed bool
	// exits counts worker exits since the log directory was last pruned.
	exits int

	stop chan struct{}
	wg   sync.WaitGroup
}

// New returns a pool and starts its idle reaper.
func New(cfg Config) *Pool {
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.LogBackups == 0 {
		cfg.LogBackups = DefaultLogBackups
	}
	if cfg.KeepExitedLogs == 0 {
		cfg.KeepExitedLogs = DefaultKeepExitedLogs
	}
	p := &Pool{cfg: cfg, log: cfg.Logger.Named("workerpool"), all: map[string]*Worker{}, idle: map[string][]*Worker{},
		warming: map[string][]*Worker{}, ended: map[string]bool{}, stop: make(chan struct{})}
	p.wg.Add(1)
	go p.retireLoop()
	return p
}

// Pop returns an idle worker of the job, or starts one and waits for its
// handshake.
func (p *Pool) Pop(ctx context.Context, jobID, binary, sha string) (*Worker, error) {
	return p.PopEnv(ctx, jobID, binary, sha, RuntimeEnv{})
}

// PopEnv is Pop for a runtime env: only a worker started in that env
// serves it (a worker never serves two envs).
func (p *Pool) PopEnv(ctx context.Context, jobID, binary, sha string, env RuntimeEnv) (*Worker, error) {
	key := poolKey(jobID, env)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	for q := p.idle[key]; len(q) > 0; q = p.idle[key] {
		w := q[len(q)-1]
		p.idle[key] = q[:len(q)-1]
		select {
		case <-w.exited:
			continue
		default:
		}
		if w.Binary == binary {
			p.mu.Unlock()
			return w, nil
		}
		p.killLocked(w)
	}
	// A prestarted worker still starting is further along than a new one.
	var w *Worker
	for q := p.warming[key]; len(q) > 0 && w == nil; q = p.warming[key] {
		x := q[0]
		p.removeWarmingLocked(x)
		select {
		case <-x.exited:
			continue
		default:
		}
		if x.Binary == binary {
			w = x
		} else {
			p.killLocked(x)
		}
	}
	if w == nil {
		var err error
		if w, err = p.startLocked(jobID, binary, sha, env); err != nil {
			p.mu.Unlock()
			return nil, err
		}
	}
	p.mu.Unlock()
	t := time.NewTimer(p.cfg.StartTimeout)
	defer t.Stop()
	select {
	case <-w.registered:
		return w, nil
	case <-w.exited:
		return nil, fmt.Errorf("workerpool: worker %s exited before its handshake (see its log)", w.ID)
	case <-t.C:
		p.Kill(w)
		return nil, fmt.Errorf("workerpool: worker %s did not handshake within %s", w.ID, p.cfg.StartTimeout)
	case <-ctx.Done():
		// The started worker goes idle for the next request.
		p.mu.Lock()
		defer p.mu.Unlock()
		w.idleSince = time.Now()
		p.idle[key] = append(p.idle[key], w)
		return nil, ctx.Err()
	}
}

func (p *Pool) startLocked(jobID, binary, sha string, env RuntimeEnv) (*Worker, error) {
	id := auth.RandomHex(8)
	cmd := exec.Command(binary)
	// The runtime env's variables come before the worker's own, which win.
	cmd.Env = append(append(os.Environ(), env.vars()...),
		EnvWorkerID+"="+id,
		EnvRayletAddress+"="+p.cfg.RayletAddress,
		EnvJobID+"="+jobID,
		EnvNodeID+"="+p.cfg.NodeID,
		EnvToken+"="+p.cfg.Token,
		EnvBinarySHA256+"="+sha,
		EnvHeads+"="+strings.Join(p.cfg.Heads, ","),
	)
	cmd.Env = append(cmd.Env, p.cfg.TLSEnv...)
	if os.Getenv("GOMAXPROCS") == "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1", EnvProcsPreset+"=1")
	}
	cmd.Dir = env.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The worker writes into a pipe that the pool copies to its log file:
	// the file is named by the PID, known only once the process runs, and
	// the pool bounds it by rotating. Stdout and stderr share the pipe so
	// their lines keep their order.
	var pr, pw *os.File
	if p.cfg.LogDir != "" || p.cfg.Output != nil {
		var err error
		if pr, pw, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("workerpool: output pipe: %w", err)
		}
		cmd.Stdout, cmd.Stderr = pw, pw
	}
	err := cmd.Start()
	if pw != nil {
		pw.Close() // the child holds its own copy
	}
	if err != nil {
		if pr != nil {
			pr.Close()
		}
		return nil, fmt.Errorf("workerpool: start %s: %w", binary, err)
	}
	w := &Worker{ID: id, JobID: jobID, Binary: binary, PID: cmd.Process.Pid, cmd: cmd, Env: env, key: poolKey(jobID, env),
		registered: make(chan struct{}), exited: make(chan struct{})}
	var copied chan struct{}
	if pr != nil {
		// Opened under p.mu, like the worker's entry in p.all: a log reader
		// that finds the file finds the worker (Get) too.
		copied = make(chan struct{})
		out, file := p.outputOf(w)
		p.wg.Add(1)
		go p.copyOutput(pr, out, file, copied)
	}
	p.all[id] = w
	p.log.Debug("worker started", zap.String("worker", id), zap.String("job", jobID), zap.Int("pid", w.PID))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := cmd.Wait()
		if copied != nil {
			// A grandchild may hold the pipe open after the worker is gone;
			// closing our end then ends the copy.
			select {
			case <-copied:
			case <-time.After(2 * time.Second):
				pr.Close()
				<-copied
			}
		}
		p.mu.Lock()
		delete(p.all, id)
		p.removeIdleLocked(w)
		p.removeWarmingLocked(w)
		p.mu.Unlock()
		p.pruneLogs()
		close(w.exited)
		p.log.Debug("worker exited", zap.String("worker", id), zap.Int("pid", w.PID), zap.Error(err))
		if p.cfg.OnExit != nil {
			p.cfg.OnExit(w)
		}
	}()
	return w, nil
}

// pruneLogs bounds the log files of exited workers (Config.KeepExitedLogs).
// It lists the directory once every tenth of the bound's exits, so the
// bound may be passed by that tenth.
func (p *Pool) pruneLogs() {
	keep := p.cfg.KeepExitedLogs
	if p.cfg.LogDir == "" || keep < 0 {
		return
	}
	p.mu.Lock()
	p.exits++
	if p.exits < max(1, keep/10) {
		p.mu.Unlock()
		return
	}
	p.exits = 0
	live := make(map[string]bool, len(p.all))
	for id := range p.all {
		live[id] = true
	}
	p.mu.Unlock()
	if n, err := logmonitor.PruneExited(p.cfg.LogDir, keep, live); err != nil {
		p.log.Warn("prune worker logs", zap.Error(err))
	} else if n > 0 {
		p.log.Debug("pruned exited workers' logs", zap.Int("files", n))
	}
}

// Register records a worker's handshake.
func (p *Pool) Register(id, address string, pid int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.all[id]
	if !ok {
		return fmt.Errorf("workerpool: unknown worker %s", id)
	}
	if w.PID != pid {
		return fmt.Errorf("workerpool: worker %s has PID %d, not %d", id, w.PID, pid)
	}
	select {
	case <-w.registered:
	default:
		w.Address = address
		close(w.registered)
	}
	return nil
}

// Prestart tops the job's warm workers up to Config.Prestart, starting
// the missing ones in the background: each becomes idle on its handshake
// (and is retired after IdleTimeout like any idle worker). It does nothing
// once the job's workers were killed (KillJob) or the pool is closed.
func (p *Pool) Prestart(jobID, binary, sha string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Prestart <= 0 || p.closed || p.ended[jobID] {
		return
	}
	for n := len(p.idle[jobID]) + len(p.warming[jobID]); n < p.cfg.Prestart; n++ {
		w, err := p.startLocked(jobID, binary, sha, RuntimeEnv{})
		if err != nil {
			p.log.Warn("prestart a worker", zap.String("job", jobID), zap.Error(err))
			return
		}
		p.warming[jobID] = append(p.warming[jobID], w)
		p.wg.Add(1)
		go p.warm(w)
	}
}

// warm waits for a prestarted worker's handshake and makes it idle, unless
// a Pop claimed it meanwhile (Pop then waits for it itself).
func (p *Pool) warm(w *Worker) {
	defer p.wg.Done()
	t := time.NewTimer(p.cfg.StartTimeout)
	defer t.Stop()
	select {
	case <-w.registered:
	case <-w.exited:
		return
	case <-p.stop:
		return
	case <-t.C:
		p.mu.Lock()
		if p.removeWarmingLocked(w) {
			p.log.Warn("prestarted worker did not handshake in time", zap.String("worker", w.ID), zap.Duration("timeout", p.cfg.StartTimeout))
			p.killLocked(w)
		}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removeWarmingLocked(w) && !p.closed {
		w.idleSince = time.Now()
		p.idle[w.key] = append(p.idle[w.key], w)
	}
}

// Warm is the number of the job's warm workers (idle or warming).
func (p *Pool) Warm(jobID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[jobID]) + len(p.warming[jobID])
}

// Push gives a worker back for reuse.
func (p *Pool) Push(w *Worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.killLocked(w)
		return
	}
	select {
	case <-w.exited:
		return
	default:
	}
	w.idleSince = time.Now()
	p.idle[w.key] = append(p.idle[w.key], w)
}

// Kill kills a worker process (its reaper reports the exit).
func (p *Pool) Kill(w *Worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killLocked(w)
}

func (p *Pool) killLocked(w *Worker) {
	p.removeIdleLocked(w)
	p.removeWarmingLocked(w)
	_ = syscall.Kill(w.PID, syscall.SIGKILL)
}

// removeWarmingLocked unlists a warming worker; false if it was not.
func (p *Pool) removeWarmingLocked(w *Worker) bool {
	q := p.warming[w.key]
	for i, x := range q {
		if x == w {
			p.warming[w.key] = append(q[:i:i], q[i+1:]...)
			if len(p.warming[w.key]) == 0 {
				delete(p.warming, w.key)
			}
			return true
		}
	}
	return false
}

func (p *Pool) removeIdleLocked(w *Worker) {
	q := p.idle[w.key]
	for i, x := range q {
		if x == w {
			p.idle[w.key] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(p.idle[w.key]) == 0 {
		delete(p.idle, w.key)
	}
}

// Detach marks a worker as a detached actor's: KillJob spares it.
func (p *Pool) Detach(w *Worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.detached = true
}

// KillJob kills every worker of a job but its detached actors', warm
// ones included; the job is never prestarted for again.
func (p *Pool) KillJob(jobID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended[jobID] = true
	n := 0
	for _, w := range p.all {
		if w.JobID == jobID && !w.detached {
			p.killLocked(w)
			n++
		}
	}
	return n
}

// Get returns a live worker by ID.
func (p *Pool) Get(id string) (*Worker, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.all[id]
	return w, ok
}

// Workers returns the live workers (started, registered or not).
func (p *Pool) Workers() []*Worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Worker, 0, len(p.all))
	for _, w := range p.all {
		out = append(out, w)
	}
	return out
}

// Len is the number of live worker processes.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

func (p *Pool) retireLoop() {
	defer p.wg.Done()
	t := time.NewTicker(max(p.cfg.IdleTimeout/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		var due []*Worker
		for _, q := range p.idle {
			for _, w := range q {
				if time.Since(w.idleSince) > p.cfg.IdleTimeout {
					due = append(due, w)
				}
			}
		}
		p.mu.Unlock()
		for _, w := range due {
			keep := p.cfg.KeepIdle != nil && p.cfg.KeepIdle(w)
			p.mu.Lock()
			if p.isIdleLocked(w) && time.Since(w.idleSince) > p.cfg.IdleTimeout {
				if keep {
					w.idleSince = time.Now()
				} else {
					p.log.Debug("retiring idle worker", zap.String("worker", w.ID))
					p.killLocked(w)
				}
			}
			p.mu.Unlock()
		}
	}
}

// isIdleLocked says whether w is still listed idle (not leased since).
func (p *Pool) isIdleLocked(w *Worker) bool {
	for _, x := range p.idle[w.key] {
		if x == w {
			return true
		}
	}
	return false
}

// Close kills every worker and waits until all are reaped. Idempotent.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.stop)
	}
	for _, w := range p.all {
		p.killLocked(w)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
