package ray

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// InlineLimit is the largest value that travels inline in specs and
// replies; larger ones go to the node's object store (Ray's 100 KiB).
const InlineLimit = 100 << 10

// encode is the one codec: msgpack for values, []byte carried raw.
func encode(v any) (*pb.ObjectValue, error) {
	if b, ok := v.([]byte); ok {
		return &pb.ObjectValue{Data: b, Format: pb.Format_FORMAT_RAW}, nil
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("ray: encode %T: %w", v, err)
	}
	return &pb.ObjectValue{Data: b}, nil
}

// decode reads a value as T.
func decode[T any](data []byte, format pb.Format) (T, error) {
	var v T
	if format == pb.Format_FORMAT_RAW {
		if p, ok := any(&v).(*[]byte); ok {
			*p = data
			return v, nil
		}
		return v, fmt.Errorf("%w: raw bytes cannot be read as %T", ErrBadArgument, v)
	}
	if err := msgpack.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("%w: cannot read the value as %T: %v", ErrBadArgument, v, err)
	}
	return v, nil
}
