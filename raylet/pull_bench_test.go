package raylet_test

import (
	"testing"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// BenchmarkPullGiB moves a 1 GiB object from one raylet to another on
// loopback (both in this process): MapObjects on the destination pulls it
// into its arena; each iteration frees the copy again. The destination's
// arena pages are committed by the first iteration.
func BenchmarkPullGiB(b *testing.B) {
	const size = 1 << 30
	nodes, _ := startNodes(b, 2, func(_ int, c *raylet.Config) { c.ObjectStoreMemory = 2*size + 512<<20 })
	src, dst, ctx := nodes[0], nodes[1], testCtx(b)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 31 >> 7)
	}
	id := newObjectID(b)
	if err := putObject(ctx, src.rc, id, data, "", ""); err != nil {
		b.Fatal(err)
	}
	data = nil
	req := &pb.MapObjectsRequest{ClientId: "bench", Objects: []*pb.ObjectRequest{{ObjectId: id[:], Locations: []string{src.r.Address()}}}}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		reply, err := dst.rc.MapObjects(ctx, req)
		if err != nil || reply.Objects[0].Error != nil {
			b.Fatal(err, reply)
		}
		b.StopTimer()
		if _, err := dst.rc.ReleaseObjects(ctx, &pb.ReleaseObjectsRequest{ClientId: "bench", ObjectIds: [][]byte{id[:]}}); err != nil {
			b.Fatal(err)
		}
		if _, err := dst.rc.FreeObjects(ctx, &pb.FreeObjectsRequest{ObjectIds: [][]byte{id[:]}}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
