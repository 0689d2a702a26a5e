package raylet

import (
	"bytes"
	"io"
	"testing"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

func TestChunksRoundTrip(t *testing.T) {
	for _, n := range []int{0, 10, ChunkBytes, 2*ChunkBytes + 123} {
		data := bytes.Repeat([]byte{7}, n)
		var chunks []*pb.ObjectChunk
		err := SendChunks(data, func(c *pb.ObjectChunk, first bool) error {
			if first {
				c.Size, c.Format = int64(len(data)), pb.Format_FORMAT_RAW
			}
			chunks = append(chunks, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := max(1, (n+ChunkBytes-1)/ChunkBytes); len(chunks) != want {
			t.Fatalf("%d bytes in %d chunks; want %d", n, len(chunks), want)
		}
		i := 0
		got, format, err := RecvChunks(func() (*pb.ObjectChunk, error) {
			if i == len(chunks) {
				return nil, io.EOF
			}
			i++
			return chunks[i-1], nil
		})
		if err != nil || !bytes.Equal(got, data) || format != pb.Format_FORMAT_RAW {
			t.Fatalf("%d bytes: got %d, %v, %v", n, len(got), format, err)
		}
	}
}
