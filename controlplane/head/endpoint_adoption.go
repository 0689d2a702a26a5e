package head

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/durable"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
	rpb "github.com/manta-ray/manta/proto/rayletpb"
)

// The leader's owner service for adopted objects (fsm/adoption.go): it
// declares owners dead after checking them itself, says where an adopted
// object's copies are, and hands the rebuild of a lost one to the borrower
// that asks (one at a time, by a lease in the Raft log), which runs the
// recorded task as the owner would have.

// ErrOwnerAlive: the leader reached the owner a caller reported dead.
var ErrOwnerAlive = rpcerr.New(codes.FailedPrecondition, "OWNER_ALIVE", "the owner answers the control plane")

const (
	// ownerPingTimeout and ownerPingTries: how the leader checks an owner
	// reported dead (a process that misses both is gone).
	ownerPingTimeout = 300 * time.Millisecond
	ownerPingTries   = 2
	// rebuildLease is how long a borrower's rebuild holds before another
	// borrower may be given it (a rebuilder that dies voids it at once).
	rebuildLease = 5 * time.Minute
	// resolveRetryAfter is the hint to borrowers waiting on a rebuild.
	resolveRetryAfter = 200 * time.Millisecond
	// locateTimeout bounds the search of the raylets for a copy.
	locateTimeout = 800 * time.Millisecond
	// maxAdoptionObjects bounds one OwnerDied request.
	maxAdoptionObjects = 1 << 20
)

func (a *api) OwnerDied(ctx context.Context, req *pb.OwnerDiedRequest) (*pb.OwnerDiedResponse, error) {
	h := a.h
	if req.OwnerAddress == "" || len(req.OwnerAddress) > maxKeyLen {
		return nil, rpcerr.Wrapf(ErrBadRequest, "owner_address: want a CoreWorker address")
	}
	if len(req.ObjectIds) > maxAdoptionObjects {
		return nil, rpcerr.Wrapf(ErrBadRequest, "%d object_ids; at most %d", len(req.ObjectIds), maxAdoptionObjects)
	}
	objs := make([]ids.ObjectID, len(req.ObjectIds))
	for i, b := range req.ObjectIds {
		o, err := ids.ObjectFromBytes(b)
		if err != nil {
			return nil, rpcerr.Wrapf(ErrBadRequest, "object_ids[%d]: %v", i, err)
		}
		objs[i] = o
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.OwnerDied, func() (*pb.OwnerDiedResponse, error) {
		index, err := h.declareOwnerDead(ctx, req.OwnerAddress, req.Reason)
		if err != nil {
			return nil, err
		}
		rep := &pb.OwnerDiedResponse{Header: h.headerAt(index), Driver: h.fsm.IsDriver(req.OwnerAddress)}
		for _, o := range h.fsm.Adopted(objs) {
			rep.Adopted = append(rep.Adopted, append([]byte(nil), o[:]...))
		}
		return rep, nil
	})
}

// declareOwnerDead commits the death of an owner the leader cannot reach
// (ErrOwnerAlive when it can) and returns the index it is applied at.
func (h *Head) declareOwnerDead(ctx context.Context, owner, reason string) (uint64, error) {
	if h.fsm.OwnerDead(owner) {
		return h.fsm.AppliedIndex(), nil
	}
	if h.pingOwner(ctx, owner) {
		return 0, rpcerr.Wrapf(ErrOwnerAlive, "owner %s", owner)
	}
	r, err := h.applier.Apply(ctx, fsm.CmdOwnerDied, "", &pb.OwnerDiedCommand{OwnerAddress: owner, Reason: reason})
	if err != nil {
		return 0, err
	}
	h.log.Info("owner declared dead; its lineage is adopted", zap.String("owner", owner), zap.Uint64("records", r.Count), zap.String("reason", reason))
	return r.Index, nil
}

// pingOwner says whether a CoreWorker answers.
func (h *Head) pingOwner(ctx context.Context, addr string) bool {
	cc, err := h.dialNode(addr)
	if err != nil {
		return false
	}
	defer cc.Close()
	for range ownerPingTries {
		pctx, cancel := context.WithTimeout(ctx, ownerPingTimeout)
		_, err := rpb.NewCoreWorkerClient(cc).Ping(pctx, &rpb.PingRequest{})
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
	}
	return false
}

// dialNode makes a client of a raylet or worker with the cluster token.
func (h *Head) dialNode(addr string) (*grpc.ClientConn, error) {
	token := h.Token()
	return grpc.NewClient(addr, h.cfg.TLS.DialOption(tlsconfig.RoleNode, tlsconfig.RoleHead),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
}

func (a *api) ResolveObject(ctx context.Context, req *pb.ResolveObjectRequest) (*pb.ResolveObjectResponse, error) {
	h := a.h
	o, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "object_id: %v", err)
	}
	if req.OwnerAddress == "" || req.Requester == "" {
		return nil, rpcerr.Wrapf(ErrBadRequest, "owner_address and requester are required")
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.ResolveObject, func() (*pb.ResolveObjectResponse, error) {
		return h.resolveObject(ctx, o, req)
	})
}

func (h *Head) resolveObject(ctx context.Context, o ids.ObjectID, req *pb.ResolveObjectRequest) (*pb.ResolveObjectResponse, error) {
	index, err := h.declareOwnerDead(ctx, req.OwnerAddress, "a borrower could not reach it")
	if errors.Is(err, ErrOwnerAlive) {
		return &pb.ResolveObjectResponse{Header: h.headerAt(h.fsm.AppliedIndex()), State: pb.ResolveState_RESOLVE_OWNER_ALIVE}, nil
	}
	if err != nil {
		return nil, err
	}
	lost := func(format string, args ...any) (*pb.ResolveObjectResponse, error) {
		return &pb.ResolveObjectResponse{Header: h.headerAt(index), State: pb.ResolveState_RESOLVE_LOST,
			Reason: fmt.Sprintf("object %s: its owner %s died, and ", o, req.OwnerAddress) + fmt.Sprintf(format, args...)}, nil
	}
	if o.IsPut() {
		// A Durable Put's value is in the control store until its job ends.
		if keys, _ := h.fsm.KVList(durable.Namespace, durable.Prefix(o)); len(keys) > 0 {
			if f, _, ok := durable.Parse(keys[0]); ok {
				if v, at, err := h.fsm.KVGet(durable.Namespace, keys[0]); err == nil {
					return &pb.ResolveObjectResponse{Header: h.headerAt(max(at, index)), State: pb.ResolveState_RESOLVE_AVAILABLE,
						HasValue: true, Value: v, Format: f}, nil
				}
			}
		}
		// No lineage: its copies are all there is. Raylets keep a dead
		// owner's Puts only in a retained job (fsm/adoption.go).
		if locs := h.locate(ctx, o, &pb.TaskRecord{}, req.FailedLocations); len(locs) > 0 {
			return &pb.ResolveObjectResponse{Header: h.headerAt(index), State: pb.ResolveState_RESOLVE_AVAILABLE, Locations: locs}, nil
		}
		return lost("it was made by Put, which records no lineage, and no node holds a copy")
	}
	rec, err := h.fsm.LineageTask(o.Task())
	switch {
	case errors.Is(err, fsm.ErrLineageEvicted):
		return lost("its lineage was evicted by the store's bound")
	case err != nil:
		return lost("it was never recorded: its value lived only in the owner's memory (small values are inline and never recorded), or it was released")
	case rec.OwnerAddress != req.OwnerAddress:
		return lost("the record of its task names another owner (%s)", rec.OwnerAddress)
	case rec.AdoptedUnixNano == 0:
		if h.fsm.IsDriver(req.OwnerAddress) {
			return lost("its owner was the job's driver: the job's objects end with it")
		}
		return lost("its job ended")
	case len(h.fsm.Adopted([]ids.ObjectID{o})) == 0:
		return lost("its owner had released it")
	}
	for range 3 {
		if rec.Rebuilder != "" && time.Since(time.Unix(0, rec.RebuildUnixNano)) < rebuildLease {
			if rec.Rebuilder == req.Requester {
				// The caller's own rebuild: it lost track (a retry).
				return &pb.ResolveObjectResponse{Header: h.headerAt(index), State: pb.ResolveState_RESOLVE_REBUILD, Record: rec}, nil
			}
			if h.pingOwner(ctx, rec.Rebuilder) {
				return &pb.ResolveObjectResponse{Header: h.headerAt(index), State: pb.ResolveState_RESOLVE_REBUILDING,
					RetryAfterMs: int32(resolveRetryAfter / time.Millisecond)}, nil
			}
			// The rebuilder died: its lease is void once that commits.
			if _, err := h.declareOwnerDead(ctx, rec.Rebuilder, "it was rebuilding an adopted object"); err != nil && !errors.Is(err, ErrOwnerAlive) {
				return nil, err
			}
		} else if locs := h.locate(ctx, o, rec, req.FailedLocations); len(locs) > 0 {
			return &pb.ResolveObjectResponse{Header: h.headerAt(index), State: pb.ResolveState_RESOLVE_AVAILABLE, Locations: locs}, nil
		} else {
			if rec.MaxRetries >= 0 && rec.Attempts > rec.MaxRetries {
				return lost("it was lost, and its task %s (%s) is out of retries (%d runs)", o.Task(), rec.Function, rec.Attempts)
			}
			t := o.Task()
			r, err := h.applier.Apply(ctx, fsm.CmdAdoptedRebuild, "", &pb.AdoptedRebuildCommand{TaskId: t[:], Attempt: rec.Attempts,
				Rebuilder: req.Requester, LeaseExpiredBefore: time.Now().Add(-rebuildLease).UnixNano()})
			if err != nil {
				return nil, err
			}
			if r.Flag {
				rec, _ = h.fsm.LineageTask(t)
				h.log.Info("adopted object lost: a borrower rebuilds it", zap.Stringer("object", o), zap.String("rebuilder", req.Requester),
					zap.Int32("attempt", rec.GetAttempts()))
				return &pb.ResolveObjectResponse{Header: h.headerAt(r.Index), State: pb.ResolveState_RESOLVE_REBUILD, Record: rec}, nil
			}
		}
		if rec, err = h.fsm.LineageTask(o.Task()); err != nil {
			return lost("its lineage was dropped meanwhile")
		}
	}
	return &pb.ResolveObjectResponse{Header: h.headerAt(index), State: pb.ResolveState_RESOLVE_REBUILDING,
		RetryAfterMs: int32(resolveRetryAfter / time.Millisecond)}, nil
}

// locate finds the raylets holding a copy of o: the node its task last ran
// on first, then every alive node; failed are raylets the caller could not
// read it from.
func (h *Head) locate(ctx context.Context, o ids.ObjectID, rec *pb.TaskRecord, failed []string) []string {
	skip := map[string]bool{}
	for _, f := range failed {
		skip[f] = true
	}
	var first string
	var rest []string
	for _, n := range h.fsm.Nodes() {
		addr := n.ObjectStoreAddress
		if addr == "" {
			addr = n.Address
		}
		if n.State != pb.NodeState_NODE_ALIVE || addr == "" || skip[addr] {
			continue
		}
		if n.NodeId == rec.NodeId {
			first = addr
		} else {
			rest = append(rest, addr)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, locateTimeout)
	defer cancel()
	if first != "" && h.holds(ctx, first, o) {
		return []string{first}
	}
	var mu sync.Mutex
	var out []string
	var wg sync.WaitGroup
	for _, addr := range rest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if h.holds(ctx, addr, o) {
				mu.Lock()
				out = append(out, addr)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// holds asks a raylet whether it has a copy of o.
func (h *Head) holds(ctx context.Context, addr string, o ids.ObjectID) bool {
	cc, err := h.dialNode(addr)
	if err != nil {
		return false
	}
	defer cc.Close()
	rep, err := rpb.NewRayletClient(cc).LocateObjects(ctx, &rpb.LocateObjectsRequest{ObjectIds: [][]byte{o[:]}})
	return err == nil && len(rep.Objects) > 0
}
