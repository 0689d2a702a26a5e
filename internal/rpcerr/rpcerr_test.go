package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errThing = New(codes.NotFound, "TEST_THING_NOT_FOUND", "thing not found")

func TestSentinelSurvivesTheWire(t *testing.T) {
	sent := fmt.Errorf("lookup: %w", Wrapf(errThing, "id %d", 7))
	st := ToStatus(sent)
	if status.Code(st) != codes.NotFound {
		t.Fatalf("code %v", status.Code(st))
	}
	got := FromStatus(st)
	if !errors.Is(got, errThing) || !errors.Is(got, ErrNotFound) || errors.Is(got, ErrUnavailable) {
		t.Fatalf("errors.Is lost across the wire: %v", got)
	}
	if got.Error() != sent.Error() {
		t.Fatalf("message %q, want %q", got.Error(), sent.Error())
	}
	// Passing a remote error on (a forwarding head) keeps it intact.
	if again := FromStatus(ToStatus(got)); !errors.Is(again, errThing) {
		t.Fatalf("forwarded error lost its sentinel: %v", again)
	}
}

func TestUnavailableCarriesRetryHint(t *testing.T) {
	err := ToStatus(New(codes.Unavailable, "TEST_BUSY", "busy"))
	if d, ok := RetryDelay(err); !ok || d != RetryAfter {
		t.Fatalf("retry hint %v %v", d, ok)
	}
}

func TestPlainErrors(t *testing.T) {
	if c := status.Code(ToStatus(context.DeadlineExceeded)); c != codes.DeadlineExceeded {
		t.Fatalf("deadline mapped to %v", c)
	}
	if c := status.Code(ToStatus(errors.New("boom"))); c != codes.Internal {
		t.Fatalf("plain error mapped to %v", c)
	}
	if got := FromStatus(status.Error(codes.Unavailable, "x")); !errors.Is(got, ErrUnavailable) {
		t.Fatalf("bare status lost its generic sentinel: %v", got)
	}
}
