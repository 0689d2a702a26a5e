package head

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Raft log stores a head can run on (Config.RaftLogStore). Both fsync
// every append before Raft acknowledges it.
const (
	// LogStoreBoltDB is raft-boltdb: one B+tree file, raft.db. The default.
	LogStoreBoltDB = "boltdb"
	// LogStoreWAL is hashicorp/raft-wal: append-only segment files in
	// raft-wal/, one fsync per append and no page rewrites (what Consul
	// moved to for write throughput).
	LogStoreWAL = "wal"
)

const (
	boltLogFile = "raft.db"
	walLogDir   = "raft-wal"
)

// logStore is the Raft log and stable store of a head.
type logStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// openLogStore opens the configured log store, refusing a data dir that
// holds the other kind: starting on an empty log of the other kind would
// lose the head's Raft state without a word.
func openLogStore(dataDir, kind string, log hclog.Logger) (logStore, error) {
	boltPath := filepath.Join(dataDir, boltLogFile)
	walPath := filepath.Join(dataDir, walLogDir)
	switch kind {
	case LogStoreBoltDB:
		if exists(walPath) {
			return nil, fmt.Errorf("%w: %s holds a %q Raft log (%s); start with --raft-log-store %s",
				ErrLogStoreMismatch, dataDir, LogStoreWAL, walLogDir, LogStoreWAL)
		}
		// bolt locks its file: a second head on the same dir fails after
		// the timeout instead of waiting forever.
		s, err := raftboltdb.New(raftboltdb.Options{Path: boltPath, BoltOptions: &bbolt.Options{Timeout: time.Second}})
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s is in use by another running head", ErrDataDirInUse, dataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("open raft log: %w", err)
		}
		return s, nil
	case LogStoreWAL:
		if exists(boltPath) {
			return nil, fmt.Errorf("%w: %s holds a %q Raft log (%s); start with --raft-log-store %s",
				ErrLogStoreMismatch, dataDir, LogStoreBoltDB, boltLogFile, LogStoreBoltDB)
		}
		if err := os.MkdirAll(walPath, 0o700); err != nil {
			return nil, fmt.Errorf("open raft log: %w", err)
		}
		// raft-wal's meta DB opens bolt without a timeout, so a second head
		// would hang: a lock of our own fails at once instead.
		lock, err := lockDir(walPath)
		if err != nil {
			return nil, err
		}
		// The meta store is ours to close: raft-wal v0.4.0's Close leaves
		// it (and its bolt file lock) open, so a head could not reopen
		// its own dir in the same process.
		meta := &metadb.BoltMetaDB{}
		w, err := raftwal.Open(walPath, raftwal.WithLogger(log), raftwal.WithMetaStore(meta))
		if err != nil {
			meta.Close()
			lock.Close()
			return nil, fmt.Errorf("open raft log: %w", err)
		}
		return &walStore{WAL: w, meta: meta, lock: lock}, nil
	}
	return nil, fmt.Errorf("%w: raft log store %q; want %q or %q", ErrBadConfig, kind, LogStoreBoltDB, LogStoreWAL)
}

// walStore is raft-wal with its meta store and the directory lock.
type walStore struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
	lock *os.File
}

func (w *walStore) Close() error {
	err := w.WAL.Close() // waits for writes in progress
	if merr := w.meta.Close(); err == nil {
		err = merr
	}
	w.lock.Close() // releases the flock
	return err
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is in use by another running head", ErrDataDirInUse, filepath.Dir(dir))
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
