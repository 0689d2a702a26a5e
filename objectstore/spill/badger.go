package spill

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// chunkSize splits objects into values Badger writes at full speed (the
// baseline's 4 MiB) and keeps every value far below its value-log file size.
const chunkSize = 4 << 20

// Badger spills into a Badger database in dir.
type Badger struct {
	db  *badger.DB
	dir string
}

// OpenBadger opens (creating) a spill database in dir. Spilled bytes only
// matter while this raylet lives, so writes are not synced and nothing is
// compressed (objects are usually already-encoded, incompressible data).
func OpenBadger(dir string, log *zap.Logger) (*Badger, error) {
	if log == nil {
		log = zap.NewNop()
	}
	opts := badger.DefaultOptions(dir).
		WithLogger(zapLogger{log.Named("badger").Sugar()}).
		WithSyncWrites(false).
		WithCompression(options.None).
		WithNumVersionsToKeep(1).
		WithDetectConflicts(false).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(0).
		WithValueThreshold(1 << 10)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("spill: open badger in %s: %w", dir, err)
	}
	return &Badger{db: db, dir: dir}, nil
}

func chunkKey(key []byte, i int) []byte {
	k := make([]byte, len(key)+4)
	copy(k, key)
	binary.BigEndian.PutUint32(k[len(key):], uint32(i))
	return k
}

func chunks(n int) int { return max(1, (n+chunkSize-1)/chunkSize) }

func (b *Badger) Write(key, data []byte) error {
	wb := b.db.NewWriteBatch()
	defer wb.Cancel()
	for i := range chunks(len(data)) {
		lo, hi := i*chunkSize, min(len(data), (i+1)*chunkSize)
		// WriteBatch keeps the value until Flush; data is the arena, which
		// stays untouched until Write returns, so no copy is needed.
		if err := wb.Set(chunkKey(key, i), data[lo:hi]); err != nil {
			return b.writeErr(len(data), err)
		}
	}
	if err := wb.Flush(); err != nil {
		return b.writeErr(len(data), err)
	}
	return nil
}

func (b *Badger) writeErr(n int, err error) error {
	if isNoSpace(err) {
		return diskFull("badger write", n, err)
	}
	return fmt.Errorf("spill: badger write of %d bytes: %w", n, err)
}

func (b *Badger) ReadInto(key, dst []byte) error {
	return b.db.View(func(txn *badger.Txn) error {
		for i := range chunks(len(dst)) {
			lo, hi := i*chunkSize, min(len(dst), (i+1)*chunkSize)
			item, err := txn.Get(chunkKey(key, i))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return ErrNotSpilled
			}
			if err != nil {
				return fmt.Errorf("spill: badger read: %w", err)
			}
			// Value copies straight from the value log's mapping into the
			// arena: no intermediate buffer.
			err = item.Value(func(v []byte) error {
				if len(v) != hi-lo {
					return fmt.Errorf("chunk %d is %d bytes, want %d", i, len(v), hi-lo)
				}
				copy(dst[lo:hi], v)
				return nil
			})
			if err != nil {
				return fmt.Errorf("spill: badger read: %w", err)
			}
		}
		return nil
	})
}

func (b *Badger) Delete(key []byte) error {
	// Chunk keys share key as prefix; drop them all without knowing the size.
	return b.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: key})
		var ks [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			ks = append(ks, it.Item().KeyCopy(nil))
		}
		it.Close()
		if len(ks) == 0 {
			return ErrNotSpilled
		}
		for _, k := range ks {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// CollectGarbage rewrites value-log files that are mostly deleted objects;
// the store calls it from its spill loop after large deletes.
func (b *Badger) CollectGarbage() {
	for b.db.RunValueLogGC(0.5) == nil {
	}
}

func (b *Badger) Location(key []byte) string { return "badger:" + b.dir }

func (b *Badger) Close() error {
	if b.db == nil {
		return nil
	}
	err := b.db.Close()
	b.db = nil
	return err
}

// zapLogger lets Badger log through zap (Badger wants Warningf).
type zapLogger struct{ s *zap.SugaredLogger }

func (l zapLogger) Errorf(f string, a ...any)   { l.s.Errorf(f, a...) }
func (l zapLogger) Warningf(f string, a ...any) { l.s.Warnf(f, a...) }
func (l zapLogger) Infof(f string, a ...any)    { l.s.Debugf(f, a...) } // Badger is chatty at info
func (l zapLogger) Debugf(f string, a ...any)   { l.s.Debugf(f, a...) }
