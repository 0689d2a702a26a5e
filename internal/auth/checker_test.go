package auth

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckerLocalScopedAndCached(t *testing.T) {
	calls := 0
	scopes := map[string]Scope{"mnt_submit": ScopeSubmit, "mnt_read": ScopeRead, "mnt_admin": ScopeAdmin}
	c := &Checker{Local: []string{"cluster"}, Verify: func(_ context.Context, tok string) (Scope, error) {
		calls++
		if s, ok := scopes[tok]; ok {
			return s, nil
		}
		if tok == "down" {
			return 0, status.Error(codes.Unavailable, "no leader")
		}
		return 0, errors.New("unknown token")
	}}
	ctx := context.Background()
	for _, tc := range []struct {
		tok  string
		code codes.Code
	}{
		{"cluster", codes.OK}, {"mnt_submit", codes.OK}, {"mnt_admin", codes.OK},
		{"mnt_read", codes.PermissionDenied}, {"bogus", codes.Unauthenticated}, {"", codes.Unauthenticated},
		{"down", codes.Unavailable},
	} {
		if got := status.Code(c.Allow(ctx, tc.tok)); got != tc.code {
			t.Errorf("Allow(%q) = %v; want %v", tc.tok, got, tc.code)
		}
	}
	before := calls
	_ = c.Allow(ctx, "mnt_submit")
	_ = c.Allow(ctx, "bogus")
	if calls != before {
		t.Fatalf("answers within CheckTTL were asked again (%d calls)", calls-before)
	}
	_ = c.Allow(ctx, "down")
	if calls != before+1 {
		t.Fatal("an Unavailable answer was cached")
	}
	if err := (&Checker{}).Allow(ctx, "anything"); err != nil {
		t.Fatalf("a checker without tokens (no cluster token) refused: %v", err)
	}
}
