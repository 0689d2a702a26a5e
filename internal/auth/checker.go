package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/rpcerr"
)

// CheckTTL is how long a data-plane server trusts the control plane's word
// on a scoped token: a revoked token stops working there within it.
const CheckTTL = time.Second

// Checker admits the calls a data-plane server serves (a raylet, a worker,
// a driver): the tokens it holds itself (the cluster token, or the
// driver's own) at once, and any other token the control plane vouches for
// with at least the submit scope (running tasks is running code). A driver
// may thus hold only a submit token: workers call it back with the
// cluster token, which the control plane vouches for as admin.
type Checker struct {
	// Local are the tokens accepted without asking; when none is set
	// (a cluster without a token), every call is.
	Local []string
	// Verify asks the control plane what a token may do.
	Verify func(ctx context.Context, token string) (Scope, error)

	mu    sync.Mutex
	cache map[string]checked // by the token's hash
}

type checked struct {
	err   error
	until time.Time
}

// Allow says whether a call with this token may be served.
func (c *Checker) Allow(ctx context.Context, token string) error {
	open := true
	for _, t := range c.Local {
		if t == "" {
			continue
		}
		open = false
		if Equal(token, t) {
			return nil
		}
	}
	if open {
		return nil
	}
	if token == "" {
		return status.Error(codes.Unauthenticated, "missing token")
	}
	if c.Verify == nil {
		return status.Error(codes.Unauthenticated, "missing or wrong cluster token")
	}
	key := Hash(token)
	now := time.Now()
	c.mu.Lock()
	if e, ok := c.cache[key]; ok && now.Before(e.until) {
		c.mu.Unlock()
		return e.err
	}
	c.mu.Unlock()
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	scope, err := c.Verify(vctx, token)
	switch {
	case err != nil && (status.Code(rpcerr.ToStatus(err)) == codes.Unavailable || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil):
		// Not an answer about the token: not remembered.
		return status.Errorf(codes.Unavailable, "cannot check the token with the control plane now: %v; retry", err)
	case err != nil:
		err = status.Errorf(codes.Unauthenticated, "token refused by the control plane: %v", err)
	case !scope.Allows(ScopeSubmit):
		err = status.Errorf(codes.PermissionDenied, "a %s token cannot run tasks here; it needs submit", scope)
	}
	c.mu.Lock()
	if c.cache == nil || len(c.cache) > 4096 {
		c.cache = map[string]checked{}
	}
	c.cache[key] = checked{err: err, until: now.Add(CheckTTL)}
	c.mu.Unlock()
	return err
}

// UnaryServer is Allow as an interceptor; handler errors become statuses
// that keep their sentinels (as UnaryServer's).
func (c *Checker) UnaryServer() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := c.Allow(ctx, FromIncoming(ctx)); err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		return resp, rpcerr.ToStatus(err)
	}
}

// StreamServer is Allow as a stream interceptor, checked when the stream
// opens.
func (c *Checker) StreamServer() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := c.Allow(ss.Context(), FromIncoming(ss.Context())); err != nil {
			return err
		}
		return rpcerr.ToStatus(handler(srv, ss))
	}
}
