package core

// The one codec of values: msgpack, with []byte carried raw. Decoding is
// typed and lives in the facade (sdk/ray); the runtime only encodes
// results and Put values.

import (
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// InlineLimit is the largest value that travels inline in specs and
// replies; larger ones go to the node's object store (Ray's 100 KiB).
const InlineLimit = 100 << 10

// ReadOnlyBytes is a []byte a task takes without a copy (sdk/ray
// documents it): a stored argument of a parameter of this type arrives as
// a view of the node's shared-memory arena.
type ReadOnlyBytes []byte

// Encode is the one codec: msgpack for values, []byte carried raw. The
// refs a value holds are listed in its Contained (borrowers.go).
func Encode(v any) (*pb.ObjectValue, error) {
	switch b := v.(type) {
	case []byte:
		return &pb.ObjectValue{Data: b, Format: pb.Format_FORMAT_RAW}, nil
	case ReadOnlyBytes:
		return &pb.ObjectValue{Data: b, Format: pb.Format_FORMAT_RAW}, nil
	}
	return encodeValue(v)
}
