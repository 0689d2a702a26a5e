// Package logstream shows a job's worker output in its driver, as Ray's
// log_to_driver does: it subscribes to the raylet of every alive node
// (following nodes that join or die through the control plane's node
// watch) for the job's lines and writes each one with Ray's prefix,
// "(fn pid=123, node=node-2) line", or the actor's class for an actor's
// worker.
package logstream

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/tlsconfig"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// Config configures a Streamer.
type Config struct {
	// CP lists and watches the cluster's nodes; the caller closes it after
	// the Streamer.
	CP *cpclient.Client
	// Token is the cluster token the raylets take.
	Token string
	// JobID is the job whose workers' output is shown.
	JobID string
	// Out receives the prefixed lines; default os.Stderr.
	Out    io.Writer
	Logger *zap.Logger
}

// Streamer copies a job's worker output to Out until Close.
type Streamer struct {
	cfg    Config
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	subs map[string]*subscription // by node ID

	outMu sync.Mutex // one line at a time on Out
}

type subscription struct {
	addr   string
	cancel context.CancelFunc
}

// Start begins streaming in the background.
func Start(cfg Config) *Streamer {
	if cfg.Out == nil {
		cfg.Out = os.Stderr
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	s := &Streamer{cfg: cfg, log: cfg.Logger.Named("logstream"), subs: map[string]*subscription{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.watchNodes()
	return s
}

// Close stops every subscription and waits for them. Idempotent.
func (s *Streamer) Close() {
	s.cancel()
	s.wg.Wait()
}

// watchNodes keeps one subscription per alive node. The watch starts with
// the whole node table (index 0) and then delivers every change.
func (s *Streamer) watchNodes() {
	defer s.wg.Done()
	err := s.cfg.CP.Watch(s.ctx, &cpb.WatchRequest{Kinds: []cpb.EventKind{cpb.EventKind_EVENT_NODE}}, func(r *cpb.WatchResponse) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if r.Reset_ {
			alive := map[string]bool{}
			for _, ev := range r.Events {
				if n := ev.Node; n != nil && n.State == cpb.NodeState_NODE_ALIVE {
					alive[n.NodeId] = true
				}
			}
			for id, sub := range s.subs {
				if !alive[id] {
					sub.cancel()
					delete(s.subs, id)
				}
			}
		}
		for _, ev := range r.Events {
			if n := ev.Node; n != nil {
				s.nodeChangedLocked(n)
			}
		}
		return nil
	})
	if err != nil && s.ctx.Err() == nil {
		s.log.Warn("node watch ended; worker output is no longer shown", zap.Error(err))
	}
}

func (s *Streamer) nodeChangedLocked(n *cpb.NodeInfo) {
	sub := s.subs[n.NodeId]
	if n.State != cpb.NodeState_NODE_ALIVE || n.Address == "" {
		if sub != nil {
			sub.cancel()
			delete(s.subs, n.NodeId)
		}
		return
	}
	if sub != nil && sub.addr == n.Address {
		return
	}
	if sub != nil {
		sub.cancel()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.subs[n.NodeId] = &subscription{addr: n.Address, cancel: cancel}
	s.wg.Add(1)
	go s.follow(ctx, n.NodeId, n.Address)
}

// follow streams one node's lines of the job until ctx ends, reconnecting
// after errors. The first stream sends everything the node kept of the
// job; a reconnect after lines arrived asks only for new ones (what was
// printed while disconnected is shown by `manta logs`, not here).
func (s *Streamer) follow(ctx context.Context, nodeID, addr string) {
	defer s.wg.Done()
	tail := int32(-1)
	backoff := 50 * time.Millisecond
	for {
		err := raylet.StreamLogs(ctx, addr, s.cfg.Token, &pb.StreamLogsRequest{JobId: s.cfg.JobID, Tail: tail, Follow: true},
			func(b *pb.LogBatch) error {
				tail, backoff = 0, 50*time.Millisecond
				s.write(b)
				return nil
			}, s.cfg.CP.TLS().DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead))
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Debug("log stream", zap.String("node", nodeID), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff)))):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (s *Streamer) write(b *pb.LogBatch) {
	var buf []byte
	for _, l := range b.Lines {
		buf = append(buf[:0], raylet.FormatLogLine(b.NodeId, l)...)
		s.outMu.Lock()
		_, _ = s.cfg.Out.Write(buf)
		s.outMu.Unlock()
	}
}
