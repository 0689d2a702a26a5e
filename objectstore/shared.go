package objectstore

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/objectstore/arena"
	"github.com/manta-ray/manta/objectstore/spill"
)

// SharedOptions configure a Shared store. The zero value is usable: an
// arena of DefaultCapacity bytes in /dev/shm and no spilling.
type SharedOptions struct {
	// Path is the arena file; empty means arena.DefaultPath().
	Path string
	// Capacity is the arena's size in bytes (--object-store-memory); zero
	// means DefaultCapacity().
	Capacity int64
	// SpillDir is where objects go when memory runs short (in a fresh
	// directory inside it that Close removes); empty disables spilling, so
	// a full arena of primary copies refuses new objects.
	SpillDir string
	// SpillEngine picks how spilled objects are stored; the zero value is
	// one file per object (measured ~2x Badger's write rate here, and a
	// delete returns its space at once, with no value-log GC).
	SpillEngine SpillEngine
	// SpillLimit caps the bytes on disk (zero: whatever the disk holds).
	SpillLimit int64
	// SpillThreshold is the fraction of Capacity held by primary copies
	// above which the store spills in the background; zero means 0.8.
	SpillThreshold float64
	Logger         *zap.Logger
	Knobs          SharedKnobs
}

// SharedKnobs are testing hooks; the zero value does nothing.
type SharedKnobs struct {
	// AfterSpillPass runs on the spill loop after each background pass.
	AfterSpillPass func()
}

// SpillEngine is a way to keep spilled objects on disk.
type SpillEngine uint8

const (
	SpillFiles  SpillEngine = iota // one file per object
	SpillBadger                    // values in a Badger database
)

// freeBytes is the space an unprivileged process may still use in dir's
// file system.
func freeBytes(dir string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Bsize <= 0 {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}

// DefaultCapacity is 30 % of the machine's RAM, Ray's default.
func DefaultCapacity() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 1 << 30
	}
	return int64(si.Totalram) * int64(si.Unit) * 3 / 10
}

// CreateOptions describe a new object.
type CreateOptions struct {
	Format int32
	// Secondary marks a copy pulled from another node: it is dropped (LRU)
	// when space is needed instead of being spilled. The zero value is a
	// primary copy, which is never dropped while it exists here.
	Secondary bool
}

// Tier is where an object's bytes are.
type Tier uint8

const (
	Absent   Tier = iota // not in this store
	InMemory             // in the arena (possibly also on disk)
	Spilled              // only on disk
)

func (t Tier) String() string {
	switch t {
	case InMemory:
		return "memory"
	case Spilled:
		return "spilled"
	}
	return "absent"
}

// Location says where an object is, for the raylet's location reports and
// for a worker that maps the arena: InMemory objects are (Arena, Offset,
// Size); Spilled ones name their spill location.
type Location struct {
	ID      ids.ObjectID
	Tier    Tier
	Size    int64
	Format  int32
	Primary bool
	Arena   string
	Offset  int64
	Spill   string
}

// Usage is a snapshot of the store's accounting.
type Usage struct {
	Capacity      int64 // arena bytes
	Committed     int64 // arena bytes backed by memory (the high-water mark)
	Allocated     int64 // arena bytes in use (rounded to arena.Align)
	PrimaryMemory int64 // of Allocated, primary copies
	SpilledBytes  int64 // bytes on disk
	Objects       int64
	LiveBytes     int64 // sizes of all objects, in memory or on disk
	Pinned        int64 // objects held by readers now
	FreeRanges    int
	LargestFree   int64
}

// entry is one object. Fields are guarded by Shared.mu.
type entry struct {
	id ids.ObjectID
	// key names the disk copy: the ID plus an incarnation number, so a
	// deleted object whose spill or restore is still running never touches
	// the disk copy of a new object with the same ID.
	key       []byte
	size      int64
	format    int32
	primary   bool
	sealed    bool
	inMem     bool // bytes at off in the arena
	off       int64
	onDisk    bool // a copy is in the spiller
	spilling  bool // a spill is reading the arena copy now
	restoring bool // a restore is writing the arena copy now
	deleted   bool // out of the map; freed once nobody uses it
	// deleteOnSeal is a Delete that came while the object was being
	// written; Seal (or Abort) carries it out.
	deleteOnSeal bool
	pins         int // open Views
	lru          *list.Element
}

// Shared is a node's object store in shared memory: objects live in one
// mmap'ed arena file that workers map read-only, primary copies spill to
// disk under memory pressure and come back on access, and secondary copies
// are dropped LRU. Objects are immutable once sealed; a reader's View pins
// the bytes so they are neither freed, reused nor moved until Release.
type Shared struct {
	opts     SharedOptions
	log      *zap.Logger
	arena    *arena.Map
	mem      []byte
	spiller  spill.Spiller
	spillDir string

	mu         sync.Mutex
	changed    *sync.Cond // space freed, restore or spill done, close
	alloc      *arena.Allocator
	objs       map[ids.ObjectID]*entry
	lru        *list.List // sealed objects in memory, least recently used first
	primaryMem int64
	spilled    int64
	live       int64
	pinned     int64
	inflight   int   // spills and restores touching the arena outside mu
	spills     int   // of inflight, spills (they free memory when done)
	garbage    int64 // bytes deleted from the spiller since its last GC
	gen        uint64
	closed     bool
	counters   Counters // cumulative, for metrics

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ ZeroCopy = (*Shared)(nil)

// NewShared creates the arena (committed lazily, as objects need it) and, with SpillDir set, the
// spiller, and starts the background spill loop that Close stops.
func NewShared(o SharedOptions) (*Shared, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Path == "" {
		o.Path = arena.DefaultPath()
		if gone, err := arena.RemoveStale(filepath.Dir(o.Path)); err == nil && len(gone) > 0 {
			o.Logger.Warn("removed arenas of dead processes", zap.Strings("paths", gone))
		}
	}
	if o.Capacity == 0 {
		o.Capacity = DefaultCapacity()
		// A default larger than the file system can hold would only fail
		// later (the arena commits lazily), so cap it now and say so.
		if free, ok := freeBytes(filepath.Dir(o.Path)); ok && o.Capacity > free {
			o.Logger.Warn("default object store capacity capped to the free space of the arena's file system",
				zap.Int64("default", o.Capacity), zap.Int64("capacity", free), zap.String("dir", filepath.Dir(o.Path)))
			o.Capacity = free
		}
	} else if free, ok := freeBytes(filepath.Dir(o.Path)); ok && o.Capacity > free {
		o.Logger.Warn("object store capacity exceeds the free space of the arena's file system; it will shrink when that runs out",
			zap.Int64("capacity", o.Capacity), zap.Int64("free", free), zap.String("dir", filepath.Dir(o.Path)))
	}
	if o.SpillThreshold <= 0 || o.SpillThreshold > 1 {
		o.SpillThreshold = 0.8
	}
	log := o.Logger.Named("objectstore")
	m, err := arena.Create(o.Path, o.Capacity)
	if err != nil {
		return nil, err
	}
	s := &Shared{
		opts: o, log: log, arena: m, mem: m.Bytes(),
		alloc: arena.NewAllocator(m.Size()),
		objs:  map[ids.ObjectID]*entry{},
		lru:   list.New(),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	s.changed = sync.NewCond(&s.mu)
	if o.SpillDir != "" {
		// A directory of our own inside SpillDir: spilled bytes die with this
		// store, and Close may remove it without touching anything else.
		if err := os.MkdirAll(o.SpillDir, 0o700); err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("objectstore: spill dir: %w", err)
		}
		s.spillDir, err = os.MkdirTemp(o.SpillDir, "manta-spill-")
		if err == nil {
			if o.SpillEngine == SpillBadger {
				s.spiller, err = spill.OpenBadger(s.spillDir, log)
			} else {
				s.spiller, err = spill.OpenFiles(s.spillDir)
			}
		}
		if err != nil {
			_ = m.Close()
			if s.spillDir != "" {
				_ = os.RemoveAll(s.spillDir)
			}
			return nil, fmt.Errorf("objectstore: spill store: %w", err)
		}
	}
	log.Info("object store ready", zap.String("arena", m.Path()), zap.Int64("capacity", m.Size()),
		zap.String("spill_dir", o.SpillDir))
	go s.spillLoop()
	return s, nil
}

// ArenaPath is the file workers pass to arena.OpenReader.
func (s *Shared) ArenaPath() string { return s.arena.Path() }

// Create reserves size bytes for a new object and returns them for the
// caller to fill; Seal publishes it, Abort discards it. The slice must not
// be written after Seal. A second Create of a stored ID returns
// ErrObjectExists.
func (s *Shared) Create(id ids.ObjectID, size int64, o CreateOptions) ([]byte, error) {
	off, err := s.Reserve(id, size, o)
	if err != nil {
		return nil, err
	}
	return s.mem[off : off+size : off+size], nil
}

// Reserve is Create for a writer in another process: it returns the
// object's offset in the arena file (arena.OpenWriter) instead of a slice.
func (s *Shared) Reserve(id ids.ObjectID, size int64, o CreateOptions) (int64, error) {
	if size < 0 {
		return 0, fmt.Errorf("%w: negative size %d", rpcerr.ErrInvalidArgument, size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNewLocked(id, size); err != nil {
		return 0, err
	}
	n := arena.RoundUp(size)
	off, err := s.makeRoomLocked(n, size)
	if err != nil {
		return 0, err
	}
	if _, ok := s.objs[id]; ok { // created by another caller while we made room
		s.alloc.Free(off, n)
		return 0, fmt.Errorf("%w: %s", ErrObjectExists, id)
	}
	s.gen++
	key := binary.BigEndian.AppendUint64(append([]byte(nil), id[:]...), s.gen)
	e := &entry{id: id, key: key, size: size, format: o.Format, primary: !o.Secondary, inMem: true, off: off}
	s.objs[id] = e
	s.live += n
	if e.primary {
		s.primaryMem += n
	}
	return off, nil
}

func (s *Shared) checkNewLocked(id ids.ObjectID, size int64) error {
	if s.closed {
		return ErrStoreClosed
	}
	if _, ok := s.objs[id]; ok {
		return fmt.Errorf("%w: %s", ErrObjectExists, id)
	}
	n := arena.RoundUp(size)
	if n > s.alloc.Size() {
		return fmt.Errorf("%w: object of %d bytes exceeds the store's %d bytes of memory", ErrObjectStoreFull, size, s.alloc.Size())
	}
	if s.opts.SpillLimit > 0 && s.live+n > s.alloc.Size()+s.opts.SpillLimit {
		return fmt.Errorf("%w: object of %d bytes does not fit: %d bytes live of %d memory + %d disk",
			ErrObjectStoreFull, size, s.live, s.alloc.Size(), s.opts.SpillLimit)
	}
	return nil
}

// Seal makes a created object immutable and visible to Get.
func (s *Shared) Seal(id ids.ObjectID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objs[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrObjectNotFound, id)
	}
	if e.sealed {
		return nil
	}
	e.sealed = true
	e.lru = s.lru.PushBack(e)
	if e.deleteOnSeal { // deleted while being written: its writer is done now
		s.removeLocked(e)
	}
	s.changed.Broadcast()
	s.kickLocked()
	return nil
}

// Abort discards an object that was created but not sealed.
func (s *Shared) Abort(id ids.ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.objs[id]; ok && !e.sealed {
		s.removeLocked(e)
	}
}

// Put stores a copy of obj (the Store interface). A second Put of the same
// ID keeps the first value.
func (s *Shared) Put(id ids.ObjectID, obj Object) error {
	buf, err := s.Create(id, int64(len(obj.Data)), CreateOptions{Format: obj.Format})
	if errors.Is(err, ErrObjectExists) {
		return nil
	}
	if err != nil {
		return err
	}
	copy(buf, obj.Data)
	return s.Seal(id)
}

// Get returns a private copy of the object (the Store interface, whose
// callers keep Data indefinitely); Acquire reads in place.
func (s *Shared) Get(id ids.ObjectID) (Object, error) {
	v, err := s.Acquire(id)
	if err != nil {
		return Object{}, err
	}
	defer v.Release()
	return Object{Data: append([]byte(nil), v.Data...), Format: v.Format}, nil
}

// View is a pinned, read-only window on an object in the arena.
type View struct {
	Data   []byte // must not be written; valid until Release
	Format int32
	Offset int64 // in the arena file, for a worker's arena.Reader
	s      *Shared
	e      *entry
	once   sync.Once
}

// Release unpins the object. Release is idempotent.
func (v *View) Release() {
	v.once.Do(func() {
		s := v.s
		s.mu.Lock()
		defer s.mu.Unlock()
		v.e.pins--
		if v.e.pins == 0 {
			s.pinned--
			s.settleLocked(v.e)
		}
		s.changed.Broadcast()
	})
}

// Acquire pins a sealed object in memory, restoring it from disk first if
// it was spilled, and returns a view of its bytes. The bytes stay put
// until Release; the raylet also pins on behalf of a worker that reads the
// same range through its own arena.Reader.
func (s *Shared) Acquire(id ids.ObjectID) (*View, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return nil, ErrStoreClosed
		}
		e, ok := s.objs[id]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrObjectNotFound, id)
		}
		if !e.sealed {
			return nil, fmt.Errorf("%w: %s is not sealed yet", ErrObjectNotFound, id)
		}
		switch {
		case e.restoring:
			s.changed.Wait() // another reader is restoring it; share its work
			continue
		case e.inMem:
			return s.pinLocked(e), nil
		}
		if err := s.restoreLocked(e); err != nil {
			return nil, err
		}
	}
}

func (s *Shared) pinLocked(e *entry) *View {
	if e.pins == 0 {
		s.pinned++
	}
	e.pins++
	s.lru.MoveToBack(e.lru)
	return &View{Data: s.mem[e.off : e.off+e.size : e.off+e.size], Format: e.format, Offset: e.off, s: s, e: e}
}

// restoreLocked reads a spilled object back into the arena. The disk read
// runs without mu; e.restoring makes other readers wait for it.
func (s *Shared) restoreLocked(e *entry) error {
	e.restoring = true
	defer func() {
		e.restoring = false
		s.changed.Broadcast()
		s.settleLocked(e)
	}()
	n := arena.RoundUp(e.size)
	off, err := s.makeRoomLocked(n, e.size)
	if err != nil {
		return fmt.Errorf("restore %s: %w", e.id, err)
	}
	s.inflight++
	s.mu.Unlock()
	err = s.spiller.ReadInto(e.key, s.mem[off:off+e.size])
	s.mu.Lock()
	s.inflight--
	if err != nil {
		// The disk copy is gone or damaged and no other copy is here: the
		// object is lost on this node, so it leaves the store (Locate says
		// Absent) and the owner can rebuild or refetch it.
		s.alloc.Free(off, n)
		s.log.Warn("spilled object unreadable; dropping it", zap.Stringer("id", e.id), zap.Error(err))
		s.removeLocked(e)
		return fmt.Errorf("%w: restore %s from disk: %v", ErrObjectNotFound, e.id, err)
	}
	e.inMem, e.off = true, off
	e.lru = s.lru.PushBack(e)
	s.counters.Restores++
	s.counters.RestoredBytes += e.size
	if e.primary {
		s.primaryMem += n
	}
	s.kickLocked()
	return nil
}

// makeRoomLocked allocates n arena bytes, making room if needed: first by
// dropping unpinned secondary copies, then by freeing primaries that
// already have a disk copy, then by spilling the least recently used
// unpinned primary. Several victims may go when no single hole fits
// (fragmentation); objects are never moved, since other processes hold
// their offsets.
func (s *Shared) makeRoomLocked(n, size int64) (int64, error) {
	for {
		if s.closed {
			return 0, ErrStoreClosed
		}
		if n > s.alloc.Size() { // the arena shrank below this object
			return 0, fmt.Errorf("%w: object of %d bytes exceeds the store's %d bytes of memory", ErrObjectStoreFull, size, s.alloc.Size())
		}
		if off, ok := s.alloc.Alloc(n); ok {
			err := s.arena.Commit(off + n)
			if err == nil {
				return off, nil
			}
			s.alloc.Free(off, n)
			if !errors.Is(err, arena.ErrNoSpace) {
				return 0, fmt.Errorf("%w: %v", ErrObjectStoreFull, err)
			}
			// /dev/shm cannot back more than is committed (other arenas or
			// files took it): the arena shrinks to that, and room is made
			// below it by evicting and spilling, like any full arena.
			s.log.Warn("shared memory exhausted: the object store shrinks to what it holds",
				zap.Int64("capacity", s.alloc.Size()), zap.Int64("new_capacity", s.arena.Committed()), zap.Error(err))
			s.alloc.Truncate(s.arena.Committed())
			s.kickLocked()
			continue
		}
		var secondary, onDisk, primary *entry
		for el := s.lru.Front(); el != nil; el = el.Next() {
			e := el.Value.(*entry)
			if e.pins > 0 || e.spilling {
				continue
			}
			switch {
			case !e.primary:
				secondary = e
			case e.onDisk && onDisk == nil:
				onDisk = e
			case primary == nil:
				primary = e
			}
			if secondary != nil {
				break
			}
		}
		switch {
		case secondary != nil:
			s.removeLocked(secondary)
		case onDisk != nil:
			s.freeMemLocked(onDisk)
		case primary != nil && s.spiller != nil:
			if err := s.spillLocked(primary); err != nil {
				return 0, fmt.Errorf("%w: need %d bytes for an object of %d: %v", ErrObjectStoreFull, n, size, err)
			}
		case s.spills > 0:
			s.changed.Wait() // a background spill will free memory
		default:
			return 0, fmt.Errorf("%w: need %d bytes for an object of %d; %d of %d bytes in use, largest free range %d, %d objects pinned by readers, spilling %s",
				ErrObjectStoreFull, n, size, s.alloc.Used(), s.alloc.Size(), s.alloc.LargestFree(), s.pinned, onOff(s.spiller != nil))
		}
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// spillLocked writes e to disk without holding mu (readers may pin it
// meanwhile: the bytes are immutable) and frees its memory if nobody did.
func (s *Shared) spillLocked(e *entry) error {
	if s.opts.SpillLimit > 0 && s.spilled+e.size > s.opts.SpillLimit {
		return fmt.Errorf("%w: %d bytes on disk + %d > limit %d", spill.ErrDiskFull, s.spilled, e.size, s.opts.SpillLimit)
	}
	e.spilling = true
	s.inflight++
	s.spills++
	s.mu.Unlock()
	err := s.spiller.Write(e.key, s.mem[e.off:e.off+e.size])
	s.mu.Lock()
	s.inflight--
	s.spills--
	e.spilling = false
	s.changed.Broadcast()
	if err != nil {
		s.settleLocked(e)
		return err
	}
	e.onDisk = true
	s.spilled += e.size
	s.counters.Spills++
	s.counters.SpilledBytes += e.size
	if e.pins == 0 && !e.deleted {
		s.freeMemLocked(e)
	}
	s.settleLocked(e)
	return nil
}

// freeMemLocked releases e's arena bytes; e stays in the store on disk.
func (s *Shared) freeMemLocked(e *entry) {
	n := arena.RoundUp(e.size)
	s.alloc.Free(e.off, n)
	e.inMem = false
	if e.lru != nil {
		s.lru.Remove(e.lru)
		e.lru = nil
	}
	if e.primary {
		s.primaryMem -= n
	}
	s.changed.Broadcast()
}

// removeLocked takes e out of the store; its memory and disk copy go at
// once or, while a reader or a spill still uses it, when that ends.
func (s *Shared) removeLocked(e *entry) {
	if e.deleted {
		return
	}
	e.deleted = true
	delete(s.objs, e.id)
	s.live -= arena.RoundUp(e.size)
	s.settleLocked(e)
}

// settleLocked frees a deleted entry once nothing uses it.
func (s *Shared) settleLocked(e *entry) {
	if !e.deleted || e.pins > 0 || e.spilling || e.restoring {
		return
	}
	if e.inMem {
		s.freeMemLocked(e)
	}
	if e.onDisk && !s.closed { // after Close the spill store is gone with its files
		e.onDisk = false
		s.spilled -= e.size
		s.garbage += e.size
		if s.garbage > 1<<30 {
			s.wake()
		}
		if err := s.spiller.Delete(e.key); err != nil && !errors.Is(err, spill.ErrNotSpilled) {
			s.log.Warn("delete spilled object", zap.Stringer("id", e.id), zap.Error(err))
		}
	}
}

// Delete removes an object. Readers holding a View keep its bytes until
// they Release; an object still being written goes when it is sealed or
// aborted.
func (s *Shared) Delete(id ids.ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objs[id]
	switch {
	case !ok:
	case !e.sealed:
		// Its creator is still writing into the bytes: freeing them now
		// would hand them to another object under the writer's feet.
		e.deleteOnSeal = true
	default:
		s.removeLocked(e)
	}
}

// Stats returns the number of objects and their bytes (Store interface).
func (s *Shared) Stats() (int64, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b int64
	for _, e := range s.objs {
		b += e.size
	}
	return int64(len(s.objs)), b
}

// Usage returns the store's accounting.
func (s *Shared) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Usage{
		Capacity: s.alloc.Size(), Committed: s.arena.Committed(), Allocated: s.alloc.Used(), PrimaryMemory: s.primaryMem,
		SpilledBytes: s.spilled, Objects: int64(len(s.objs)), LiveBytes: s.live, Pinned: s.pinned,
		FreeRanges: s.alloc.FreeRanges(), LargestFree: s.alloc.LargestFree(),
	}
}

// Locate says where one object is; Tier Absent when the store lacks it.
func (s *Shared) Locate(id ids.ObjectID) Location {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objs[id]
	if !ok || !e.sealed {
		return Location{ID: id}
	}
	return s.locationLocked(e)
}

// Promote makes a pulled (secondary) copy primary: kept while its owner
// references it and spilled rather than dropped under pressure. A replica
// an owner asked for (Put with Replicas) is one. False if there is no
// sealed copy here.
func (s *Shared) Promote(id ids.ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objs[id]
	if !ok || !e.sealed {
		return false
	}
	if !e.primary {
		e.primary = true
		if e.inMem {
			s.primaryMem += arena.RoundUp(e.size)
			s.kickLocked()
		}
	}
	return true
}

// Locations lists every sealed object and where it is, for the raylet's
// location reports to the object directory.
func (s *Shared) Locations() []Location {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Location, 0, len(s.objs))
	for _, e := range s.objs {
		if e.sealed {
			out = append(out, s.locationLocked(e))
		}
	}
	return out
}

func (s *Shared) locationLocked(e *entry) Location {
	l := Location{ID: e.id, Size: e.size, Format: e.format, Primary: e.primary}
	if e.inMem {
		l.Tier, l.Arena, l.Offset = InMemory, s.arena.Path(), e.off
	} else {
		l.Tier = Spilled
	}
	if e.onDisk {
		l.Spill = s.spiller.Location(e.key)
	}
	return l
}

func (s *Shared) kickLocked() {
	if s.spiller == nil || float64(s.primaryMem) <= s.opts.SpillThreshold*float64(s.alloc.Size()) {
		return
	}
	s.wake()
}

func (s *Shared) wake() {
	select {
	case s.kick <- struct{}{}:
	default: // a pass is already pending
	}
}

// spillLoop spills primaries in the background while they hold more than
// SpillThreshold of the arena, so most Creates find room without waiting
// for a disk write. It is owned by the store: Close stops it.
func (s *Shared) spillLoop() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		s.mu.Lock()
		for !s.closed && float64(s.primaryMem) > s.opts.SpillThreshold*float64(s.alloc.Size()) {
			var victim *entry
			for el := s.lru.Front(); el != nil; el = el.Next() {
				if e := el.Value.(*entry); e.primary && e.pins == 0 && !e.spilling {
					victim = e
					break
				}
			}
			if victim == nil {
				break
			}
			if victim.onDisk {
				s.freeMemLocked(victim)
				continue
			}
			if err := s.spillLocked(victim); err != nil {
				s.log.Warn("background spill failed", zap.Stringer("id", victim.id), zap.Int64("bytes", victim.size), zap.Error(err))
				break
			}
		}
		gc := s.garbage > 1<<30
		if gc {
			s.garbage = 0
		}
		s.mu.Unlock()
		// Badger keeps deleted objects in its value log until GC rewrites
		// the files; do it off the hot path once a good amount is garbage.
		if g, ok := s.spiller.(interface{ CollectGarbage() }); ok && gc {
			g.CollectGarbage()
		}
		if f := s.opts.Knobs.AfterSpillPass; f != nil {
			f()
		}
	}
}

// Close stops the spill loop, waits for in-flight disk I/O, and removes the
// arena file and spill store. Views and Create buffers are invalid after
// Close. Close is idempotent.
func (s *Shared) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.changed.Broadcast()
		for s.inflight > 0 {
			s.changed.Wait()
		}
		s.mu.Unlock()
		close(s.stop)
		<-s.done
		var errs []error
		if s.spiller != nil {
			errs = append(errs, s.spiller.Close(), os.RemoveAll(s.spillDir))
		}
		errs = append(errs, s.arena.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
