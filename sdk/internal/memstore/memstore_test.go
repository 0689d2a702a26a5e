package memstore

import (
	"sort"
	"sync"
	"testing"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

func oid(n uint32) ids.ObjectID {
	return ids.ReturnID(ids.NewTaskID("job", ids.DriverTaskID("job"), uint64(n)), 1)
}

func stored(loc string) *pb.ObjectValue { return &pb.ObjectValue{Location: loc} }

func inline(b string) *pb.ObjectValue { return &pb.ObjectValue{Data: []byte(b)} }

type released struct {
	mu  sync.Mutex
	ids []ids.ObjectID
}

func (r *released) add(id ids.ObjectID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
}

func (r *released) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

func frees(s *Store) map[string]int {
	out := map[string]int{}
	for loc, objs := range s.TakeFrees() {
		out[loc] = len(objs)
	}
	return out
}

func TestCountsKeepAndRelease(t *testing.T) {
	var rel released
	s := New(Config{OnReleased: rel.add})
	a, b := oid(1), oid(2)
	s.NewOwned([]ids.ObjectID{a, b}, "")
	objs := []*Object{s.Get(a), s.Get(b)}
	if objs[0].IsReady() || !objs[0].Owned() {
		t.Fatalf("a new owned object: ready %v owned %v", objs[0].IsReady(), objs[0].Owned())
	}
	changed := s.Changed()
	s.Complete([]ids.ObjectID{a, b}, []*pb.ObjectValue{stored("node-1"), inline("x")})
	select {
	case <-changed:
	default:
		t.Fatal("Changed was not closed by a completion")
	}
	if !objs[0].IsReady() || s.Value(objs[1]).String() != inline("x").String() {
		t.Fatal("completed objects are not ready with their values")
	}
	// A task takes a as an argument: its count is 2.
	if got := s.AddRefs([]ids.ObjectID{a, oid(99)}); len(got) != 1 || got[0] != a {
		t.Fatalf("AddRefs counted %v; want only a", got)
	}
	s.DecRef(a) // the handle
	if s.Get(a) == nil || rel.count() != 0 {
		t.Fatal("a was released while a task still held it")
	}
	s.AddCopy(a, "node-2")
	s.DecRef(a) // the task
	if s.Get(a) != nil || rel.count() != 1 {
		t.Fatal("a was kept after its last reference")
	}
	if f := frees(s); f["node-1"] != 1 || f["node-2"] != 1 || len(f) != 2 {
		t.Fatalf("frees %v; want a's primary and its copy", f)
	}
	s.DecRef(b) // inline: nothing to free on nodes
	if f := frees(s); len(f) != 0 || s.Len() != 0 || rel.count() != 2 {
		t.Fatalf("after b: frees %v, %d objects, %d released", f, s.Len(), rel.count())
	}
	s.DecRef(b) // a second drop of a released object is harmless
	if rel.count() != 2 {
		t.Fatal("a released object was released twice")
	}
}

func TestValueArrivingAfterReleaseIsFreed(t *testing.T) {
	s := New(Config{})
	a := oid(1)
	s.NewOwned([]ids.ObjectID{a}, "")
	s.DecRef(a)
	s.Complete([]ids.ObjectID{a}, []*pb.ObjectValue{stored("node-3")})
	if f := frees(s); f["node-3"] != 1 {
		t.Fatalf("frees %v; want the late value's copy on node-3", f)
	}
	// A copy reported for a released object is freed too.
	s.AddCopy(a, "node-4")
	select {
	case <-s.FreeSignal():
	default:
		t.Fatal("no free signalled")
	}
	if f := frees(s); f["node-4"] != 1 {
		t.Fatalf("frees %v; want node-4's copy", f)
	}
}

func TestRenewAndPinOrCreate(t *testing.T) {
	s := New(Config{})
	a, b := oid(1), oid(2)
	s.NewOwned([]ids.ObjectID{a, b}, "actor-1")
	if s.Renew(a) {
		t.Fatal("a pending object was renewed")
	}
	s.Complete([]ids.ObjectID{a, b}, []*pb.ObjectValue{stored("node-1"), inline("v")})
	if s.Renew(b) {
		t.Fatal("an inline object (never lost) was renewed")
	}
	old := s.Get(a)
	if !s.Renew(a) {
		t.Fatal("a stored object was not renewed")
	}
	o := s.Get(a)
	if o == old || o.IsReady() || o.Actor() != "actor-1" {
		t.Fatal("the renewed object is not a fresh pending entry")
	}
	s.DecRef(a) // the one reference carried over
	if s.Get(a) != nil {
		t.Fatal("the renewed object lost its count")
	}
	// A freed argument is made again: pinned and pending.
	p, created := s.PinOrCreate(a)
	if !created || p.IsReady() || !p.Owned() {
		t.Fatalf("PinOrCreate of a released object: created %v", created)
	}
	if _, created := s.PinOrCreate(a); created {
		t.Fatal("PinOrCreate made a second entry")
	}
	s.DecRef(a)
	s.DecRef(a)
	if s.Get(a) != nil {
		t.Fatal("the remade object outlived its pins")
	}
}

func TestFetchingAddsOnce(t *testing.T) {
	s := New(Config{})
	a := oid(7)
	o, added := s.Fetching(a)
	o2, added2 := s.Fetching(a)
	if !added || added2 || o != o2 || o.Owned() {
		t.Fatalf("Fetching: added %v then %v, same %v", added, added2, o == o2)
	}
	s.DecRef(a) // not owned: no count
	if s.Get(a) == nil {
		t.Fatal("a borrowed entry was dropped by DecRef")
	}
}

// TestConcurrentCounts: many goroutines take and drop references while
// values complete; every object is released exactly once, when its last
// reference goes.
func TestConcurrentCounts(t *testing.T) {
	var rel released
	s := New(Config{OnReleased: rel.add})
	const n = 200
	objs := make([]ids.ObjectID, n)
	for i := range objs {
		objs[i] = oid(uint32(i))
	}
	s.NewOwned(objs, "")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				s.AddRefs(objs[i : i+1])
				s.Complete(objs[i:i+1], []*pb.ObjectValue{stored("node-1")})
				s.DecRef(objs[i])
			}
		}()
	}
	wg.Wait()
	if rel.count() != 0 || s.Len() != n {
		t.Fatalf("released %d of %d objects still held", rel.count(), n)
	}
	for _, id := range objs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.DecRef(id)
		}()
	}
	wg.Wait()
	rel.mu.Lock()
	got := append([]ids.ObjectID(nil), rel.ids...)
	rel.mu.Unlock()
	sort.Slice(got, func(i, j int) bool { return got[i].String() < got[j].String() })
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("object %s released twice", got[i])
		}
	}
	if len(got) != n || s.Len() != 0 || frees(s)["node-1"] != n {
		t.Fatalf("released %d of %d; %d left", len(got), n, s.Len())
	}
}

// TestBorrowersKeepTheObject: an object whose count reached zero stays
// while a borrower holds it; the last borrower's removal (or its process's
// death) frees it, and the refs its value held are reported.
func TestBorrowersKeepTheObject(t *testing.T) {
	var rel released
	var containedOf []ids.ObjectID
	s := New(Config{OnReleased: rel.add, OnContainedFreed: func(outer ids.ObjectID, refs []*pb.ObjectRefInfo) {
		containedOf = append(containedOf, outer)
	}})
	a, b, outer := oid(1), oid(2), oid(3)
	s.NewOwned([]ids.ObjectID{a, b}, "")
	v := stored("node-1")
	v.Contained = []*pb.ObjectRefInfo{{ObjectId: outer[:], Owner: "w"}}
	s.Complete([]ids.ObjectID{a, b}, []*pb.ObjectValue{v, inline("x")})
	if !s.AddBorrower(a, Borrow{Addr: "w1"}) || !s.AddBorrower(a, Borrow{Addr: "w1"}) || !s.AddBorrower(a, Borrow{Addr: "w2", Outer: outer}) {
		t.Fatal("AddBorrower of an owned object failed")
	}
	if !s.AddBorrower(b, Borrow{Addr: "w2"}) {
		t.Fatal("AddBorrower of b failed")
	}
	s.DecRef(a)
	s.DecRef(b)
	if s.Get(a) == nil || s.Get(b) == nil || rel.count() != 0 {
		t.Fatal("a borrowed object was released at count zero")
	}
	if got := s.Borrowed("self"); got != 2 {
		t.Fatalf("Borrowed = %d; want 2", got)
	}
	s.RemoveBorrower(a, Borrow{Addr: "w1"}) // registered twice: one registration
	if s.Get(a) == nil {
		t.Fatal("a was released while w2 still holds it by a value")
	}
	if n := s.DropBorrower("w2"); n != 2 {
		t.Fatalf("DropBorrower(w2) dropped %d objects; want 2", n)
	}
	if s.Get(a) != nil || s.Get(b) != nil || rel.count() != 2 {
		t.Fatalf("objects left after every borrower went: a %v b %v released %d", s.Get(a) != nil, s.Get(b) != nil, rel.count())
	}
	if len(containedOf) != 1 || containedOf[0] != a {
		t.Fatalf("contained reported for %v; want [a]", containedOf)
	}
	if f := frees(s); f["node-1"] != 1 {
		t.Fatalf("frees = %v; want a's copy on node-1", f)
	}
	if s.AddBorrower(a, Borrow{Addr: "w3"}) {
		t.Fatal("AddBorrower of a released object succeeded")
	}
	if len(s.BorrowerAddrs()) != 0 {
		t.Fatalf("borrowers left: %v", s.BorrowerAddrs())
	}
}

// TestReleasedBeforeCompleteReportsContained: a value that arrives for an
// object released already is dropped with its refs reported.
func TestReleasedBeforeCompleteReportsContained(t *testing.T) {
	var got []ids.ObjectID
	s := New(Config{OnContainedFreed: func(outer ids.ObjectID, _ []*pb.ObjectRefInfo) { got = append(got, outer) }})
	a := oid(1)
	s.NewOwned([]ids.ObjectID{a}, "")
	s.DecRef(a)
	v := inline("x")
	v.Contained = []*pb.ObjectRefInfo{{ObjectId: a[:], Owner: "w"}}
	s.Complete([]ids.ObjectID{a}, []*pb.ObjectValue{v})
	if len(got) != 1 {
		t.Fatalf("contained reported %d times; want 1", len(got))
	}
}

// TestBorrowViaResultRemovedFirst: a borrow registered through a task's
// result whose removal arrives before the result is not registered by the
// late result, so the object is freed and nothing is left behind.
func TestBorrowViaResultRemovedFirst(t *testing.T) {
	var rel released
	s := New(Config{OnReleased: rel.add})
	a := oid(1)
	task := ids.NewTaskID("job", ids.DriverTaskID("job"), 7)
	s.NewOwned([]ids.ObjectID{a}, "")
	s.Complete([]ids.ObjectID{a}, []*pb.ObjectValue{stored("node-1")})
	w := Borrow{Addr: "w1"}
	s.RemoveBorrowerVia(a, w, task) // overtook the result
	if !s.AddBorrowerVia(a, w, task) {
		t.Fatal("the late registration failed")
	}
	s.DecRef(a)
	if s.Get(a) != nil || rel.count() != 1 {
		t.Fatal("the object was kept by a registration removed before it came")
	}
	// In order, the removal unregisters.
	b := oid(2)
	s.NewOwned([]ids.ObjectID{b}, "")
	s.Complete([]ids.ObjectID{b}, []*pb.ObjectValue{inline("x")})
	s.AddBorrowerVia(b, w, task)
	s.DecRef(b)
	if s.Get(b) == nil {
		t.Fatal("a borrowed object was freed")
	}
	s.RemoveBorrowerVia(b, w, task)
	if s.Get(b) != nil {
		t.Fatal("the removal in order did not free it")
	}
}
