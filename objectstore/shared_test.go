package objectstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/manta-ray/manta/internal/ids"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/objectstore/arena"
)

type spillMode int

const (
	noSpill spillMode = iota
	spillBadger
	spillFiles
)

func (m spillMode) String() string { return [...]string{"none", "badger", "files"}[m] }

func newShared(t testing.TB, capacity int64, mode spillMode, tweak ...func(*SharedOptions)) *Shared {
	t.Helper()
	o := SharedOptions{
		Path:     filepath.Join(arena.DefaultDir(), fmt.Sprintf("manta-test-%d-%s", os.Getpid(), filepath.Base(t.TempDir()))),
		Capacity: capacity,
	}
	if tt, ok := t.(*testing.T); ok {
		o.Logger = zaptest.NewLogger(tt, zaptest.Level(zap.InfoLevel))
	}
	if mode != noSpill {
		o.SpillDir = filepath.Join(t.TempDir(), "spill")
		if mode == spillBadger {
			o.SpillEngine = SpillBadger
		}
	}
	for _, f := range tweak {
		f(&o)
	}
	s, err := NewShared(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func oid(i int) ids.ObjectID { return ids.PutID(ids.DriverTaskID("objectstore-test"), uint32(i)) }

// fill writes a pattern that differs per object and per position, so a
// misplaced or stale byte shows up in the comparison. ChaCha8 generates in
// assembly, which keeps it fast under the race detector.
func fill(b []byte, seed int) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], uint64(seed))
	_, _ = rand.NewChaCha8(key).Read(b)
}

func pattern(n, seed int) []byte {
	b := make([]byte, n)
	fill(b, seed)
	return b
}

func TestSharedPutGetDelete(t *testing.T) {
	s := newShared(t, 1<<20, noSpill)
	id := oid(1)
	if _, err := s.Get(id); !errors.Is(err, ErrObjectNotFound) || !errors.Is(err, rpcerr.ErrNotFound) {
		t.Fatalf("get of a missing object: %v", err)
	}
	if err := s.Put(id, Object{Data: []byte("abc"), Format: 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(id, Object{Data: []byte("second")}); err != nil { // immutable: ignored
		t.Fatal(err)
	}
	if _, err := s.Create(id, 10, CreateOptions{}); !errors.Is(err, ErrObjectExists) {
		t.Fatalf("Create of a sealed ID: %v", err)
	}
	o, err := s.Get(id)
	if err != nil || string(o.Data) != "abc" || o.Format != 2 {
		t.Fatalf("get: %q %d %v", o.Data, o.Format, err)
	}
	if n, b := s.Stats(); n != 1 || b != 3 {
		t.Fatalf("stats %d %d", n, b)
	}
	if l := s.Locate(id); l.Tier != InMemory || l.Offset%arena.Align != 0 || l.Arena != s.ArenaPath() || l.Size != 3 {
		t.Fatalf("locate %+v", l)
	}
	s.Delete(id)
	if n, b := s.Stats(); n != 0 || b != 0 || s.Usage().Allocated != 0 {
		t.Fatalf("stats after delete %d %d %+v", n, b, s.Usage())
	}
	if _, err := s.Get(id); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if l := s.Locate(id); l.Tier != Absent {
		t.Fatalf("locate after delete %+v", l)
	}
}

func TestSharedCreateSealAbort(t *testing.T) {
	s := newShared(t, 1<<20, noSpill)
	buf, err := s.Create(oid(1), 5, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	copy(buf, "hello")
	if _, err := s.Acquire(oid(1)); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("Acquire before Seal: %v", err)
	}
	if _, err := s.Create(oid(1), 5, CreateOptions{}); !errors.Is(err, ErrObjectExists) {
		t.Fatalf("Create while being written: %v", err)
	}
	if err := s.Seal(oid(1)); err != nil {
		t.Fatal(err)
	}
	v, err := s.Acquire(oid(1))
	if err != nil || string(v.Data) != "hello" {
		t.Fatalf("%q %v", v.Data, err)
	}
	v.Release()
	v.Release() // idempotent
	if u := s.Usage(); u.Pinned != 0 {
		t.Fatalf("pinned %d after release", u.Pinned)
	}
	if _, err := s.Create(oid(2), 100, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Abort(oid(2))
	if l := s.Locate(oid(2)); l.Tier != Absent || s.Usage().Allocated != arena.Align {
		t.Fatalf("after abort: %+v %+v", l, s.Usage())
	}
	if err := s.Seal(oid(3)); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("Seal of an unknown ID: %v", err)
	}
}

func TestSharedUnknownAndCorruptIDsAreNotFound(t *testing.T) {
	s := newShared(t, 1<<20, spillFiles)
	var garbage ids.ObjectID
	for i := range garbage {
		garbage[i] = 0xff
	}
	for _, id := range []ids.ObjectID{{}, garbage, oid(99)} {
		if _, err := s.Acquire(id); !errors.Is(err, ErrObjectNotFound) {
			t.Fatalf("Acquire %s: %v", id, err)
		}
		if err := rpcerr.ToStatus(fmt.Errorf("wrapped: %w", ErrObjectNotFound)); !strings.Contains(err.Error(), "NotFound") {
			t.Fatalf("status %v", err)
		}
	}
	// A spilled object whose disk copy vanished is NotFound, not a crash.
	if err := s.Put(oid(1), Object{Data: pattern(1000, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.spillID(oid(1)); err != nil {
		t.Fatal(err)
	}
	l := s.Locate(oid(1))
	if l.Tier != Spilled {
		t.Fatalf("locate %+v", l)
	}
	if err := os.Remove(l.Spill); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(oid(1)); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("get of an object with a lost spill file: %v", err)
	}
	if u := s.Usage(); u.Allocated != 0 || u.Objects != 0 {
		t.Fatalf("failed restore leaked arena bytes: %+v", u)
	}
	if l := s.Locate(oid(1)); l.Tier != Absent {
		t.Fatalf("a lost object is still located: %+v", l)
	}
	// A truncated disk copy is caught by its size, not returned short.
	if err := s.Put(oid(2), Object{Data: pattern(1000, 2)}); err != nil {
		t.Fatal(err)
	}
	if err := s.spillID(oid(2)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.Locate(oid(2)).Spill, 999); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(oid(2)); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("get of a truncated spill file: %v", err)
	}
}

// TestSharedFourTimesCapacity fills the store with 4x its memory in live
// objects of mixed sizes: every one stays readable, nothing is lost, and
// the arena never holds more than its capacity.
func TestSharedFourTimesCapacity(t *testing.T) {
	for _, mode := range []spillMode{spillBadger, spillFiles} {
		t.Run(mode.String(), func(t *testing.T) {
			const capacity = 8 << 20
			s := newShared(t, capacity, mode)
			r := rand.New(rand.NewPCG(3, 4))
			sizes := map[int]int{}
			var total int
			for i := 0; total < 4*capacity; i++ {
				n := 1 + r.IntN(1<<20)
				if i%7 == 0 {
					n = r.IntN(300) // a few tiny ones, including empty
				}
				if err := s.Put(oid(i), Object{Data: pattern(n, i), Format: int32(i)}); err != nil {
					t.Fatalf("put %d (%d bytes) after %d bytes: %v", i, n, total, err)
				}
				sizes[i] = n
				total += n
				if u := s.Usage(); u.Allocated > u.Capacity {
					t.Fatalf("arena over capacity: %+v", u)
				}
			}
			u := s.Usage()
			if u.SpilledBytes < int64(total-capacity) || u.Objects != int64(len(sizes)) {
				t.Fatalf("usage %+v for %d bytes in %d objects", u, total, len(sizes))
			}
			var spilled int
			for _, l := range s.Locations() {
				if l.Tier == Spilled {
					spilled++
				}
			}
			if spilled == 0 {
				t.Fatal("nothing reported as spilled")
			}
			for _, i := range r.Perm(len(sizes)) { // random order: restores evict others
				o, err := s.Get(oid(i))
				if err != nil {
					t.Fatalf("get %d: %v", i, err)
				}
				if !bytes.Equal(o.Data, pattern(sizes[i], i)) || o.Format != int32(i) {
					t.Fatalf("object %d (%d bytes) corrupted", i, sizes[i])
				}
				if u := s.Usage(); u.Allocated > u.Capacity {
					t.Fatalf("arena over capacity: %+v", u)
				}
			}
			for i := range sizes {
				s.Delete(oid(i))
			}
			s.quiesce()
			if u := s.Usage(); u.Allocated != 0 || u.SpilledBytes != 0 || u.LiveBytes != 0 || u.FreeRanges != 1 {
				t.Fatalf("after deleting everything: %+v", u)
			}
		})
	}
}

func TestSharedReaderPinBlocksSpillAndEviction(t *testing.T) {
	s := newShared(t, 4<<20, spillBadger)
	want := pattern(1<<20, 1)
	if err := s.Put(oid(1), Object{Data: want}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Acquire(oid(1))
	if err != nil {
		t.Fatal(err)
	}
	off := v.Offset
	for i := 2; i < 20; i++ { // 18 MiB through a 4 MiB arena
		if err := s.Put(oid(i), Object{Data: pattern(1<<20, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if l := s.Locate(oid(1)); l.Tier != InMemory || l.Offset != off {
		t.Fatalf("pinned object moved: %+v", l)
	}
	if !bytes.Equal(v.Data, want) {
		t.Fatal("pinned bytes changed under a reader")
	}
	// Deleting a pinned object hides it but keeps the reader's bytes.
	s.Delete(oid(1))
	if _, err := s.Acquire(oid(1)); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("acquire after delete: %v", err)
	}
	for i := 20; i < 30; i++ {
		if err := s.Put(oid(i), Object{Data: pattern(1<<20, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(v.Data, want) {
		t.Fatal("deleted-but-pinned bytes were reused")
	}
	before := s.Usage().Allocated
	v.Release()
	if after := s.Usage().Allocated; after != before-(1<<20) {
		t.Fatalf("release of a deleted object freed %d bytes, want %d", before-after, 1<<20)
	}
}

func TestSharedAllPinnedIsFullNotCrash(t *testing.T) {
	s := newShared(t, 2<<20, spillFiles)
	var views []*View
	for i := range 2 {
		if err := s.Put(oid(i), Object{Data: pattern(1<<20, i)}); err != nil {
			t.Fatal(err)
		}
		v, err := s.Acquire(oid(i))
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, v)
	}
	_, err := s.Create(oid(9), 1<<20, CreateOptions{})
	if !errors.Is(err, ErrObjectStoreFull) || !errors.Is(err, rpcerr.ErrResourceExhausted) || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("create with everything pinned: %v", err)
	}
	for _, v := range views {
		v.Release()
	}
	if _, err := s.Create(oid(9), 1<<20, CreateOptions{}); err != nil {
		t.Fatalf("create after release: %v", err)
	}
}

func TestSharedConcurrentReadersAndWriters(t *testing.T) {
	s := newShared(t, 4<<20, spillBadger)
	const objects, size = 24, 256 << 10
	for i := range objects {
		if err := s.Put(oid(i), Object{Data: pattern(size, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 { // readers: pin random objects (restoring spilled ones) and check them
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 60 {
				i := r.IntN(objects)
				v, err := s.Acquire(oid(i))
				if err != nil {
					errs <- fmt.Errorf("acquire %d: %w", i, err)
					return
				}
				ok := bytes.Equal(v.Data, pattern(size, i))
				v.Release()
				if !ok {
					errs <- fmt.Errorf("object %d corrupted under concurrency", i)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // writer: new objects force spills while readers pin
		defer wg.Done()
		for i := objects; i < objects+24; i++ {
			if err := s.Put(oid(i), Object{Data: pattern(size, i)}); err != nil {
				errs <- fmt.Errorf("put %d: %w", i, err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if u := s.Usage(); u.Pinned != 0 || u.Allocated > u.Capacity {
		t.Fatalf("usage after: %+v", u)
	}
}

func TestSharedSecondaryCopiesEvictedLRU(t *testing.T) {
	s := newShared(t, 4<<20, noSpill)
	for i := range 4 {
		buf, err := s.Create(oid(i), 1<<20, CreateOptions{Secondary: true})
		if err != nil {
			t.Fatal(err)
		}
		fill(buf, i)
		if err := s.Seal(oid(i)); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Acquire(oid(0)) // touch 0: 1 is now least recently used
	if err != nil {
		t.Fatal(err)
	}
	v.Release()
	if err := s.Put(oid(10), Object{Data: pattern(1<<20, 10)}); err != nil {
		t.Fatal(err)
	}
	if l := s.Locate(oid(1)); l.Tier != Absent {
		t.Fatalf("LRU secondary not evicted: %+v", l)
	}
	for _, i := range []int{0, 2, 3, 10} {
		if l := s.Locate(oid(i)); l.Tier != InMemory {
			t.Fatalf("object %d: %+v", i, l)
		}
	}
	// Primaries are never dropped: with no spilling and no secondaries
	// left to evict, the store is full.
	for i := 11; i < 14; i++ {
		if err := s.Put(oid(i), Object{Data: pattern(1<<20, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(oid(20), Object{Data: pattern(1<<20, 20)}); !errors.Is(err, ErrObjectStoreFull) {
		t.Fatalf("put into a store full of primaries: %v", err)
	}
}

// TestSharedPromotedCopyIsKept: a secondary copy promoted to primary (a
// replica) is not evicted to make room; the other secondaries are.
func TestSharedPromotedCopyIsKept(t *testing.T) {
	s := newShared(t, 4<<20, noSpill)
	for i := range 4 {
		buf, err := s.Create(oid(i), 1<<20, CreateOptions{Secondary: true})
		if err != nil {
			t.Fatal(err)
		}
		fill(buf, i)
		if err := s.Seal(oid(i)); err != nil {
			t.Fatal(err)
		}
	}
	if !s.Promote(oid(0)) || s.Promote(oid(99)) {
		t.Fatal("Promote of a held copy failed, or of an absent one succeeded")
	}
	for i := 10; i < 13; i++ {
		if err := s.Put(oid(i), Object{Data: pattern(1<<20, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if l := s.Locate(oid(0)); l.Tier != InMemory {
		t.Fatalf("promoted copy: %+v; want kept in memory", l)
	}
	for i := 1; i < 4; i++ {
		if l := s.Locate(oid(i)); l.Tier != Absent {
			t.Fatalf("secondary %d: %+v; want evicted", i, l)
		}
	}
	if st := s.Usage(); st.PrimaryMemory != 4*(1<<20) {
		t.Fatalf("primary memory %d; want 4 MiB", st.PrimaryMemory)
	}
}

func TestSharedTooLargeAndDiskFull(t *testing.T) {
	s := newShared(t, 1<<20, spillFiles, func(o *SharedOptions) { o.SpillLimit = 2 << 20 })
	_, err := s.Create(oid(1), 2<<20, CreateOptions{})
	if !errors.Is(err, ErrObjectStoreFull) || !strings.Contains(err.Error(), "2097152") || !strings.Contains(err.Error(), "1048576") {
		t.Fatalf("too large: %v", err)
	}
	var i int
	for ; i < 10; i++ {
		if err = s.Put(oid(i), Object{Data: pattern(512<<10, i)}); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrObjectStoreFull) || i < 4 {
		t.Fatalf("after %d puts into 1 MiB memory + 2 MiB disk: %v", i, err)
	}
	t.Logf("full after %d objects: %v", i, err)
	// Memory and disk are both full: reading a spilled object may need a
	// spill that has no room, which must be a clear error, and nothing
	// accepted is lost. Freeing one object makes room to read the rest.
	if _, err := s.Get(oid(0)); err != nil && !errors.Is(err, ErrObjectStoreFull) {
		t.Fatalf("get with memory and disk full: %v", err)
	}
	s.Delete(oid(i - 1))
	for j := range i - 1 {
		o, err := s.Get(oid(j))
		if err != nil || !bytes.Equal(o.Data, pattern(512<<10, j)) {
			t.Fatalf("object %d: %v", j, err)
		}
	}
}

func TestSharedCloseIdempotent(t *testing.T) {
	s := newShared(t, 1<<20, spillBadger)
	if err := s.Put(oid(1), Object{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	path := s.ArenaPath()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(oid(1)); !errors.Is(err, ErrStoreClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("arena left behind: %v", err)
	}
	if _, err := os.Stat(s.spillDir); !os.IsNotExist(err) {
		t.Fatalf("spill dir left behind: %v", err)
	}
}

// TestSharedBackgroundSpillAtThreshold: once primary copies pass 80 % of
// memory, the spill loop brings them back under it without any Create
// having to wait for room.
func TestSharedBackgroundSpillAtThreshold(t *testing.T) {
	passes := make(chan struct{}, 16)
	s := newShared(t, 4<<20, spillBadger, func(o *SharedOptions) {
		o.Knobs.AfterSpillPass = func() {
			select {
			case passes <- struct{}{}:
			default: // later passes (restores kick some) need no one waiting
			}
		}
	})
	for i := range 7 { // 3.5 MiB of 4: above 80 %
		if err := s.Put(oid(i), Object{Data: pattern(512<<10, i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-passes // the Seal that crossed the threshold kicked a pass; wait for it
	u := s.Usage()
	if float64(u.PrimaryMemory) > 0.8*float64(u.Capacity) || u.SpilledBytes == 0 {
		t.Fatalf("after a spill pass: %+v", u)
	}
	for i := range 7 {
		if o, err := s.Get(oid(i)); err != nil || !bytes.Equal(o.Data, pattern(512<<10, i)) {
			t.Fatalf("object %d: %v", i, err)
		}
	}
}

func sum(b []byte) string { h := sha256.Sum256(b); return fmt.Sprintf("%x", h) }

// TestSharedChurnKeepsAccounting races Put, Acquire, Delete and background
// spills over a small arena. The allocator panics on a double free, so a
// bookkeeping slip in delete-while-spilling or delete-while-restoring shows
// up as a crash; at the end everything must be freed, in memory and on disk.
func TestSharedChurnKeepsAccounting(t *testing.T) {
	for _, mode := range []spillMode{spillFiles, spillBadger} {
		t.Run(mode.String(), func(t *testing.T) {
			s := newShared(t, 2<<20, mode)
			const ids, size = 16, 200 << 10
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 9))
					for range 150 {
						i := r.IntN(ids)
						switch r.IntN(3) {
						case 0:
							if err := s.Put(oid(i), Object{Data: pattern(size, i)}); err != nil && !errors.Is(err, ErrObjectStoreFull) {
								errs <- fmt.Errorf("put %d: %w", i, err)
								return
							}
						case 1:
							v, err := s.Acquire(oid(i))
							if errors.Is(err, ErrObjectNotFound) || errors.Is(err, ErrObjectStoreFull) {
								continue // deleted, never put, or everything pinned right now
							}
							if err != nil {
								errs <- fmt.Errorf("acquire %d: %w", i, err)
								return
							}
							ok := bytes.Equal(v.Data, pattern(size, i))
							v.Release()
							if !ok {
								errs <- fmt.Errorf("object %d corrupted", i)
								return
							}
						case 2:
							s.Delete(oid(i))
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for i := range ids {
				s.Delete(oid(i))
			}
			s.quiesce()
			if u := s.Usage(); u.Allocated != 0 || u.SpilledBytes != 0 || u.LiveBytes != 0 || u.Objects != 0 || u.PrimaryMemory != 0 || u.Pinned != 0 {
				t.Fatalf("after deleting everything: %+v\n%s", u, s.dumpLRU())
			}
		})
	}
}

// Regression: a Delete while the creator was still writing freed the bytes
// under the writer, and the next object was handed the same range.
func TestSharedDeleteWhileWritingWaitsForSeal(t *testing.T) {
	s := newShared(t, 1<<20, noSpill)
	buf, err := s.Create(oid(1), 1<<20, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Delete(oid(1))
	if _, err := s.Create(oid(2), 1<<20, CreateOptions{}); !errors.Is(err, ErrObjectStoreFull) {
		t.Fatalf("the writer's bytes were handed out again: %v", err)
	}
	fill(buf, 1) // the writer finishes
	if err := s.Seal(oid(1)); err != nil {
		t.Fatal(err)
	}
	if l := s.Locate(oid(1)); l.Tier != Absent || s.Usage().Allocated != 0 {
		t.Fatalf("after seal of a deleted object: %+v %+v", l, s.Usage())
	}
}
