package head

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// applier is the leader's group commit: writes queue up while earlier Raft
// entries are in flight, and each entry carries every write that waited
// (up to MaxBatch). One Raft round then serves many clients.
//
// Up to MaxInflight entries may be in flight (Raft pipelines their
// replication), but a second entry goes out early only once it carries
// PipelineMinBatch writes: small entries proposed back to back would cost
// more Raft rounds per write than they save in waiting, so with less queued
// the applier waits for the entry in flight and proposes what gathered.
type applier struct {
	h        *Head
	in       chan *pendingWrite
	inflight chan struct{}
	// busy counts entries in flight; finished wakes a run loop waiting
	// for it to drop.
	busy     atomic.Int32
	finished chan struct{}
}

type pendingWrite struct {
	cmd  *pb.Command
	done chan writeResult
}

type writeResult struct {
	res *pb.CommandResult
	err error
}

func newApplier(h *Head) *applier {
	a := &applier{
		h:        h,
		in:       make(chan *pendingWrite, h.cfg.MaxBatch*h.cfg.MaxInflight),
		inflight: make(chan struct{}, h.cfg.MaxInflight),
		finished: make(chan struct{}, 1),
	}
	h.goRun("applier", a.run)
	return a
}

// Apply proposes one command on the leader and waits for its result. A
// failed command comes back as an error matching its sentinel.
func (a *applier) Apply(ctx context.Context, t fsm.CommandType, requestID string, body proto.Message) (*pb.CommandResult, error) {
	if a.h.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	cmd, err := fsm.NewCommand(t, requestID, body)
	if err != nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, a.h.cfg.ApplyTimeout)
	defer cancel()
	p := &pendingWrite{cmd: cmd, done: make(chan writeResult, 1)}
	select {
	case a.in <- p:
	case <-ctx.Done():
		return nil, rpcerr.Wrapf(ErrNotLeader, "write queue full: %v", ctx.Err())
	case <-a.h.ctx.Done():
		return nil, ErrShuttingDown
	}
	select {
	case r := <-p.done:
		if r.err != nil {
			return nil, r.err
		}
		if err := fsm.ResultError(r.res); err != nil {
			return r.res, err
		}
		return r.res, nil
	case <-ctx.Done():
		// Proposed, but we cannot say whether it committed: the client
		// retries with the same request ID and the FSM answers once.
		return nil, rpcerr.Wrapf(ErrOutcomeUnknown, "%v", ctx.Err())
	case <-a.h.ctx.Done():
		return nil, ErrShuttingDown
	}
}

// ApplyEach proposes several commands at once (they share the Raft
// entries the group commit puts them in) and returns each one's result
// or error, in order, like Apply would.
func (a *applier) ApplyEach(ctx context.Context, t fsm.CommandType, requestIDs []string, bodies []proto.Message) ([]*pb.CommandResult, []error) {
	res := make([]*pb.CommandResult, len(bodies))
	errs := make([]error, len(bodies))
	if a.h.raft.State() != raft.Leader {
		for i := range errs {
			errs[i] = ErrNotLeader
		}
		return res, errs
	}
	ctx, cancel := context.WithTimeout(ctx, a.h.cfg.ApplyTimeout)
	defer cancel()
	ps := make([]*pendingWrite, len(bodies))
	for i, body := range bodies {
		cmd, err := fsm.NewCommand(t, requestIDs[i], body)
		if err != nil {
			errs[i] = rpcerr.Wrapf(ErrBadRequest, "%v", err)
			continue
		}
		p := &pendingWrite{cmd: cmd, done: make(chan writeResult, 1)}
		select {
		case a.in <- p:
			ps[i] = p
		case <-ctx.Done():
			errs[i] = rpcerr.Wrapf(ErrNotLeader, "write queue full: %v", ctx.Err())
		case <-a.h.ctx.Done():
			errs[i] = ErrShuttingDown
		}
	}
	for i, p := range ps {
		if p == nil {
			continue
		}
		select {
		case r := <-p.done:
			switch {
			case r.err != nil:
				errs[i] = r.err
			default:
				res[i], errs[i] = r.res, fsm.ResultError(r.res)
			}
		case <-ctx.Done():
			errs[i] = rpcerr.Wrapf(ErrOutcomeUnknown, "%v", ctx.Err())
		case <-a.h.ctx.Done():
			errs[i] = ErrShuttingDown
		}
	}
	return res, errs
}

func (a *applier) run() {
	for {
		select {
		case a.inflight <- struct{}{}:
		case <-a.h.ctx.Done():
			return
		}
		var batch []*pendingWrite
		select {
		case p := <-a.in:
			batch = append(batch, p)
		case <-a.h.ctx.Done():
			return
		}
		batch = a.drain(batch)
		// Another entry is in flight: go now only with a batch worth a
		// Raft round of its own, else gather until that entry is done.
		for len(batch) < a.h.cfg.PipelineMinBatch && a.busy.Load() > 0 {
			select {
			case p := <-a.in:
				batch = a.drain(append(batch, p))
			case <-a.finished:
			case <-a.h.ctx.Done():
				fail(batch, ErrShuttingDown)
				return
			}
		}
		a.propose(batch)
	}
}

// drain adds the writes already queued, up to MaxBatch.
func (a *applier) drain(batch []*pendingWrite) []*pendingWrite {
	for len(batch) < a.h.cfg.MaxBatch {
		select {
		case p := <-a.in:
			batch = append(batch, p)
		default:
			return batch
		}
	}
	return batch
}

func (a *applier) propose(batch []*pendingWrite) {
	a.busy.Add(1)
	release := func() {
		a.busy.Add(-1)
		<-a.inflight
		select {
		case a.finished <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
	if a.h.raft.State() != raft.Leader {
		fail(batch, ErrNotLeader)
		release()
		return
	}
	if k := a.h.cfg.Knobs.BeforeApply; k != nil {
		k(len(batch))
	}
	now := time.Now().UnixNano() // the leader stamps time; Apply never reads a clock
	cmds := make([]*pb.Command, len(batch))
	for i, p := range batch {
		p.cmd.TimeUnixNano = now
		cmds[i] = p.cmd
	}
	data, err := fsm.EncodeBatch(cmds)
	if err != nil {
		fail(batch, err)
		release()
		return
	}
	start := time.Now()
	f := a.h.raft.Apply(data, a.h.cfg.ApplyTimeout)
	a.h.goRun("apply-wait", func() {
		defer release()
		// Raft can leave a future unanswered once it has shut down (a
		// clean-clone CI run hung 15 min in Close on one): a closing head
		// stops waiting, and the write's outcome is unknown to its caller.
		errc := make(chan error, 1)
		go func() { errc <- f.Error() }()
		var err error
		select {
		case err = <-errc:
		case <-a.h.ctx.Done():
			fail(batch, rpcerr.Wrapf(ErrOutcomeUnknown, "the head is shutting down"))
			return
		}
		a.h.metrics.observeApply(start, len(batch))
		if err != nil {
			fail(batch, raftErr(err))
			return
		}
		switch r := f.Response().(type) {
		case []*pb.CommandResult:
			for i, p := range batch {
				p.done <- writeResult{res: r[i]}
			}
		case error:
			fail(batch, r)
		default:
			fail(batch, fmt.Errorf("unexpected apply response %T", r))
		}
	})
}

func fail(batch []*pendingWrite, err error) {
	for _, p := range batch {
		p.done <- writeResult{err: err}
	}
}

// raftErr maps Raft's errors to sentinels clients can retry on.
func raftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return rpcerr.Wrapf(ErrOutcomeUnknown, "%v", err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShuttingDown
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return rpcerr.Wrapf(ErrNotLeader, "raft busy: %v", err)
	}
	return err
}
