package fsm

import (
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Scoped tokens: the leader draws the token and stamps its hash, times and
// ID into CmdCreateToken; Apply only stores what it is given.

func applyCreateToken(f *FSM, c *applyCtx, body []byte) *pb.CommandResult {
	var t pb.TokenInfo
	if err := decode(body, &t); err != nil {
		return errResult(err)
	}
	if t.Id == "" || len(t.Hash) != 64 {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "token without id or hash"))
	}
	if _, err := auth.ParseScope(t.Scope); err != nil {
		return errResult(rpcerr.Wrapf(ErrBadCommand, "%v", err))
	}
	if old := f.tokens[t.Id]; old != nil && !old.Revoked {
		if old.Hash == t.Hash {
			return okResult() // a retry
		}
		return errResult(rpcerr.Wrapf(ErrTokenExists, "token %s", t.Id))
	}
	t.CreatedUnixNano = c.timeNanos
	f.tokens[t.Id] = &t
	f.tokenByHash[t.Hash] = t.Id
	return okResult()
}

func applyRevokeToken(f *FSM, _ *applyCtx, body []byte) *pb.CommandResult {
	var r pb.RevokeTokenCommand
	if err := decode(body, &r); err != nil {
		return errResult(err)
	}
	t := f.tokens[r.Id]
	if t == nil || t.Revoked {
		return errResult(rpcerr.Wrapf(ErrTokenNotFound, "token %s", r.Id))
	}
	// Kept as a tombstone: stored messages are never changed in place.
	f.tokens[r.Id] = &pb.TokenInfo{Id: t.Id, Hash: t.Hash, CreatedUnixNano: t.CreatedUnixNano, Revoked: true}
	return &pb.CommandResult{Flag: true}
}

// TokenByHash returns the scoped token whose hash is hash (perhaps a
// revoked one), or nil. The message is shared: callers must not change it.
func (f *FSM) TokenByHash(hash string) *pb.TokenInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if id, ok := f.tokenByHash[hash]; ok {
		return f.tokens[id]
	}
	return nil
}

// Tokens lists the live scoped tokens by ID, without their hashes.
func (f *FSM) Tokens() []*pb.TokenInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pb.TokenInfo
	for _, t := range sortedValues(f.tokens, func(t *pb.TokenInfo) string { return t.Id }) {
		if !t.Revoked {
			out = append(out, &pb.TokenInfo{Id: t.Id, Scope: t.Scope, Description: t.Description,
				CreatedUnixNano: t.CreatedUnixNano, ExpiresUnixNano: t.ExpiresUnixNano})
		}
	}
	return out
}
