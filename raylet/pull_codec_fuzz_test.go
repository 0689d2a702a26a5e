package raylet

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// FuzzChunkDecode feeds arbitrary chunk messages, as a peer raylet could
// send them, to the pull codec, which writes data straight into the arena:
// it must not panic, must write nowhere but the pull's own range, and
// wherever protobuf's own decoder accepts the message it must read the
// same fields.
func FuzzChunkDecode(f *testing.F) {
	for _, c := range []*pb.ObjectChunk{
		{ObjectId: []byte("0123456789"), Format: 1, Size: 10, Data: []byte("hello"), Crc32C: 7, Offset: 3, JobId: "j", OwnerAddress: "127.0.0.1:1"},
		{Data: bytes.Repeat([]byte{1}, 100), Offset: 1 << 40},
		{},
	} {
		b, _ := proto.Marshal(c)
		f.Add(b, uint8(0))
	}
	f.Add([]byte{0x22, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint8(4)) // data longer than the message
	f.Add([]byte{0x0b, 0x0c}, uint8(0))                         // a group
	f.Fuzz(func(t *testing.T, msg []byte, pos uint8) {
		const size = 64
		arena := make([]byte, size+16)
		guard := bytes.Repeat([]byte{0xAA}, 16)
		copy(arena[size:], guard)
		st := &pullState{buf: arena[:size:size], pos: int64(pos) % size}
		var got pb.ObjectChunk
		err := pullCodec{st: st}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(msg)}, &got)
		if !bytes.Equal(arena[size:], guard) {
			t.Fatal("the codec wrote past the pull's range")
		}
		var want pb.ObjectChunk
		if proto.Unmarshal(msg, &want) != nil || err != nil {
			return
		}
		if got.Format != want.Format || got.Size != want.Size || got.Offset != want.Offset || got.Crc32C != want.Crc32C ||
			!bytes.Equal(got.ObjectId, want.ObjectId) || !bytes.Equal(got.Data, want.Data) ||
			got.JobId != want.JobId || got.OwnerAddress != want.OwnerAddress {
			t.Fatalf("codec read %v, protobuf %v", &got, &want)
		}
	})
}
