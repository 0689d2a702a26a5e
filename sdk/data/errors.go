package data

import "errors"

var (
	// ErrSchemaMismatch: blocks or rows of one dataset disagree on a
	// column (the error names it).
	ErrSchemaMismatch = errors.New("data: schema mismatch")
	// ErrBadRow: a row value of a type rows cannot hold.
	ErrBadRow = errors.New("data: bad row")
	// ErrBadBlock: an object that is not an Arrow IPC block.
	ErrBadBlock = errors.New("data: bad block")
	// ErrBadFile: a source file that cannot be read (the error names it).
	ErrBadFile = errors.New("data: bad input file")
	// ErrUnknownFunction: a transform whose name no init registered.
	ErrUnknownFunction = errors.New("data: unknown function")
	// ErrUserFunction: a user function failed or panicked (the error
	// names the operator and a row index of its block).
	ErrUserFunction = errors.New("data: user function failed")
	// ErrInvalidArgument: a bad option or argument of a dataset call.
	ErrInvalidArgument = errors.New("data: invalid argument")
)
