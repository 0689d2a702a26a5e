package raylet

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/workerpool"
)

// ownerLoop pings the owners holding leases or objects here, and the
// drivers holding pins or unsealed objects; one that misses two pings in a
// row is gone (a driver that crashed or disconnected): its leased workers
// are killed and their resources reclaimed, its objects freed, its pins
// and unsealed objects dropped. (Its queued requests are dropped as soon
// as its calls are cancelled.)
func (r *Raylet) ownerLoop() {
	conns := map[string]*grpc.ClientConn{}
	misses := map[string]int{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	t := time.NewTicker(r.cfg.OwnerCheck)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		owners := map[string]bool{}
		for _, l := range r.leases {
			if l.owner != "" {
				owners[l.owner] = true
			}
		}
		r.mu.Unlock()
		for _, a := range r.objectParties() {
			owners[a] = true
		}
		for addr, c := range conns {
			if !owners[addr] {
				c.Close()
				delete(conns, addr)
				delete(misses, addr)
			}
		}
		for addr := range owners {
			c := conns[addr]
			if c == nil {
				var err error
				c, err = grpc.NewClient(addr, r.cfg.TLS.DialOption(),
					grpc.WithPerRPCCredentials(auth.Token(func() string { return r.cfg.Token })))
				// Pings only: the default windows do.
				if err != nil {
					continue
				}
				conns[addr] = c
			}
			ctx, cancel := context.WithTimeout(r.ctx, r.cfg.OwnerCheck)
			_, err := pb.NewCoreWorkerClient(c).Ping(ctx, &pb.PingRequest{})
			cancel()
			if err == nil {
				misses[addr] = 0
				continue
			}
			if misses[addr]++; misses[addr] >= 2 {
				r.ownerGone(addr)
				r.objectOwnerGone(addr)
			}
		}
	}
}

// ownerDiedTimeout bounds the report of a dead owner to the control plane
// (the leader checks the owner itself before ruling).
const ownerDiedTimeout = 5 * time.Second

func (r *Raylet) ownerGone(addr string) {
	r.mu.Lock()
	var gone []*lease
	for _, l := range r.leases {
		if l.owner == addr {
			gone = append(gone, l)
			r.dropLeaseLocked(l)
		}
	}
	for _, l := range gone {
		if l.actorID != "" && !r.closed {
			// Reported before the kill, so the actor is DEAD rather than
			// restarted when its worker's exit is seen.
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.reportActorFailure(l.actorID, l.worker, true)
				r.pool.Kill(l.worker)
			}()
		}
	}
	r.mu.Unlock()
	for _, l := range gone {
		if l.actorID == "" {
			r.pool.Kill(l.worker)
		}
	}
	if len(gone) > 0 {
		r.log.Info("owner unreachable: reclaimed its leased workers", zap.String("owner", addr), zap.Int("workers", len(gone)))
		r.wake()
	}
}

// keepIdleWorker says whether an idle worker must not be retired yet: it
// owns objects that other processes borrow (the objects would die with
// it, as Ray's workers refuse to exit while they own objects in scope).
// A worker that does not answer is not kept.
func (r *Raylet) keepIdleWorker(w *workerpool.Worker) bool {
	if w.Address == "" {
		return false
	}
	cc, err := grpc.NewClient(w.Address, r.cfg.TLS.DialOption(),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return r.cfg.Token })))
	if err != nil {
		return false
	}
	defer cc.Close()
	// Not r.ctx: the pool is made before it. Close stops the pool first.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rep, err := pb.NewCoreWorkerClient(cc).Ping(ctx, &pb.PingRequest{})
	if err != nil || rep.BorrowedObjects == 0 {
		return false
	}
	r.log.Debug("keeping an idle worker: others borrow its objects", zap.String("worker", w.ID), zap.Int32("objects", rep.BorrowedObjects))
	return true
}
