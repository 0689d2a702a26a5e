// Package rpcerr carries sentinel errors across gRPC: a sentinel is mapped to
// a status code plus an ErrorInfo reason at the server, and the client maps
// the reason back to the same sentinel, so errors.Is works across the wire.
package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain names manta in ErrorInfo details.
const Domain = "manta"

// Error is a sentinel: a gRPC code, a stable reason and a message.
type Error struct {
	Code   codes.Code
	Reason string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Is makes every sentinel match the generic sentinel of its code, so callers
// can test errors.Is(err, rpcerr.ErrNotFound) for any not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == "" && t.Code == e.Code
}

var (
	mu       sync.RWMutex
	registry = map[string]*Error{}
)

// New defines and registers a sentinel. Call it from package-level var
// declarations only; reasons must be unique.
func New(code codes.Code, reason, msg string) *Error {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[reason]; dup {
		panic("rpcerr: duplicate reason " + reason)
	}
	e := &Error{Code: code, Reason: reason, Msg: msg}
	registry[reason] = e
	return e
}

// Generic sentinels, one per code, matched by any error of that code.
var (
	ErrInvalidArgument    = &Error{Code: codes.InvalidArgument, Msg: "invalid argument"}
	ErrNotFound           = &Error{Code: codes.NotFound, Msg: "not found"}
	ErrAlreadyExists      = &Error{Code: codes.AlreadyExists, Msg: "already exists"}
	ErrFailedPrecondition = &Error{Code: codes.FailedPrecondition, Msg: "failed precondition"}
	ErrUnavailable        = &Error{Code: codes.Unavailable, Msg: "unavailable"}
	ErrUnauthenticated    = &Error{Code: codes.Unauthenticated, Msg: "unauthenticated"}
	ErrDeadlineExceeded   = &Error{Code: codes.DeadlineExceeded, Msg: "deadline exceeded"}
	ErrInternal           = &Error{Code: codes.Internal, Msg: "internal error"}
	ErrResourceExhausted  = &Error{Code: codes.ResourceExhausted, Msg: "resource exhausted"}
)

// RetryAfter is the hint attached to Unavailable errors.
const RetryAfter = 200 * time.Millisecond

// ToStatus turns err into a gRPC status error. A sentinel in err's chain
// gives the code and reason; context errors keep their codes; anything else
// is Internal. The message is err's full text.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var re *remoteError
	if errors.As(err, &re) {
		return re.st.Err() // came over the wire: pass it on as it came
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	code, reason := codes.Internal, ""
	var se *Error
	var coded interface{ GRPCCode() codes.Code }
	switch {
	case errors.As(err, &se):
		code, reason = se.Code, se.Reason
	case errors.As(err, &coded):
		code = coded.GRPCCode()
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	st := status.New(code, err.Error())
	if reason != "" {
		if s2, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); derr == nil {
			st = s2
		}
	}
	if code == codes.Unavailable {
		if s2, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(RetryAfter)}); derr == nil {
			st = s2
		}
	}
	return st.Err()
}

// remoteError is an error that came over the wire: its text is the remote
// message, and it unwraps to the registered sentinel of its reason.
type remoteError struct {
	st       *status.Status
	sentinel *Error
}

func (e *remoteError) Error() string { return e.st.Message() }

func (e *remoteError) Unwrap() error {
	if e.sentinel == nil {
		return nil
	}
	return e.sentinel
}

// Is matches the generic sentinel of the status code.
func (e *remoteError) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == "" && t.Code == e.st.Code()
}

// GRPCStatus keeps status.Code and status.FromError working.
func (e *remoteError) GRPCStatus() *status.Status { return e.st }

// FromStatus turns a gRPC error back into an error that matches the sentinel
// the server sent. Non-status errors are returned unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	var re *remoteError
	if errors.As(err, &re) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	out := &remoteError{st: st}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == Domain {
			mu.RLock()
			out.sentinel = registry[info.Reason]
			mu.RUnlock()
		}
	}
	return out
}

// RetryDelay returns the server's retry hint, if the error has one.
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.RetryDelay.AsDuration(), true
		}
	}
	return 0, false
}

// Code returns the gRPC code of err, looking through wrapping.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var se *Error
	if errors.As(err, &se) {
		return se.Code
	}
	var coded interface{ GRPCCode() codes.Code }
	if errors.As(err, &coded) {
		return coded.GRPCCode()
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// Wrapf wraps a sentinel with a formatted detail: "sentinel msg: detail".
func Wrapf(sentinel *Error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// Lookup returns the registered sentinel of reason, or nil.
func Lookup(reason string) *Error {
	if reason == "" {
		return nil
	}
	mu.RLock()
	defer mu.RUnlock()
	return registry[reason]
}
