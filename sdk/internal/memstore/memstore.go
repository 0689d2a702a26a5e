// Package memstore is an owner's object table: Ray's CoreWorkerMemoryStore
// (the value of every object this process owns or is fetching, inline or
// where it is stored, as a future that completes once) together with the
// ReferenceCounter's counts for the objects it owns.
//
// An owned object is kept while its count is above zero or a borrower
// holds it. The count is one for each ref handle of this process's
// (shared by every copy of that ref), one per task or actor call that
// takes it as an argument until that ends. A borrower is another process
// (or this one, for a value of its own that holds the ref) registered
// through the borrower protocol (sdk/internal/core/borrowers.go). Once
// both are gone the object leaves the table, the node copies of a stored
// value are queued to be freed (TakeFrees), OnReleased tells the owner's
// lineage and OnContainedFreed the refs the value held. A value completed
// after its object was released is freed at once.
//
// The store has its own lock, never held while it calls out.
package memstore

import (
	"sync"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// Object is one entry: a future of its value.
type Object struct {
	// mu guards ready and done. The channel is made only when someone
	// waits before the value is set: a driver with a million queued tasks
	// holds a million pending returns nobody waits on yet, and a channel
	// each was an eighth of its heap.
	mu    sync.Mutex
	ready chan struct{}
	val   *pb.ObjectValue
	done  bool

	// Owned objects only, guarded by Store.mu.
	owned bool
	refs  int32
	// borrowers holding it besides the count (nil: none).
	borrowers map[Borrow]struct{}
	// more is what few objects have (nil: none), kept out of the entry of
	// every queued task's return.
	more *objectMore
}

// objectMore is an object's rarely set fields.
type objectMore struct {
	copies []string // nodes that pulled a copy since the value was set
	actor  string   // the actor whose call returns it, if any
}

// copies are the nodes that pulled a copy since the value was set.
func (o *Object) copies() []string {
	if o.more == nil {
		return nil
	}
	return o.more.copies
}

// Borrow is one registration of a borrower: a process (its CoreWorker
// address) holding live refs (Outer zero) or a value that holds the ref
// (Outer: that value's object).
type Borrow struct {
	Addr  string
	Outer ids.ObjectID
}

// closed is the Ready channel of every object set before anyone waited.
var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Ready is closed once the value is set.
func (o *Object) Ready() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ready == nil {
		if o.done {
			return closed
		}
		o.ready = make(chan struct{})
	}
	return o.ready
}

// IsReady says whether the value is set.
func (o *Object) IsReady() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.done
}

// set sets the value once, waking those waiting; false if it was set.
func (o *Object) set(v *pb.ObjectValue) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return false
	}
	o.val, o.done = v, true
	if o.ready != nil {
		close(o.ready)
	}
	return true
}

// Raw is the value as completed (without the copies learnt since); only
// after Ready.
func (o *Object) Raw() *pb.ObjectValue { return o.val }

// Owned says whether this process owns the object (counts apply).
func (o *Object) Owned() bool { return o.owned }

// Actor is the actor whose call returns the object ("" for a task or Put).
func (o *Object) Actor() string {
	if o.more == nil {
		return ""
	}
	return o.more.actor
}

// Done returns an object that is ready with v, in no table.
func Done(v *pb.ObjectValue) *Object {
	return &Object{val: v, done: true}
}

// Config wires a Store to its owner.
type Config struct {
	// OnReleased is told (without the lock) that an owned object's count
	// reached zero and it left the table.
	OnReleased func(id ids.ObjectID)
	// OnContainedFreed is told (without the lock) that the value of an
	// owned object that held refs (contained) was dropped.
	OnContainedFreed func(outer ids.ObjectID, contained []*pb.ObjectRefInfo)
}

// Store is the table.
type Store struct {
	cfg Config

	mu      sync.Mutex
	objects map[ids.ObjectID]*Object
	changed chan struct{} // closed and replaced when any object completes
	// Node copies of released objects, by raylet, until TakeFrees.
	toFree     map[string][]ids.ObjectID
	freeSignal chan struct{}
	// byBorrower indexes the objects each borrower process holds.
	byBorrower map[string]map[ids.ObjectID]int
	// contained are the values that held refs dropped under the lock,
	// for OnContainedFreed once it is released.
	contained []containedFree
	// early are removals of borrows registered through task results that
	// arrived before the result did (AddBorrowerVia skips those).
	early map[viaKey]struct{}
}

type viaKey struct {
	id   ids.ObjectID
	addr string
	task ids.TaskID
}

// maxEarly bounds the early removals remembered (a result that never
// comes, its worker dead, leaves one behind).
const maxEarly = 10000

type containedFree struct {
	outer ids.ObjectID
	refs  []*pb.ObjectRefInfo
}

// New returns an empty store.
func New(cfg Config) *Store {
	return &Store{cfg: cfg, objects: map[ids.ObjectID]*Object{}, changed: make(chan struct{}),
		toFree: map[string][]ids.ObjectID{}, freeSignal: make(chan struct{}, 1), byBorrower: map[string]map[ids.ObjectID]int{}}
}

// Get returns the entry of id, or nil.
func (s *Store) Get(id ids.ObjectID) *Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objects[id]
}

// Fetching returns the entry of a borrowed object, adding a pending one
// (added: the caller fetches it from its owner and completes it).
func (s *Store) Fetching(id ids.ObjectID) (o *Object, added bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o = s.objects[id]; o != nil {
		return o, false
	}
	o = &Object{}
	s.objects[id] = o
	return o, true
}

// NewOwned adds owned objects, pending, each with the one reference of the
// handle the caller makes for it; actor names the actor whose call returns
// them ("" otherwise).
func (s *Store) NewOwned(objs []ids.ObjectID, actor string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range objs {
		o := s.objects[id]
		if o == nil {
			o = &Object{}
			s.objects[id] = o
		}
		o.owned = true
		if actor != "" {
			o.more = &objectMore{actor: actor}
		}
		o.refs++
	}
}

// Complete sets the values of objs (vals[i] for objs[i]); an object no
// longer in the table was released before it was made: its stored copy
// is freed.
func (s *Store) Complete(objs []ids.ObjectID, vals []*pb.ObjectValue) {
	s.mu.Lock()
	changed := false
	defer func() {
		flush := len(s.contained) > 0
		s.mu.Unlock()
		if flush {
			s.flushContained()
		}
	}()
	for i, id := range objs {
		o := s.objects[id]
		if o == nil {
			s.freeLaterLocked(id, vals[i], nil)
			s.containedLocked(id, vals[i])
			continue
		}
		if o.set(vals[i]) {
			changed = true
		}
	}
	if changed {
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// Changed is closed when an object completes after this call.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// AddRefs counts one more reference to each of objs that is owned and in
// the table, and returns those it counted.
func (s *Store) AddRefs(objs []ids.ObjectID) []ids.ObjectID {
	var counted []ids.ObjectID
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range objs {
		if o := s.objects[id]; o != nil && o.owned {
			o.refs++
			counted = append(counted, id)
		}
	}
	return counted
}

// PinOrCreate counts a reference to an owned object, adding it pending
// (created) when it left the table: the caller then makes it again or
// fails it.
func (s *Store) PinOrCreate(id ids.ObjectID) (o *Object, created bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o = s.objects[id]; o == nil {
		o = &Object{owned: true}
		s.objects[id] = o
		created = true
	}
	o.refs++
	return o, created
}

// DecRef drops one reference to an owned object; the last one, with no
// borrower left, removes it (see the package comment).
func (s *Store) DecRef(id ids.ObjectID) {
	s.mu.Lock()
	o := s.objects[id]
	if o == nil || !o.owned {
		s.mu.Unlock()
		return
	}
	o.refs--
	s.maybeReleaseLocked(id, o)
}

// maybeReleaseLocked removes an owned object nobody holds any more, and
// unlocks.
func (s *Store) maybeReleaseLocked(id ids.ObjectID, o *Object) {
	if o.refs > 0 || len(o.borrowers) > 0 {
		s.mu.Unlock()
		return
	}
	delete(s.objects, id)
	if o.IsReady() {
		s.freeLaterLocked(id, o.val, o.copies())
		s.containedLocked(id, o.val)
	}
	// Not ready: Complete frees the value when it arrives.
	flush := len(s.contained) > 0
	s.mu.Unlock()
	if flush {
		s.flushContained()
	}
	if s.cfg.OnReleased != nil {
		s.cfg.OnReleased(id)
	}
}

// AddBorrower registers b as a borrower of an owned object; false if the
// object is not in the table (released) or not owned here. Registering
// the same b twice is one registration.
func (s *Store) AddBorrower(id ids.ObjectID, b Borrow) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[id]
	if o == nil || !o.owned {
		return false
	}
	if o.borrowers == nil {
		o.borrowers = map[Borrow]struct{}{}
	}
	if _, ok := o.borrowers[b]; ok {
		return true
	}
	o.borrowers[b] = struct{}{}
	m := s.byBorrower[b.Addr]
	if m == nil {
		m = map[ids.ObjectID]int{}
		s.byBorrower[b.Addr] = m
	}
	m[id]++
	return true
}

// AddBorrowerVia registers b from the result of task (see
// RemoveBorrowerVia); false as AddBorrower's, or when the borrow was
// removed already.
func (s *Store) AddBorrowerVia(id ids.ObjectID, b Borrow, task ids.TaskID) bool {
	s.mu.Lock()
	k := viaKey{id, b.Addr, task}
	if _, ok := s.early[k]; ok {
		delete(s.early, k)
		s.mu.Unlock()
		return true
	}
	s.mu.Unlock()
	return s.AddBorrower(id, b)
}

// RemoveBorrowerVia unregisters a borrow registered through the result of
// task; one whose result has not been taken yet is remembered, so that
// the registration, when it comes, is skipped.
func (s *Store) RemoveBorrowerVia(id ids.ObjectID, b Borrow, task ids.TaskID) {
	s.mu.Lock()
	if o := s.objects[id]; o != nil && o.owned {
		if _, ok := o.borrowers[b]; ok {
			s.unborrowLocked(id, o, b)
			s.maybeReleaseLocked(id, o)
			return
		}
	}
	if s.early == nil || len(s.early) >= maxEarly {
		s.early = map[viaKey]struct{}{}
	}
	s.early[viaKey{id, b.Addr, task}] = struct{}{}
	s.mu.Unlock()
}

// RemoveBorrower unregisters b; the object goes if nothing else holds it.
func (s *Store) RemoveBorrower(id ids.ObjectID, b Borrow) {
	s.mu.Lock()
	o := s.objects[id]
	if o == nil || !o.owned {
		s.mu.Unlock()
		return
	}
	if _, ok := o.borrowers[b]; !ok {
		s.mu.Unlock()
		return
	}
	s.unborrowLocked(id, o, b)
	s.maybeReleaseLocked(id, o)
}

func (s *Store) unborrowLocked(id ids.ObjectID, o *Object, b Borrow) {
	delete(o.borrowers, b)
	if m := s.byBorrower[b.Addr]; m != nil {
		if m[id]--; m[id] <= 0 {
			delete(m, id)
		}
		if len(m) == 0 {
			delete(s.byBorrower, b.Addr)
		}
	}
}

// DropBorrower unregisters every borrow of a process (it died) and
// returns how many objects it held.
func (s *Store) DropBorrower(addr string) int {
	s.mu.Lock()
	m := s.byBorrower[addr]
	objs := make([]ids.ObjectID, 0, len(m))
	for id := range m {
		objs = append(objs, id)
	}
	s.mu.Unlock()
	for _, id := range objs {
		s.mu.Lock()
		o := s.objects[id]
		if o == nil {
			s.mu.Unlock()
			continue
		}
		for b := range o.borrowers {
			if b.Addr == addr {
				s.unborrowLocked(id, o, b)
			}
		}
		s.maybeReleaseLocked(id, o)
	}
	return len(objs)
}

// BorrowerAddrs are the processes that borrow objects owned here.
func (s *Store) BorrowerAddrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byBorrower))
	for a := range s.byBorrower {
		out = append(out, a)
	}
	return out
}

// Borrowed is how many owned objects have a borrower other than self.
func (s *Store) Borrowed(self string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[ids.ObjectID]struct{}{}
	for a, m := range s.byBorrower {
		if a != self {
			for id := range m {
				seen[id] = struct{}{}
			}
		}
	}
	return len(seen)
}

// Forget removes the entry of an object this process does not own (its
// last borrowed ref is gone); owned entries are left alone.
func (s *Store) Forget(id ids.ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.objects[id]; o != nil && !o.owned {
		delete(s.objects, id)
	}
}

// Renew replaces a ready, stored, owned object by a pending one with the
// same references, for a rebuild: everyone who waits for it from now on
// waits for the new run. It reports whether it did (released, pending
// and inline objects are left alone).
func (s *Store) Renew(id ids.ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[id]
	if o == nil || !o.IsReady() || o.val.GetLocation() == "" {
		return false
	}
	var more *objectMore
	if a := o.Actor(); a != "" {
		more = &objectMore{actor: a}
	}
	s.objects[id] = &Object{owned: true, refs: o.refs, borrowers: o.borrowers, more: more}
	return true
}

// AddCopy records a node that pulled a copy of an owned object; a copy of
// an object released already is freed at once.
func (s *Store) AddCopy(id ids.ObjectID, loc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[id]
	if o == nil || !o.owned {
		s.toFree[loc] = append(s.toFree[loc], id)
		s.signalLocked()
		return
	}
	if o.val != nil && o.val.Location == loc {
		return
	}
	for _, l := range o.copies() {
		if l == loc {
			return
		}
	}
	if o.more == nil {
		o.more = &objectMore{}
	}
	o.more.copies = append(o.more.copies, loc)
}

// Value is a ready object's value with the copies learnt since it
// completed. Inline values are returned without locking.
func (s *Store) Value(o *Object) *pb.ObjectValue {
	v := o.val
	if v.Location == "" {
		return v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(o.copies()) == 0 {
		return v
	}
	// o.val is shared with specs already sent: never modify it.
	return &pb.ObjectValue{Format: v.Format, Location: v.Location, Copies: append(append([]string(nil), v.Copies...), o.copies()...)}
}

// Len is how many objects the table holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects)
}

// FreeSignal receives a value when frees were queued.
func (s *Store) FreeSignal() <-chan struct{} { return s.freeSignal }

// TakeFrees returns the node copies queued to be freed, by raylet.
func (s *Store) TakeFrees() map[string][]ids.ObjectID {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.toFree
	s.toFree = map[string][]ids.ObjectID{}
	return batch
}

func (s *Store) freeLaterLocked(id ids.ObjectID, v *pb.ObjectValue, copies []string) {
	if v == nil || v.Location == "" {
		return
	}
	for _, loc := range append([]string{v.Location}, append(v.Copies, copies...)...) {
		s.toFree[loc] = append(s.toFree[loc], id)
	}
	s.signalLocked()
}

// containedLocked queues a dropped value's refs for OnContainedFreed.
func (s *Store) containedLocked(id ids.ObjectID, v *pb.ObjectValue) {
	if v != nil && len(v.Contained) > 0 && s.cfg.OnContainedFreed != nil {
		s.contained = append(s.contained, containedFree{id, v.Contained})
	}
}

// flushContained calls OnContainedFreed for what containedLocked queued;
// called without the lock.
func (s *Store) flushContained() {
	s.mu.Lock()
	batch := s.contained
	s.contained = nil
	s.mu.Unlock()
	for _, c := range batch {
		s.cfg.OnContainedFreed(c.outer, c.refs)
	}
}

func (s *Store) signalLocked() {
	select {
	case s.freeSignal <- struct{}{}:
	default:
	}
}
