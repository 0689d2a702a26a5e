package raylet_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/objectstore"
	"github.com/manta-ray/manta/objectstore/arena"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
	"github.com/manta-ray/manta/raylet/resources"
)

// node is one raylet of a test cluster and a client of it.
type node struct {
	r  *raylet.Raylet
	rc pb.RayletClient
}

func (n node) shm(t testing.TB) *objectstore.Shared {
	s, ok := n.r.Store().(*objectstore.Shared)
	if !ok {
		t.Fatalf("store is %T", n.r.Store())
	}
	return s
}

// startNodes starts raylets that share one control plane. They start no
// workers: these tests drive the object store only.
func startNodes(tb testing.TB, n int, tune func(i int, c *raylet.Config)) ([]node, *testcluster.Cluster) {
	tb.Helper()
	tc := testcluster.Start(tb, 1, nil)
	nodes := make([]node, n)
	for i := range nodes {
		cfg := raylet.Config{Heads: tc.Addresses(), Token: tc.Token(), Resources: resources.Set{"CPU": 1},
			DataDir: tb.TempDir(), PrestartWorkers: -1, ObjectStoreMemory: 256 << 20}
		if tune != nil {
			tune(i, &cfg)
		}
		r, err := raylet.New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { r.Close() })
		nodes[i] = node{r: r, rc: dialRaylet(tb, r.Address(), tc.Token())}
	}
	return nodes, tc
}

func dialRaylet(tb testing.TB, addr, token string) pb.RayletClient {
	cc, err := grpc.NewClient(addr, append(raylet.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return pb.NewRayletClient(cc)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var objSeq uint32

func newObjectID(t testing.TB) ids.ObjectID {
	var id ids.ObjectID
	objSeq++
	for i := range id {
		id[i] = byte(rand.Uint32())
	}
	id[len(id)-1] = byte(objSeq)
	return id
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func putObject(ctx context.Context, rc pb.RayletClient, id ids.ObjectID, data []byte, job, owner string) error {
	stream, err := rc.PutObject(ctx)
	if err != nil {
		return err
	}
	err = raylet.SendChunks(data, func(c *pb.ObjectChunk, first bool) error {
		if first {
			c.ObjectId, c.Size, c.Format, c.JobId, c.OwnerAddress = id[:], int64(len(data)), pb.Format_FORMAT_RAW, job, owner
		}
		return stream.Send(c)
	})
	if err == nil || errors.Is(err, io.EOF) {
		_, err = stream.CloseAndRecv()
	}
	return rpcerr.FromStatus(err)
}

// readMapped maps the object for client and reads it in place through
// the arena file, the way a worker does.
func readMapped(t testing.TB, ctx context.Context, rc pb.RayletClient, client string, id ids.ObjectID, locs ...string) ([32]byte, *pb.MappedObject) {
	t.Helper()
	reply, err := rc.MapObjects(ctx, &pb.MapObjectsRequest{ClientId: client,
		Objects: []*pb.ObjectRequest{{ObjectId: id[:], Locations: locs}}})
	if err != nil {
		t.Fatalf("map %s: %v", id, err)
	}
	m := reply.Objects[0]
	if m.Error != nil {
		return [32]byte{}, m
	}
	rd, err := arena.OpenReader(m.ArenaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	v, err := rd.View(m.Offset, m.Size)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(v), m
}

func TestPutMapReleaseObject(t *testing.T) {
	nodes, _ := startNodes(t, 1, nil)
	n, ctx := nodes[0], testCtx(t)
	data := randomBytes(10<<20 + 123)
	id := newObjectID(t)
	if err := putObject(ctx, n.rc, id, data, "job-a", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	// A retried task puts it again: a no-op success, the first value stands.
	if err := putObject(ctx, n.rc, id, randomBytes(5), "job-a", "127.0.0.1:1"); err != nil {
		t.Fatalf("second put: %v", err)
	}
	sum, m := readMapped(t, ctx, n.rc, "worker-1", id)
	if m.Error != nil || sum != sha256.Sum256(data) || m.Format != pb.Format_FORMAT_RAW {
		t.Fatalf("mapped %v: checksum match %v", m, sum == sha256.Sum256(data))
	}
	if p := n.shm(t).Usage().Pinned; p != 1 {
		t.Fatalf("%d objects pinned; want 1", p)
	}
	if _, err := n.rc.ReleaseObjects(ctx, &pb.ReleaseObjectsRequest{ClientId: "worker-1", ObjectIds: [][]byte{id[:]}}); err != nil {
		t.Fatal(err)
	}
	if p := n.shm(t).Usage().Pinned; p != 0 {
		t.Fatalf("%d objects pinned after release", p)
	}
	loc, err := n.rc.LocateObjects(ctx, &pb.LocateObjectsRequest{})
	if err != nil || len(loc.Objects) != 1 {
		t.Fatalf("locate: %v %v", loc, err)
	}
	if l := loc.Objects[0]; l.Tier != "memory" || l.Size != int64(len(data)) || !l.Primary || l.JobId != "job-a" || l.OwnerAddress != "127.0.0.1:1" {
		t.Fatalf("location %v", l)
	}
	st, err := n.rc.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil || st.Objects != 1 || st.ObjectBytes != int64(len(data)) || st.ObjectStoreAllocated < int64(len(data)) ||
		st.ObjectStoreCapacity != 256<<20 {
		t.Fatalf("status %v %v", st, err)
	}
	// GetObject from an offset streams the rest, chunk by chunk, checked.
	stream, err := n.rc.GetObject(ctx, &pb.GetObjectRequest{ObjectId: id[:], Offset: raylet.ChunkBytes + 5})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Offset != raylet.ChunkBytes+5+int64(len(got)) || c.Crc32C != raylet.Checksum(c.Data) {
			t.Fatalf("chunk at %d (crc %x)", c.Offset, c.Crc32C)
		}
		got = append(got, c.Data...)
	}
	if !bytes.Equal(got, data[raylet.ChunkBytes+5:]) {
		t.Fatal("GetObject from an offset returned other bytes")
	}

	// Unknown objects are NotFound, over the wire as the store's sentinel.
	missing := newObjectID(t)
	stream, _ = n.rc.GetObject(ctx, &pb.GetObjectRequest{ObjectId: missing[:]})
	if _, err := stream.Recv(); !errors.Is(rpcerr.FromStatus(err), objectstore.ErrObjectNotFound) {
		t.Fatalf("get of a missing object: %v", err)
	}
	_, m = readMapped(t, ctx, n.rc, "worker-1", missing)
	if m.Error.GetKind() != pb.ErrorKind_ERROR_OBJECT_NOT_FOUND {
		t.Fatalf("map of an unknown object with no locations: %v", m)
	}
}

func TestPutRejectsBadStreams(t *testing.T) {
	nodes, _ := startNodes(t, 1, nil)
	n, ctx := nodes[0], testCtx(t)
	// A chunk whose checksum does not match its bytes.
	id := newObjectID(t)
	stream, _ := n.rc.PutObject(ctx)
	_ = stream.Send(&pb.ObjectChunk{ObjectId: id[:], Size: 10, Data: []byte("0123456789"), Crc32C: 12345})
	_, err := stream.CloseAndRecv()
	if !errors.Is(rpcerr.FromStatus(err), raylet.ErrBadChecksum) || !errors.Is(rpcerr.FromStatus(err), rpcerr.ErrInvalidArgument) {
		t.Fatalf("bad checksum: %v", err)
	}
	// A stream that ends short.
	id2 := newObjectID(t)
	stream, _ = n.rc.PutObject(ctx)
	_ = stream.Send(&pb.ObjectChunk{ObjectId: id2[:], Size: 20, Data: []byte("0123456789")})
	if _, err := stream.CloseAndRecv(); !errors.Is(rpcerr.FromStatus(err), rpcerr.ErrInvalidArgument) {
		t.Fatalf("short stream: %v", err)
	}
	// Both were aborted: nothing stored, no bytes held.
	if u := n.shm(t).Usage(); u.Objects != 0 || u.Allocated != 0 {
		t.Fatalf("after rejected puts: %+v", u)
	}
	// And the IDs are free for a correct put.
	if err := putObject(ctx, n.rc, id, []byte("0123456789"), "", ""); err != nil {
		t.Fatal(err)
	}
}

func TestCreateSealThroughArenaWriter(t *testing.T) {
	nodes, _ := startNodes(t, 1, nil)
	n, ctx := nodes[0], testCtx(t)
	data := randomBytes(3 << 20)
	id := newObjectID(t)
	cr, err := n.rc.CreateObject(ctx, &pb.CreateObjectRequest{ObjectId: id[:], Size: int64(len(data)),
		Format: pb.Format_FORMAT_RAW, ClientId: "worker-1", JobId: "job-a"})
	if err != nil || cr.Exists {
		t.Fatalf("create: %v %v", cr, err)
	}
	w, err := arena.OpenWriter(cr.ArenaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	buf, err := w.Range(cr.Offset, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	copy(buf, data)
	// Not visible until sealed.
	if _, m := readMapped(t, ctx, n.rc, "worker-2", id); m.Error.GetKind() != pb.ErrorKind_ERROR_OBJECT_NOT_FOUND {
		t.Fatalf("unsealed object mapped: %v", m)
	}
	if _, err := n.rc.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], ClientId: "worker-2"}); !errors.Is(rpcerr.FromStatus(err), rpcerr.ErrNotFound) {
		t.Fatalf("seal by another client: %v", err)
	}
	if _, err := n.rc.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], ClientId: "worker-1"}); err != nil {
		t.Fatal(err)
	}
	if sum, m := readMapped(t, ctx, n.rc, "worker-2", id); m.Error != nil || sum != sha256.Sum256(data) {
		t.Fatalf("mapped %v, checksum equal %v", m, sum == sha256.Sum256(data))
	}
	// A retried task creates it again: it exists, nothing to write.
	cr, err = n.rc.CreateObject(ctx, &pb.CreateObjectRequest{ObjectId: id[:], Size: int64(len(data)), ClientId: "worker-3"})
	if err != nil || !cr.Exists {
		t.Fatalf("second create: %v %v", cr, err)
	}
	if _, err := n.rc.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id[:], ClientId: "worker-1"}); !errors.Is(rpcerr.FromStatus(err), raylet.ErrCreationNotFound) {
		t.Fatalf("second seal: %v", err)
	}
	// An aborted creation leaves nothing.
	id2 := newObjectID(t)
	if _, err := n.rc.CreateObject(ctx, &pb.CreateObjectRequest{ObjectId: id2[:], Size: 100, ClientId: "worker-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.rc.SealObject(ctx, &pb.SealObjectRequest{ObjectId: id2[:], ClientId: "worker-1", Abort: true}); err != nil {
		t.Fatal(err)
	}
	if u := n.shm(t).Usage(); u.Objects != 1 {
		t.Fatalf("after abort: %+v", u)
	}
}

// fakeOwner is a CoreWorker server standing in for a driver: it answers
// pings and records the locations it is told of.
type fakeOwner struct {
	pb.UnimplementedCoreWorkerServer
	srv       *grpc.Server
	addr      string
	mu        sync.Mutex
	locations map[ids.ObjectID][]string
}

func startFakeOwner(t testing.TB) *fakeOwner {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeOwner{srv: grpc.NewServer(), addr: lis.Addr().String(), locations: map[ids.ObjectID][]string{}}
	pb.RegisterCoreWorkerServer(f.srv, f)
	done := make(chan struct{})
	go func() { // stopped by srv.Stop in cleanup (or by the test)
		defer close(done)
		_ = f.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		f.srv.Stop()
		<-done
	})
	return f
}

func (f *fakeOwner) Ping(context.Context, *pb.PingRequest) (*pb.PingReply, error) {
	return &pb.PingReply{}, nil
}

func (f *fakeOwner) AddObjectLocation(_ context.Context, req *pb.AddObjectLocationRequest) (*pb.AddObjectLocationReply, error) {
	id, err := ids.ObjectFromBytes(req.ObjectId)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.locations[id] = append(f.locations[id], req.Location)
	return &pb.AddObjectLocationReply{}, nil
}

func (f *fakeOwner) told(id ids.ObjectID) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.locations[id]...)
}

// TestDeadDriverLosesPinsCreationsAndObjects: a driver (a client known by
// its CoreWorker address) that stops answering pings loses its pins and
// unsealed creations, and the objects it owns are freed.
func TestDeadDriverLosesPinsCreationsAndObjects(t *testing.T) {
	nodes, _ := startNodes(t, 1, func(_ int, c *raylet.Config) { c.OwnerCheck = 50 * time.Millisecond })
	n, ctx := nodes[0], testCtx(t)
	driver, other := startFakeOwner(t), startFakeOwner(t)
	owned, kept, unsealed := newObjectID(t), newObjectID(t), newObjectID(t)
	if err := putObject(ctx, n.rc, owned, randomBytes(1000), "job", driver.addr); err != nil {
		t.Fatal(err)
	}
	if err := putObject(ctx, n.rc, kept, randomBytes(1000), "job", other.addr); err != nil {
		t.Fatal(err)
	}
	if _, m := readMapped(t, ctx, n.rc, driver.addr, kept); m.Error != nil {
		t.Fatal(m.Error)
	}
	if _, err := n.rc.CreateObject(ctx, &pb.CreateObjectRequest{ObjectId: unsealed[:], Size: 1 << 20, ClientId: driver.addr}); err != nil {
		t.Fatal(err)
	}
	s := n.shm(t)
	if u := s.Usage(); u.Pinned != 1 || u.Objects != 3 {
		t.Fatalf("before: %+v", u)
	}
	driver.srv.Stop()
	eventually(t, "the dead driver's pin, creation and object to go", func() bool {
		u := s.Usage()
		return u.Pinned == 0 && u.Objects == 1
	})
	if s.Locate(kept).Tier == objectstore.Absent || s.Locate(owned).Tier != objectstore.Absent {
		t.Fatal("freed the wrong object")
	}
	if _, err := n.rc.SealObject(ctx, &pb.SealObjectRequest{ObjectId: unsealed[:], ClientId: driver.addr}); !errors.Is(rpcerr.FromStatus(err), raylet.ErrCreationNotFound) {
		t.Fatalf("seal after the client died: %v", err)
	}
}

func TestFreeAndJobEndFreeObjects(t *testing.T) {
	nodes, tc := startNodes(t, 1, nil)
	n, ctx := nodes[0], testCtx(t)
	cp := tc.Client()
	job1, err := cp.AddJob(ctx, &cpb.JobInfo{})
	if err != nil {
		t.Fatal(err)
	}
	job2, err := cp.AddJob(ctx, &cpb.JobInfo{})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := newObjectID(t), newObjectID(t), newObjectID(t)
	for _, o := range []struct {
		id  ids.ObjectID
		job string
	}{{a, job1}, {b, job1}, {c, job2}} {
		if err := putObject(ctx, n.rc, o.id, randomBytes(1<<20), o.job, ""); err != nil {
			t.Fatal(err)
		}
	}
	status := func() *pb.GetStatusReply {
		st, err := n.rc.GetStatus(ctx, &pb.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := status()
	if _, err := n.rc.FreeObjects(ctx, &pb.FreeObjectsRequest{ObjectIds: [][]byte{a[:]}}); err != nil {
		t.Fatal(err)
	}
	if st := status(); st.Objects != 2 || st.ObjectStoreAllocated >= before.ObjectStoreAllocated {
		t.Fatalf("after free: %v (before %v)", st, before)
	}
	if err := cp.FinishJob(ctx, job1, cpb.JobState_JOB_SUCCEEDED, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ended job's object to be freed", func() bool { return status().Objects == 1 })
	if n.shm(t).Locate(c).Tier == objectstore.Absent {
		t.Fatal("the other job's object was freed")
	}
}

// TestPutFourTimesCapacitySpills: live objects of 4x the arena all stay
// readable; the arena stays within its capacity by spilling to disk.
func TestPutFourTimesCapacitySpills(t *testing.T) {
	const capacity, size = 64 << 20, 8 << 20
	nodes, _ := startNodes(t, 1, func(_ int, c *raylet.Config) { c.ObjectStoreMemory = capacity })
	n, ctx := nodes[0], testCtx(t)
	var objs []ids.ObjectID
	var sums [][32]byte
	for i := range 4 * capacity / size {
		data := randomBytes(size + i)
		id := newObjectID(t)
		if err := putObject(ctx, n.rc, id, data, "job", ""); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		objs, sums = append(objs, id), append(sums, sha256.Sum256(data))
	}
	u := n.shm(t).Usage()
	if u.Objects != int64(len(objs)) || u.SpilledBytes == 0 || u.Committed > capacity || u.Allocated > capacity {
		t.Fatalf("usage %+v", u)
	}
	for i, id := range objs {
		sum, m := readMapped(t, ctx, n.rc, "reader", id)
		if m.Error != nil || sum != sums[i] {
			t.Fatalf("object %d: %v, checksum equal %v", i, m.Error, sum == sums[i])
		}
		if _, err := n.rc.ReleaseObjects(ctx, &pb.ReleaseObjectsRequest{ClientId: "reader", ObjectIds: [][]byte{id[:]}}); err != nil {
			t.Fatal(err)
		}
	}
	if u := n.shm(t).Usage(); u.Committed > capacity {
		t.Fatalf("arena committed %d of %d", u.Committed, capacity)
	}
}
