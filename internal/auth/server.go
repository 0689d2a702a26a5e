package auth

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/rpcerr"
)

// UnaryServer returns an interceptor that refuses calls without the token
// and maps handler errors to statuses that keep their sentinels (the
// raylet's and the workers' servers; heads have their own, which also
// knows the handshake).
func UnaryServer(token string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if token != "" && !Equal(FromIncoming(ctx), token) {
			return nil, status.Error(codes.Unauthenticated, "missing or wrong cluster token")
		}
		resp, err := handler(ctx, req)
		return resp, rpcerr.ToStatus(err)
	}
}
