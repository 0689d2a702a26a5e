package objclient

// A fake raylet served with real gRPC over bufconn: it keeps streamed
// objects in its heap and, when it serves the arena RPCs, places objects in
// a real arena file (objectstore/arena) that the client maps as it would a
// node's. Its modes make it answer the way older raylets, remote arenas and
// failing nodes do.

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/objectstore/arena"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

const testJob = "job-test"

func objectID(n uint32) ids.ObjectID {
	return ids.PutID(ids.DriverTaskID(testJob), n)
}

// pattern is n bytes that differ from one offset to the next.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// arenaMode is how a fake raylet answers the arena RPCs.
type arenaMode int

const (
	arenaServed     arenaMode = iota // objects placed in a real arena file
	arenaNone                        // Unimplemented: an older raylet
	arenaUnopenable                  // a path this process cannot open (another host)
	arenaMapFails                    // MapObjects fails (a full store)
)

type stored struct {
	data    []byte
	format  pb.Format
	inArena bool
	off     int64
}

// fakeRaylet is one node's raylet.
type fakeRaylet struct {
	pb.UnimplementedRayletServer
	mode  arenaMode
	arena *arena.Map

	mu      sync.Mutex
	objects map[ids.ObjectID]*stored
	next    int64 // the arena's bump allocator
	pending map[ids.ObjectID]*stored
	// The calls received, by RPC, and what they carried.
	calls    map[string]int
	aborted  []ids.ObjectID
	released []ids.ObjectID
	pinned   int
	clients  []string // ClientId of the creations and maps
	jobs     []string // JobId of the creations, maps and puts
	owners   []string // OwnerAddress of the puts
	// GetObject faults: send this many chunks and then fail (-1: never),
	// or corrupt the checksum of the next n chunks sent.
	failAfter int
	corrupt   int
}

func newFakeRaylet(t *testing.T, mode arenaMode) *fakeRaylet {
	r := &fakeRaylet{mode: mode, objects: map[ids.ObjectID]*stored{}, pending: map[ids.ObjectID]*stored{},
		calls: map[string]int{}, failAfter: -1}
	if mode == arenaServed || mode == arenaMapFails {
		m, err := arena.Create(filepath.Join(t.TempDir(), "arena"), 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Commit(m.Size()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		r.arena = m
	}
	return r
}

func (r *fakeRaylet) called(rpc string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[rpc]
}

func (r *fakeRaylet) count(rpc string) {
	r.mu.Lock()
	r.calls[rpc]++
	r.mu.Unlock()
}

// put places an object in the raylet's heap, as a pull or a stream would.
func (r *fakeRaylet) put(id ids.ObjectID, data []byte, format pb.Format) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.objects[id] = &stored{data: data, format: format}
}

// bytesOf is what the raylet holds for an object.
func (r *fakeRaylet) bytesOf(id ids.ObjectID) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.objects[id]
	if o == nil {
		return nil
	}
	if o.inArena {
		return append([]byte(nil), r.arena.Bytes()[o.off:o.off+int64(len(o.data))]...)
	}
	return o.data
}

// allocLocked places size bytes in the arena.
func (r *fakeRaylet) allocLocked(size int64) int64 {
	off := r.next
	r.next += (size + 4095) / 4096 * 4096
	return off
}

func (r *fakeRaylet) arenaRPC(rpc string) error {
	r.count(rpc)
	if r.mode == arenaNone {
		return status.Error(codes.Unimplemented, "method "+rpc+" not implemented")
	}
	return nil
}

func (r *fakeRaylet) CreateObject(_ context.Context, req *pb.CreateObjectRequest) (*pb.CreateObjectReply, error) {
	if err := r.arenaRPC("CreateObject"); err != nil {
		return nil, err
	}
	id, _ := ids.ObjectFromBytes(req.ObjectId)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clients = append(r.clients, req.ClientId)
	r.jobs = append(r.jobs, req.JobId)
	if r.objects[id] != nil {
		return &pb.CreateObjectReply{Exists: true}, nil
	}
	if r.mode == arenaUnopenable {
		r.pending[id] = &stored{}
		return &pb.CreateObjectReply{ArenaPath: "/nonexistent/manta-arena", Offset: 0}, nil
	}
	off := r.allocLocked(req.Size)
	r.pending[id] = &stored{data: make([]byte, req.Size), format: req.Format, inArena: true, off: off}
	return &pb.CreateObjectReply{ArenaPath: r.arena.Path(), Offset: off}, nil
}

func (r *fakeRaylet) SealObject(_ context.Context, req *pb.SealObjectRequest) (*pb.SealObjectReply, error) {
	if err := r.arenaRPC("SealObject"); err != nil {
		return nil, err
	}
	id, _ := ids.ObjectFromBytes(req.ObjectId)
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.pending[id]
	if o == nil {
		return nil, status.Error(codes.NotFound, "not being created")
	}
	delete(r.pending, id)
	if req.Abort {
		r.aborted = append(r.aborted, id)
		return &pb.SealObjectReply{}, nil
	}
	r.objects[id] = o
	return &pb.SealObjectReply{}, nil
}

func (r *fakeRaylet) MapObjects(_ context.Context, req *pb.MapObjectsRequest) (*pb.MapObjectsReply, error) {
	if err := r.arenaRPC("MapObjects"); err != nil {
		return nil, err
	}
	if r.mode == arenaMapFails {
		return nil, status.Error(codes.ResourceExhausted, "object store full")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clients = append(r.clients, req.ClientId)
	r.jobs = append(r.jobs, req.JobId)
	rep := &pb.MapObjectsReply{}
	for _, o := range req.Objects {
		id, _ := ids.ObjectFromBytes(o.ObjectId)
		s := r.objects[id]
		if s == nil {
			rep.Objects = append(rep.Objects, &pb.MappedObject{ObjectId: o.ObjectId,
				Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_OBJECT_LOST, Message: fmt.Sprintf("no copy of %s", id)}})
			continue
		}
		r.pinned++
		if r.mode == arenaUnopenable {
			rep.Objects = append(rep.Objects, &pb.MappedObject{ObjectId: o.ObjectId, ArenaPath: "/nonexistent/manta-arena",
				Size: int64(len(s.data)), Format: s.format})
			continue
		}
		if !s.inArena {
			// Made local: copied into the arena.
			s.off, s.inArena = r.allocLocked(int64(len(s.data))), true
			copy(r.arena.Bytes()[s.off:], s.data)
		}
		rep.Objects = append(rep.Objects, &pb.MappedObject{ObjectId: o.ObjectId, ArenaPath: r.arena.Path(),
			Offset: s.off, Size: int64(len(s.data)), Format: s.format})
	}
	return rep, nil
}

func (r *fakeRaylet) ReleaseObjects(_ context.Context, req *pb.ReleaseObjectsRequest) (*pb.ReleaseObjectsReply, error) {
	if err := r.arenaRPC("ReleaseObjects"); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range req.ObjectIds {
		id, _ := ids.ObjectFromBytes(b)
		r.released = append(r.released, id)
		r.pinned--
	}
	return &pb.ReleaseObjectsReply{}, nil
}

func (r *fakeRaylet) PutObject(stream pb.Raylet_PutObjectServer) error {
	r.count("PutObject")
	var first *pb.ObjectChunk
	data, format, err := raylet.RecvChunks(func() (*pb.ObjectChunk, error) {
		ch, err := stream.Recv()
		if first == nil && err == nil {
			first = ch // it names the object
		}
		return ch, err
	})
	if err != nil {
		return err
	}
	id, err := ids.ObjectFromBytes(first.ObjectId)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	r.mu.Lock()
	r.objects[id] = &stored{data: data, format: format}
	r.jobs = append(r.jobs, first.JobId)
	r.owners = append(r.owners, first.OwnerAddress)
	r.mu.Unlock()
	return stream.SendAndClose(&pb.PutObjectReply{})
}

func (r *fakeRaylet) GetObject(req *pb.GetObjectRequest, stream pb.Raylet_GetObjectServer) error {
	r.count("GetObject")
	id, _ := ids.ObjectFromBytes(req.ObjectId)
	data := r.bytesOf(id)
	r.mu.Lock()
	o := r.objects[id]
	r.mu.Unlock()
	if o == nil {
		return status.Error(codes.NotFound, "no such object")
	}
	sent := 0
	return raylet.SendChunks(data[req.Offset:], func(ch *pb.ObjectChunk, first bool) error {
		ch.Offset += req.Offset
		if first {
			ch.Size, ch.Format = int64(len(data)), o.format
		}
		r.mu.Lock()
		fail := r.failAfter >= 0 && sent >= r.failAfter
		if fail {
			r.failAfter = -1
		}
		if !fail && r.corrupt > 0 {
			r.corrupt--
			ch.Crc32C++
		}
		r.mu.Unlock()
		if fail {
			return status.Error(codes.Unavailable, "node went away")
		}
		sent++
		return stream.Send(ch)
	})
}

// ---- the network ----------------------------------------------------------------

// network serves fake raylets by address on bufconn; it is the client's
// Raylets.
type network struct {
	t         *testing.T
	mu        sync.Mutex
	listeners map[string]*bufconn.Listener
	conns     map[string]*grpc.ClientConn
}

func newNetwork(t *testing.T) *network {
	n := &network{t: t, listeners: map[string]*bufconn.Listener{}, conns: map[string]*grpc.ClientConn{}}
	t.Cleanup(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, cc := range n.conns {
			_ = cc.Close()
		}
	})
	return n
}

func (n *network) serve(addr string, r *fakeRaylet) {
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	pb.RegisterRayletServer(s, r)
	go func() { _ = s.Serve(lis) }()
	n.t.Cleanup(s.Stop)
	n.mu.Lock()
	n.listeners[addr] = lis
	n.mu.Unlock()
}

func (n *network) Raylet(addr string) (pb.RayletClient, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if cc := n.conns[addr]; cc != nil {
		return pb.NewRayletClient(cc), nil
	}
	lis := n.listeners[addr]
	if lis == nil {
		return nil, fmt.Errorf("no raylet at %q", addr)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		return nil, err
	}
	n.conns[addr] = cc
	return pb.NewRayletClient(cc), nil
}

const (
	home       = "raylet-home"
	testLimit  = 1 << 10
	testClient = "worker-1"
)

// newClient serves r as the local raylet and makes a client of it.
func newClient(t *testing.T, n *network, r *fakeRaylet) *Client {
	n.serve(home, r)
	rc, err := n.Raylet(home)
	if err != nil {
		t.Fatal(err)
	}
	c := New(Config{Raylet: rc, RayletAddr: home, Raylets: n, InlineLimit: testLimit,
		Identity: func() (string, string) { return testClient, testJob }})
	t.Cleanup(c.Close)
	return c
}
