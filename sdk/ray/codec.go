package ray

import (
	"context"
	"fmt"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// InlineLimit is the largest value that travels inline in specs and
// replies; larger ones go to the node's object store (Ray's 100 KiB).
const InlineLimit = core.InlineLimit

// ReadOnlyBytes is a []byte a task takes without a copy: as a parameter of
// a remote function, a large argument arrives as a view of the node's
// shared-memory object store instead of a private copy (Ray hands out
// read-only numpy arrays the same way). The view is read-only: writing to
// it crashes the worker. It is valid until the task returns; keep a copy
// for longer. Small (inline) arguments arrive as ordinary bytes. Elsewhere
// (results, Put, Get) it is a []byte like any other.
type ReadOnlyBytes = core.ReadOnlyBytes

// InArena says whether b is a view of a node arena this process mapped
// (an argument read in place) rather than a copy; libraries on top
// (sdk/data) use it to assert their zero-copy reads.
func InArena(b []byte) bool {
	if c, err := core.Current(); err == nil && c != nil {
		return c.InArena(b)
	}
	return false
}

// decode reads a value as T (the runtime encodes: core.Encode).
func decode[T any](data []byte, format pb.Format) (T, error) {
	return decodeIn[T](nil, data, format)
}

// decodeIn is decode for an argument of the task running in ctx (nil:
// not an argument): refs in it of the task's caller are registered by
// the task's result rather than one by one.
func decodeIn[T any](ctx context.Context, data []byte, format pb.Format) (T, error) {
	var v T
	if format == pb.Format_FORMAT_RAW {
		switch p := any(&v).(type) {
		case *[]byte:
			*p = data
			return v, nil
		case *ReadOnlyBytes:
			*p = data
			return v, nil
		}
		return v, fmt.Errorf("%w: raw bytes cannot be read as %T", ErrBadArgument, v)
	}
	var err error
	if ctx != nil {
		err = core.DecodeArg(ctx, data, &v)
	} else {
		err = core.Decode(data, &v)
	}
	if err != nil {
		return v, fmt.Errorf("%w: cannot read the value as %T: %v", ErrBadArgument, v, err)
	}
	return v, nil
}
