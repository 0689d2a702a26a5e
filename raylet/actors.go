package raylet

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
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

// strayActorLoop ends actor workers the actor table no longer names. A
// placement whose leader lost leadership after the lease was granted (but
// before it heard back) leaves a worker nobody will use or kill: it would
// hold its resources for as long as the actor's owner lives. Every
// ActorCheck the raylet asks the control plane about each actor lease
// older than ActorCheck and kills the worker when the actor is unknown,
// DEAD, or ALIVE on another worker. A PENDING or RESTARTING actor keeps
// its worker: it may be the placement under way. The question is first one
// stale read of all of them, which any head answers from its own table, and
// only an answer that would kill is asked again of the leader
// (linearizable): with 10,000 actors, a linearizable read each every 5s
// took the leader 45 % of a core (sim's bench actors), a stale read each
// 31 %, and a stale answer can only lag, never invent a newer incarnation.
func (r *Raylet) strayActorLoop() {
	t := time.NewTicker(r.cfg.ActorCheck)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		var held []cpclient.HeldActor
		r.mu.Lock()
		for _, l := range r.leases {
			if l.actorID != "" && time.Since(l.granted) >= r.cfg.ActorCheck {
				held = append(held, cpclient.HeldActor{Actor: l.actorID, Worker: l.worker.ID})
			}
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		strays := r.cp.Strays(ctx, held)
		cancel()
		for _, st := range strays {
			r.log.Warn("killing a stray actor worker", zap.String("actor", st.Actor), zap.String("worker", st.Worker), zap.String("why", st.Why))
			_, _ = r.KillActorWorker(r.ctx, &pb.KillActorWorkerRequest{ActorId: st.Actor, WorkerId: st.Worker})
		}
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
