package pkgstore

import "errors"

// Sentinel errors, wrapped with the details.
var (
	ErrTooLarge = errors.New("package too large")
	ErrNotFound = errors.New("package not found")
	ErrCorrupt  = errors.New("package content does not match its manifest")
	ErrBadName  = errors.New("bad package name")
	// ErrUnsafe is an archive entry that would land outside its directory,
	// or a symlink that points outside it.
	ErrUnsafe = errors.New("unsafe path in package")
)
