package head

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// forwardedKey marks a call a follower forwarded, so it is forwarded at most
// once: a forwarded call that meets a non-leader fails with NOT_LEADER and
// the client retries.
const forwardedKey = "x-manta-forwarded-by"

// api serves ControlPlane.
type api struct {
	pb.UnimplementedControlPlaneServer
	h *Head
}

// headAPI serves HeadService.
type headAPI struct {
	pb.UnimplementedHeadServiceServer
	h *Head
}

func (h *Head) header() *pb.Header {
	_, id := h.raft.LeaderWithID()
	hd := &pb.Header{Index: h.fsm.AppliedIndex(), LeaderId: string(id), HeadId: h.cfg.ID}
	if hi := h.fsm.Head(string(id)); hi != nil {
		hd.LeaderAddress = hi.GrpcAddress
	}
	return hd
}

// leading reports whether this head may serve leader-only work now: it is
// the leader and has finished establishing its leadership.
func (h *Head) leading() (bool, error) {
	if !h.IsLeader() {
		return false, nil
	}
	if !h.leader.ready.Load() {
		return true, rpcerr.Wrapf(ErrNoLeader, "head %s is establishing its leadership", h.cfg.ID)
	}
	return true, nil
}

// verifyLeader confirms with a quorum that this head still leads, which makes
// a read served from the local store after it linearizable.
func (h *Head) verifyLeader() error { return h.leaderCheck.verify() }

func (h *Head) leaderConn(ctx context.Context) (*grpc.ClientConn, context.Context, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		_, id := h.raft.LeaderWithID()
		return nil, nil, rpcerr.Wrapf(ErrNotLeader, "forwarded call reached head %s; the leader is %q", h.cfg.ID, id)
	}
	_, addr, err := h.peers.leader()
	if err != nil {
		return nil, nil, err
	}
	c, err := h.peers.conn(addr)
	if err != nil {
		return nil, nil, rpcerr.Wrapf(ErrNoLeader, "dial leader %s: %v", addr, err)
	}
	return c, metadata.AppendToOutgoingContext(ctx, forwardedKey, h.cfg.ID), nil
}

// onLeader runs local on the leader, or forwards the same call to it.
func onLeader[Req, Resp any](h *Head, ctx context.Context, req Req,
	fwd func(pb.ControlPlaneClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	local func() (Resp, error)) (Resp, error) {
	return onLeaderVia(h, ctx, req, pb.NewControlPlaneClient, fwd, local)
}

// onLeaderVia is onLeader for any service: newClient makes the service's
// client on the leader's connection.
func onLeaderVia[C, Req, Resp any](h *Head, ctx context.Context, req Req, newClient func(grpc.ClientConnInterface) C,
	fwd func(C, context.Context, Req, ...grpc.CallOption) (Resp, error),
	local func() (Resp, error)) (Resp, error) {
	isLeader, err := h.leading()
	if isLeader {
		if err != nil {
			var zero Resp
			return zero, err
		}
		return local()
	}
	c, fctx, err := h.leaderConn(ctx)
	if err != nil {
		var zero Resp
		return zero, err
	}
	fctx, cancel := context.WithTimeout(fctx, h.cfg.ForwardTimeout)
	defer cancel()
	resp, err := fwd(newClient(c), fctx, req)
	return resp, h.forwardErr(ctx, err)
}

// forwardErr turns the time-out of a forwarded call into a retryable
// error: the leader it went to is paused or cut off, and the write may or
// may not have been applied (a retry with its request ID is safe).
func (h *Head) forwardErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && status.Code(err) == codes.DeadlineExceeded {
		return rpcerr.Wrapf(ErrOutcomeUnknown, "the leader did not answer a forwarded call within %s", h.cfg.ForwardTimeout)
	}
	return err
}
