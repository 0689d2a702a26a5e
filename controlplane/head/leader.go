package head

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// leaderLoop is the one place leadership changes are handled: on gaining it,
// barrier (so the FSM holds every committed write), establish (cluster
// identity, own head entry), then start the named leader routines; on
// losing it, stop them all and wait before anything starts again.
type leaderLoop struct {
	h *Head
	// ready is true between a finished barrier and the loss of leadership:
	// linearizable reads are served only then.
	ready atomic.Bool

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// A leader routine runs until its context ends.
type leaderRoutine struct {
	name string
	run  func(ctx context.Context)
}

func newLeaderLoop(h *Head) *leaderLoop { return &leaderLoop{h: h} }

func (l *leaderLoop) routines() []leaderRoutine {
	rs := []leaderRoutine{
		{"node-liveness", l.h.liveness.run},
		{"actor-placement", l.h.actors.run},
		{"placement-group-placement", l.h.placement.run},
		{"job-supervision", l.h.jobs.run},
		{"task-events", l.h.runTaskEvents},
		{"serve-controller", l.h.serve.run},
	}
	if l.h.scaler != nil {
		rs = append(rs, leaderRoutine{"autoscaler", l.h.scaler.Run})
	}
	return rs
}

func (l *leaderLoop) run() {
	defer l.stop()
	for {
		select {
		case <-l.h.ctx.Done():
			return
		case isLeader := <-l.h.leaderNotify:
			// Always drain to the latest state: notifications may pile up.
			for more := true; more; {
				select {
				case isLeader = <-l.h.leaderNotify:
				default:
					more = false
				}
			}
			l.stop()
			if isLeader {
				l.start()
			}
		}
	}
}

func (l *leaderLoop) start() {
	h := l.h
	ctx, cancel := context.WithCancel(h.ctx)
	l.mu.Lock()
	l.cancel = cancel
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if !l.establish(ctx) {
			return
		}
		for _, r := range l.routines() {
			r := r
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				h.log.Info("leader routine started", zap.String("routine", r.name))
				r.run(ctx)
			}()
		}
	}()
}

// establish barriers and writes what a leader must find in the store.
// It retries until it succeeds or leadership ends.
func (l *leaderLoop) establish(ctx context.Context) bool {
	h := l.h
	start := time.Now()
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		err := h.raft.Barrier(h.cfg.ApplyTimeout).Error()
		if err == nil {
			err = l.initCluster(ctx)
		}
		if err == nil {
			_, err = h.applier.Apply(ctx, fsm.CmdUpsertHead, "", h.selfInfo())
		}
		if err == nil {
			l.ready.Store(true)
			h.log.Info("leadership established", zap.Duration("took", time.Since(start)),
				zap.Uint64("index", h.fsm.AppliedIndex()))
			return true
		}
		h.log.Warn("establish leadership", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// initCluster gives a fresh cluster its identity and token, once.
func (l *leaderLoop) initCluster(ctx context.Context) error {
	if l.h.fsm.Cluster() != nil {
		return nil
	}
	token := l.h.cfg.Token
	if token == "" {
		token = auth.NewToken()
	}
	_, err := l.h.applier.Apply(ctx, fsm.CmdInitCluster, "", &pb.ClusterInfo{
		ClusterId: auth.RandomHex(8), Token: token,
	})
	if err == nil {
		l.h.log.Info("cluster initialised", zap.String("cluster", l.h.fsm.Cluster().GetClusterId()))
	}
	return err
}

func (l *leaderLoop) stop() {
	l.ready.Store(false)
	l.mu.Lock()
	cancel := l.cancel
	l.cancel = nil
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		l.wg.Wait()
		l.h.log.Info("leader routines stopped")
	}
}
