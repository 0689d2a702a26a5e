package logmonitor

import (
	"fmt"
	"os"
	"sync"
)

// RotatingFile is a size-bounded log file: when a write would take the
// file past MaxBytes it becomes path.1 (path.1 becomes path.2, ... and the
// oldest past Backups is removed) and a new file starts, so the file set
// never holds more than (Backups+1)*MaxBytes bytes, as long as no single
// write is larger than MaxBytes (the worker pool writes lines of at most
// 64 KiB). Rotation happens before a write, so a write never spans files.
//
// Hand-written rather than lumberjack v2.2.1 (the rotation library served
// here): its Logger starts a goroutine on first rotation that Close never
// stops (natefinch/lumberjack#56, #205, open), one leak per rotated worker
// file in a long-lived raylet; it counts sizes in whole megabytes and
// removes backups asynchronously, so the bound does not hold at every
// instant.
type RotatingFile struct {
	path     string
	maxBytes int64
	backups  int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenRotating creates (or truncates) path.
func OpenRotating(path string, maxBytes int64, backups int) (*RotatingFile, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("logmonitor: max bytes %d must be positive", maxBytes)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return &RotatingFile{path: path, maxBytes: maxBytes, backups: max(backups, 0), f: f}, nil
}

// Path is the current file's path.
func (r *RotatingFile) Path() string { return r.path }

// Write appends p, rotating first when p would not fit.
func (r *RotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.size > 0 && r.size+int64(len(p)) > r.maxBytes {
		if err := r.rotateLocked(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

// rotateLocked closes the current file before renaming it, so a reader
// that sees the path change can drain its open descriptor to the end.
func (r *RotatingFile) rotateLocked() error {
	if err := r.f.Close(); err != nil {
		r.f = nil
		return err
	}
	r.f = nil
	if r.backups == 0 {
		if err := os.Remove(r.path); err != nil && !os.IsNotExist(err) {
			return err
		}
	} else {
		if err := os.Remove(BackupPath(r.path, r.backups)); err != nil && !os.IsNotExist(err) {
			return err
		}
		for i := r.backups - 1; i >= 1; i-- {
			if err := os.Rename(BackupPath(r.path, i), BackupPath(r.path, i+1)); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		if err := os.Rename(r.path, BackupPath(r.path, 1)); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	r.f, r.size = f, 0
	return nil
}

// Close closes the current file. Idempotent.
func (r *RotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// BackupPath is the i-th newest rotated file of path (i ≥ 1).
func BackupPath(path string, i int) string { return fmt.Sprintf("%s.%d", path, i) }
