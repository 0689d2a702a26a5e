package objectstore

import (
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
)

var (
	// ErrObjectNotFound is a Get of an object the store does not hold (never
	// created, deleted, or not sealed yet).
	ErrObjectNotFound = rpcerr.New(codes.NotFound, "OBJECT_NOT_FOUND", "object not found")
	// ErrObjectStoreFull is a Create the store cannot make room for; the
	// message names the sizes involved.
	ErrObjectStoreFull = rpcerr.New(codes.ResourceExhausted, "OBJECT_STORE_FULL", "object store full")
	// ErrObjectExists is a Create of an ID that is already stored or being
	// written; objects are immutable, so the first one stands.
	ErrObjectExists = rpcerr.New(codes.AlreadyExists, "OBJECT_EXISTS", "object already exists")
	// ErrStoreClosed is any call after Close.
	ErrStoreClosed = rpcerr.New(codes.Unavailable, "OBJECT_STORE_CLOSED", "object store closed")
)
