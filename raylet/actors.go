package raylet

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// An actor's worker is leased by the control plane's actor-placement
// routine (LeaseRequest.actor_id) and held for the actor's life. The
// raylet reports its death and kills it when told to.

// reportActorFailure tells the control plane an actor's worker died, so the
// actor restarts or is marked DEAD. It retries until the report lands or
// the raylet closes: a lost report would leave the actor ALIVE forever.
func (r *Raylet) reportActorFailure(actorID string, w *workerpool.Worker, ownerDied bool) {
	cause := fmt.Sprintf("its worker process (pid %d) on node %s died", w.PID, r.cfg.NodeID)
	if ownerDied {
		cause = "its owner died (it stopped answering pings)"
	}
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		_, err := r.cp.ReportActorFailure(ctx, &cpb.ReportActorFailureRequest{ActorId: actorID, WorkerId: w.ID, Cause: cause, OwnerDied: ownerDied})
		cancel()
		if err == nil || r.ctx.Err() != nil {
			return
		}
		r.log.Warn("report actor failure", zap.String("actor", actorID), zap.Error(err))
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (r *Raylet) KillActorWorker(_ context.Context, req *pb.KillActorWorkerRequest) (*pb.KillActorWorkerReply, error) {
	r.mu.Lock()
	var gone []*lease
	for _, l := range r.leases {
		if l.actorID == req.ActorId && (req.WorkerId == "" || l.worker.ID == req.WorkerId) {
			gone = append(gone, l)
		}
	}
	r.mu.Unlock()
	// Its exit is reported like any other: the control plane ignores the
	// death of a worker that is not the actor's current one, and restarts
	// (or buries) the actor if the kill was a mistake.
	for _, l := range gone {
		r.pool.Kill(l.worker)
	}
	if len(gone) > 0 {
		r.log.Info("killed actor worker", zap.String("actor", req.ActorId), zap.Int("workers", len(gone)))
	}
	return &pb.KillActorWorkerReply{}, nil
}
