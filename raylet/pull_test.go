package raylet_test

import (
	"crypto/sha256"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// serveLog records the offsets each node's GetObject streams start or
// continue at, and injects one fault per rule.
type serveLog struct {
	mu     sync.Mutex
	starts map[int][]int64 // node -> offsets of chunks served
	fault  func(node int, id ids.ObjectID, off int64) raylet.ChunkFault
}

func (l *serveLog) knobs(node int) raylet.TestingKnobs {
	return raylet.TestingKnobs{ServeChunk: func(id ids.ObjectID, off int64) raylet.ChunkFault {
		l.mu.Lock()
		l.starts[node] = append(l.starts[node], off)
		f := l.fault
		l.mu.Unlock()
		if f == nil {
			return raylet.ChunkOK
		}
		return f(node, id, off)
	}}
}

func (l *serveLog) served(node int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.starts[node])
}

func (l *serveLog) setFault(f func(node int, id ids.ObjectID, off int64) raylet.ChunkFault) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fault = f
	l.starts = map[int][]int64{}
}

func startPullNodes(t *testing.T, n int) ([]node, *serveLog) {
	log := &serveLog{starts: map[int][]int64{}}
	nodes, _ := startNodes(t, n, func(i int, c *raylet.Config) {
		c.Knobs = log.knobs(i)
		// Long enough that a healthy source under -race on a loaded
		// 2-core machine never looks stalled (300 ms did, once).
		c.PullStallTimeout = time.Second
	})
	return nodes, log
}

// TestPullBetweenRaylets: a 64 MiB object put on one node is mapped on
// another: pulled, checked, readable in place, and its owner is told.
func TestPullBetweenRaylets(t *testing.T) {
	nodes, _ := startPullNodes(t, 2)
	src, dst, ctx := nodes[0], nodes[1], testCtx(t)
	owner := startFakeOwner(t)
	data := randomBytes(64<<20 + 7)
	id := newObjectID(t)
	if err := putObject(ctx, src.rc, id, data, "job-x", owner.addr); err != nil {
		t.Fatal(err)
	}
	sum, m := readMapped(t, ctx, dst.rc, "reader", id, dst.r.Address(), src.r.Address())
	if m.Error != nil || sum != sha256.Sum256(data) || m.Size != int64(len(data)) {
		t.Fatalf("pulled %v; checksum equal %v", m, sum == sha256.Sum256(data))
	}
	eventually(t, "the owner to hear of the copy", func() bool {
		return slices.Equal(owner.told(id), []string{dst.r.Address()})
	})
	loc, err := dst.rc.LocateObjects(ctx, &pb.LocateObjectsRequest{ObjectIds: [][]byte{id[:]}})
	if err != nil || len(loc.Objects) != 1 {
		t.Fatalf("locate: %v %v", loc, err)
	}
	// A secondary copy, freed with the original's job and owner.
	if l := loc.Objects[0]; l.Primary || l.JobId != "job-x" || l.OwnerAddress != owner.addr {
		t.Fatalf("pulled copy's location: %v", l)
	}
}

// TestConcurrentMapsShareOnePull: many readers of one remote object cause
// one transfer.
func TestConcurrentMapsShareOnePull(t *testing.T) {
	nodes, log := startPullNodes(t, 2)
	src, dst, ctx := nodes[0], nodes[1], testCtx(t)
	data := randomBytes(16 << 20)
	id := newObjectID(t)
	if err := putObject(ctx, src.rc, id, data, "", ""); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := dst.rc.MapObjects(ctx, &pb.MapObjectsRequest{ClientId: fmt.Sprint("reader-", i),
				Objects: []*pb.ObjectRequest{{ObjectId: id[:], Locations: []string{src.r.Address()}}}})
			if err != nil || reply.Objects[0].Error != nil {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d maps failed", bad.Load())
	}
	if starts := countStarts(log.served(0)); starts != 1 {
		t.Fatalf("the source served %d transfers; want 1", starts)
	}
	if p := dst.shm(t).Usage().Pinned; p != 1 {
		t.Fatalf("%d objects pinned; want the one, 8 times", p)
	}
}

func countStarts(offs []int64) int {
	n := 0
	for _, o := range offs {
		if o == 0 {
			n++
		}
	}
	return n
}

// TestPullResumesFromAnotherCopy: a source that stalls, or dies, after its
// first chunk does not fail the pull: it continues from the same offset
// at the next location.
func TestPullResumesFromAnotherCopy(t *testing.T) {
	nodes, log := startPullNodes(t, 3)
	a, dst, c, ctx := nodes[0], nodes[1], nodes[2], testCtx(t)
	data := randomBytes(4*raylet.ChunkBytes + 99)
	stalled, killed := newObjectID(t), newObjectID(t)
	for _, id := range []ids.ObjectID{stalled, killed} {
		for _, n := range []node{a, c} {
			if err := putObject(ctx, n.rc, id, data, "", ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Source a stalls at its second chunk of either object; for killed, the
	// test then closes a. Signals are per object (and sent once), so a
	// late stall of the first case cannot close a early in the second.
	reached := map[ids.ObjectID]chan struct{}{stalled: make(chan struct{}, 1), killed: make(chan struct{}, 1)}
	fault := func(node int, id ids.ObjectID, off int64) raylet.ChunkFault {
		if node == 0 && off == raylet.ChunkBytes {
			select {
			case reached[id] <- struct{}{}:
			default:
			}
			return raylet.ChunkStall
		}
		return raylet.ChunkOK
	}
	log.setFault(fault)
	// A paused source: the pull gives up on it after PullStallTimeout.
	sum, m := readMapped(t, ctx, dst.rc, "reader", stalled, a.r.Address(), c.r.Address())
	if m.Error != nil || sum != sha256.Sum256(data) {
		t.Fatalf("after a stalled source: %v, checksum equal %v", m.Error, sum == sha256.Sum256(data))
	}
	if got := log.served(2); len(got) == 0 || got[0] != raylet.ChunkBytes {
		t.Fatalf("the second source served offsets %v; want a resume at %d", got, raylet.ChunkBytes)
	}

	// A source that dies mid-transfer.
	log.setFault(fault) // a fresh serve log
	// Close the source once it served its first chunk (or the test ends).
	go func() {
		select {
		case <-reached[killed]:
			a.r.Close()
		case <-ctx.Done():
		}
	}()
	sum, m = readMapped(t, ctx, dst.rc, "reader", killed, a.r.Address(), c.r.Address())
	if m.Error != nil || sum != sha256.Sum256(data) {
		t.Fatalf("after a dead source: %v, checksum equal %v", m.Error, sum == sha256.Sum256(data))
	}
	// Closing a server may drop the chunk it had just sent, so the pull
	// resumes where its copy ends: at the second chunk, or from the start.
	if got := log.served(2); len(got) == 0 || (got[0] != raylet.ChunkBytes && got[0] != 0) {
		t.Fatalf("the second source served offsets %v; want a resume at %d (or 0)", got, raylet.ChunkBytes)
	}
}

// TestPullRefetchesCorruptChunk: a chunk that fails its checksum is
// fetched again from its offset, and the copy is exact.
func TestPullRefetchesCorruptChunk(t *testing.T) {
	nodes, log := startPullNodes(t, 2)
	src, dst, ctx := nodes[0], nodes[1], testCtx(t)
	data := randomBytes(3*raylet.ChunkBytes + 1)
	id := newObjectID(t)
	if err := putObject(ctx, src.rc, id, data, "", ""); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	log.setFault(func(_ int, _ ids.ObjectID, off int64) raylet.ChunkFault {
		f := raylet.ChunkOK
		if off == raylet.ChunkBytes {
			once.Do(func() { f = raylet.ChunkCorrupt })
		}
		return f
	})
	sum, m := readMapped(t, ctx, dst.rc, "reader", id, src.r.Address())
	if m.Error != nil || sum != sha256.Sum256(data) {
		t.Fatalf("%v, checksum equal %v", m.Error, sum == sha256.Sum256(data))
	}
	// The source streams ahead of the check, so later chunks may be sent
	// twice too; the object was fetched once from 0, the bad chunk twice.
	got := log.served(0)
	count := func(off int64) (n int) {
		for _, o := range got {
			if o == off {
				n++
			}
		}
		return n
	}
	if count(0) != 1 || count(raylet.ChunkBytes) != 2 {
		t.Fatalf("served offsets %v; want 0 once and %d twice", got, raylet.ChunkBytes)
	}
}

// TestPullOfLostObjectFailsPromptly: when no location has the object (one
// is down, one never had it, one stalls), MapObjects says ERROR_OBJECT_LOST
// and names each source and why.
func TestPullOfLostObjectFailsPromptly(t *testing.T) {
	nodes, log := startPullNodes(t, 3)
	empty, dst, stalls, ctx := nodes[0], nodes[1], nodes[2], testCtx(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := lis.Addr().String()
	lis.Close()
	id := newObjectID(t)
	if err := putObject(ctx, stalls.rc, id, randomBytes(2*raylet.ChunkBytes), "", ""); err != nil {
		t.Fatal(err)
	}
	log.setFault(func(node int, _ ids.ObjectID, off int64) raylet.ChunkFault {
		if node == 2 && off > 0 {
			return raylet.ChunkStall
		}
		return raylet.ChunkOK
	})
	_, m := readMapped(t, ctx, dst.rc, "reader", id, down, empty.r.Address(), stalls.r.Address())
	if m.Error.GetKind() != pb.ErrorKind_ERROR_OBJECT_LOST {
		t.Fatalf("reply %v; want ERROR_OBJECT_LOST", m)
	}
	for _, want := range []string{down, empty.r.Address(), "object not found", stalls.r.Address(), "no data for"} {
		if !strings.Contains(m.Error.Message, want) {
			t.Fatalf("message %q does not mention %q", m.Error.Message, want)
		}
	}
	// Nothing of the failed pull is left behind.
	if u := dst.shm(t).Usage(); u.Objects != 0 || u.Allocated != 0 {
		t.Fatalf("after a failed pull: %+v", u)
	}
}
