// Package spill keeps object bytes on local disk when the shared-memory
// arena needs their space: Badger (values in its value log) or plain
// per-object files. The object store decides what to spill and when; this
// package only writes, reads back and deletes bytes by key.
package spill

import (
	"errors"
	"fmt"
)

// ErrNotSpilled is a Read or Delete of a key that was never written.
var ErrNotSpilled = errors.New("spill: object not on disk")

// ErrDiskFull is a write the disk (or the configured limit) cannot hold.
var ErrDiskFull = errors.New("spill: disk full")

// Spiller stores immutable byte strings under fixed keys.
type Spiller interface {
	// Write stores data under key; data is not retained after it returns.
	Write(key []byte, data []byte) error
	// ReadInto copies the bytes stored under key into dst, which must be
	// exactly as long as what was written.
	ReadInto(key []byte, dst []byte) error
	Delete(key []byte) error
	// Location names where key's bytes are, for reports (a path or "badger:DIR").
	Location(key []byte) string
	Close() error
}

// isNoSpace reports errors that mean the disk is full.
func isNoSpace(err error) bool {
	return err != nil && (errors.Is(err, errNoSpace) || errors.Is(err, errDiskQuota))
}

func diskFull(op string, n int, err error) error {
	return fmt.Errorf("%w: %s of %d bytes: %v", ErrDiskFull, op, n, err)
}
