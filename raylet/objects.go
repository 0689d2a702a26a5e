package raylet

import (
	"errors"
	"fmt"
	"io"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/objectstore"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// ChunkBytes is the size of the chunks objects move in.
const ChunkBytes = 4 << 20

func (r *Raylet) PutObject(stream pb.Raylet_PutObjectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id, err := ids.ObjectFromBytes(first.ObjectId)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadObject, err)
	}
	if first.Size < 0 || first.Size > MaxObjectBytes {
		return fmt.Errorf("%w: size %d", ErrBadObject, first.Size)
	}
	data := make([]byte, 0, first.Size)
	data = append(data, first.Data...)
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, c.Data...)
	}
	if int64(len(data)) != first.Size {
		return fmt.Errorf("%w: %d bytes of %d", ErrBadObject, len(data), first.Size)
	}
	if err := r.store.Put(id, objectstore.Object{Data: data, Format: int32(first.Format)}); err != nil {
		return err
	}
	return stream.SendAndClose(&pb.PutObjectReply{})
}

func (r *Raylet) GetObject(req *pb.GetObjectRequest, stream pb.Raylet_GetObjectServer) error {
	id, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadObject, err)
	}
	o, err := r.store.Get(id)
	if err != nil {
		return err
	}
	return SendChunks(o.Data, func(c *pb.ObjectChunk, first bool) error {
		if first {
			c.Format, c.Size = pb.Format(o.Format), int64(len(o.Data))
		}
		return stream.Send(c)
	})
}

// MaxObjectBytes bounds one object in this first store.
const MaxObjectBytes = 64 << 30

// SendChunks calls send for each ChunkBytes piece of data (at least once).
func SendChunks(data []byte, send func(c *pb.ObjectChunk, first bool) error) error {
	for off := 0; off < len(data) || off == 0; off += ChunkBytes {
		end := min(off+ChunkBytes, len(data))
		if err := send(&pb.ObjectChunk{Data: data[off:end]}, off == 0); err != nil {
			return err
		}
		if end == len(data) {
			break
		}
	}
	return nil
}

// RecvChunks reads an object stream; the first chunk gives its size.
func RecvChunks(recv func() (*pb.ObjectChunk, error)) ([]byte, pb.Format, error) {
	first, err := recv()
	if err != nil {
		return nil, 0, err
	}
	if first.Size < 0 || first.Size > MaxObjectBytes {
		return nil, 0, fmt.Errorf("%w: size %d", ErrBadObject, first.Size)
	}
	data := make([]byte, 0, first.Size)
	data = append(data, first.Data...)
	for int64(len(data)) < first.Size {
		c, err := recv()
		if err != nil {
			return nil, 0, err
		}
		data = append(data, c.Data...)
	}
	return data, first.Format, nil
}
