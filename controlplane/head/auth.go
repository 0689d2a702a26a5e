package head

import (
	"context"

	"google.golang.org/grpc"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// The one call that needs no token: peers handshake before the cluster
// (and so its token) exists. It reveals IDs and addresses, nothing more.
var handshakeMethod = pb.ControlPlane_Handshake_FullMethodName

func (h *Head) authorize(ctx context.Context, method string) error {
	if method == handshakeMethod {
		return nil
	}
	tok := h.Token()
	if tok == "" {
		return ErrNotBootstrapped
	}
	if !auth.Equal(auth.FromIncoming(ctx), tok) {
		return ErrBadToken
	}
	return nil
}

// unaryAuth checks the token and maps every handler error to a status with
// its sentinel's reason, so clients get errors.Is back.
func (h *Head) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := h.authorize(ctx, info.FullMethod); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	resp, err := handler(ctx, req)
	return resp, rpcerr.ToStatus(err)
}

func (h *Head) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := h.authorize(ss.Context(), info.FullMethod); err != nil {
		return rpcerr.ToStatus(err)
	}
	return rpcerr.ToStatus(handler(srv, ss))
}
