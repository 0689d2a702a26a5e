package head

import (
	"context"
	"encoding/hex"
	"strings"
	"time"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// maxTokenTTL bounds --ttl (ten years: long-lived, not forever by accident).
const maxTokenTTL = 10 * 365 * 24 * time.Hour

func (a *api) CreateToken(ctx context.Context, req *pb.CreateTokenRequest) (*pb.CreateTokenResponse, error) {
	h := a.h
	if _, err := auth.ParseScope(req.Scope); err != nil {
		return nil, rpcerr.Wrapf(ErrBadRequest, "%v", err)
	}
	if req.TtlSeconds < 0 || time.Duration(req.TtlSeconds)*time.Second > maxTokenTTL {
		return nil, rpcerr.Wrapf(ErrBadRequest, "ttl_seconds %d: want 0 (no expiry) up to %d", req.TtlSeconds, int64(maxTokenTTL/time.Second))
	}
	if len(req.Description) > maxKeyLen {
		return nil, rpcerr.Wrapf(ErrBadRequest, "description is %d bytes; at most %d", len(req.Description), maxKeyLen)
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if req.Token == "" {
		_, req.Token = auth.NewScopedToken()
	}
	id, ok := scopedTokenID(req.Token)
	if !ok {
		return nil, rpcerr.Wrapf(ErrBadRequest, "token is not a fresh scoped token (%sID_SECRET)", auth.ScopedTokenPrefix)
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.CreateToken, func() (*pb.CreateTokenResponse, error) {
		info := &pb.TokenInfo{Id: id, Hash: auth.Hash(req.Token), Scope: req.Scope, Description: req.Description}
		if req.TtlSeconds > 0 {
			info.ExpiresUnixNano = time.Now().Add(time.Duration(req.TtlSeconds) * time.Second).UnixNano()
		}
		r, err := h.applier.Apply(ctx, fsm.CmdCreateToken, req.RequestId, info)
		if err != nil {
			return nil, err
		}
		info.Hash = ""
		return &pb.CreateTokenResponse{Header: h.headerAt(r.Index), Info: info, Token: req.Token}, nil
	})
}

// scopedTokenID checks a token's shape (prefix, 12 hex ID, 64 hex secret:
// the 256 random bits NewScopedToken draws) and returns its ID.
func scopedTokenID(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, auth.ScopedTokenPrefix)
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 12 || len(secret) != 64 {
		return "", false
	}
	if _, err := hex.DecodeString(id + secret); err != nil {
		return "", false
	}
	return id, true
}

func (a *api) ListTokens(ctx context.Context, req *pb.ListTokensRequest) (*pb.ListTokensResponse, error) {
	h := a.h
	return &pb.ListTokensResponse{Header: h.headerAt(h.fsm.AppliedIndex()), Tokens: h.fsm.Tokens()}, nil
}

func (a *api) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	h := a.h
	if err := checkID("id", req.Id); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeader(h, ctx, req, pb.ControlPlaneClient.RevokeToken, func() (*pb.RevokeTokenResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdRevokeToken, req.RequestId, &pb.RevokeTokenCommand{Id: req.Id})
		if err != nil {
			return nil, err
		}
		return &pb.RevokeTokenResponse{Header: h.headerAt(r.Index), Revoked: r.Flag}, nil
	})
}

// CheckToken answers for servers without the token table (raylets,
// workers, drivers): what the token may do, as this head's replica says.
func (a *api) CheckToken(ctx context.Context, req *pb.CheckTokenRequest) (*pb.CheckTokenResponse, error) {
	h := a.h
	scope, err := h.ScopeOf(req.Token)
	if err != nil {
		return nil, err
	}
	return &pb.CheckTokenResponse{Header: h.headerAt(h.fsm.AppliedIndex()), Scope: scope.String()}, nil
}
