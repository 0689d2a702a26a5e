package head

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
)

// authorize checks the call's token against what its method needs
// (methodScopes). The cluster token is admin; a scoped token is looked up
// by its hash in this head's copy of the replicated table, so a revocation
// takes effect here as soon as this head applies it.
func (h *Head) authorize(ctx context.Context, method string) error {
	need, ok := methodScopes[method]
	if !ok {
		return rpcerr.Wrapf(ErrPermissionDenied, "%s declares no scope", method)
	}
	if need == auth.ScopeNone {
		return nil
	}
	if h.Token() == "" {
		return ErrNotBootstrapped
	}
	scope, err := h.ScopeOf(auth.FromIncoming(ctx))
	if err == nil && !scope.Allows(need) {
		h.metrics.authFailures.WithLabelValues("scope").Inc()
		return rpcerr.Wrapf(ErrPermissionDenied, "%s needs a %s token; this one is %s", method, need, scope)
	}
	if errors.Is(err, ErrTokenNotYetKnown) {
		return err
	}
	if err != nil {
		return h.authFailed(ctx, method, err)
	}
	return nil
}

// ScopeOf returns what token may do: admin for the cluster token, the
// stored scope of a live scoped token, else ErrBadToken.
func (h *Head) ScopeOf(token string) (auth.Scope, error) {
	if token == "" {
		return 0, rpcerr.Wrapf(ErrBadToken, "no token")
	}
	if auth.Equal(token, h.Token()) {
		return auth.ScopeAdmin, nil
	}
	if !strings.HasPrefix(token, auth.ScopedTokenPrefix) {
		return 0, ErrBadToken
	}
	t := h.fsm.TokenByHash(auth.Hash(token))
	if t == nil && !h.IsLeader() {
		// Made a moment ago and not applied here yet, or never made: the
		// leader knows which; the client retries on another head.
		return 0, ErrTokenNotYetKnown
	}
	if t == nil {
		return 0, rpcerr.Wrapf(ErrBadToken, "unknown token")
	}
	if t.Revoked {
		return 0, rpcerr.Wrapf(ErrBadToken, "token %s was revoked", t.Id)
	}
	if t.ExpiresUnixNano != 0 && time.Now().UnixNano() >= t.ExpiresUnixNano {
		return 0, rpcerr.Wrapf(ErrBadToken, "token %s expired", t.Id)
	}
	return auth.ParseScope(t.Scope)
}

// authFailed counts a refused token, logs it once per source and window,
// and turns it into a rate-limit error once the source has failed too often.
func (h *Head) authFailed(ctx context.Context, method string, err error) error {
	src := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		src = p.Addr.String()
		if host, _, e := net.SplitHostPort(src); e == nil {
			src = host
		}
	}
	logIt, limited := h.authLimit.Failed(src)
	if logIt {
		h.log.Warn("refused a call with a bad token (further failures from this source are not logged for a while)",
			zap.String("peer", src), zap.String("method", method), zap.Error(err))
	}
	if limited {
		h.metrics.authFailures.WithLabelValues("rate_limited").Inc()
		return rpcerr.Wrapf(ErrAuthRateLimited, "too many failed authentications from %s", src)
	}
	h.metrics.authFailures.WithLabelValues("bad_token").Inc()
	return err
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
