package objclient

import "errors"

var (
	// ErrObjectLost: no node that should hold the object could serve it.
	// The SDK re-exports it as ray.ErrObjectLost, so its text is the SDK's.
	ErrObjectLost = errors.New("ray: object lost")
	// ErrClosed: the client was closed; its mappings are gone.
	ErrClosed = errors.New("objclient: closed")
)
