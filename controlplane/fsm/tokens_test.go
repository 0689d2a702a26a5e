package fsm

import (
	"errors"
	"io"
	"testing"

	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestTokensCreateRevokeAndSnapshot(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	_, tok := auth.NewScopedToken()
	h := auth.Hash(tok)
	if err := ResultError(a.apply(cmd(t, CmdCreateToken, "r1", &pb.TokenInfo{Id: "t1", Hash: h, Scope: "read"}))[0]); err != nil {
		t.Fatal(err)
	}
	if err := ResultError(a.apply(cmd(t, CmdCreateToken, "", &pb.TokenInfo{Id: "t2", Hash: h, Scope: "root"}))[0]); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("unknown scope: %v", err)
	}
	if got := a.f.TokenByHash(h); got == nil || got.Scope != "read" {
		t.Fatalf("lookup: %v", got)
	}
	if l := a.f.Tokens(); len(l) != 1 || l[0].Hash != "" {
		t.Fatalf("list must show one token without its hash: %v", l)
	}
	// A restored store knows the token by its hash too.
	snap, _ := a.f.Snapshot()
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	b := New(nil)
	if err := b.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	if b.TokenByHash(h) == nil {
		t.Fatal("restored store lost the token")
	}
	if r := a.apply(cmd(t, CmdRevokeToken, "", &pb.RevokeTokenCommand{Id: "t1"}))[0]; !r.Flag {
		t.Fatalf("revoke: %v", r)
	}
	if got := a.f.TokenByHash(h); got == nil || !got.Revoked || got.Scope != "" {
		t.Fatalf("revoked token: %v; want a tombstone", got)
	}
	if len(a.f.Tokens()) != 0 {
		t.Fatal("list shows a revoked token")
	}
	if err := ResultError(a.apply(cmd(t, CmdRevokeToken, "", &pb.RevokeTokenCommand{Id: "t1"}))[0]); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
}
