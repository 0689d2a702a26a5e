package ray

import (
	"context"
	"runtime"
	"time"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// Get waits for the object and returns its value, or the task's error (a
// *TaskError). It gives up when ctx ends. A released ref gives
// ErrObjectNotFound; an object no node holds any more, ErrObjectLost.
func Get[T any](ctx context.Context, ref ObjectRef[T]) (T, error) {
	var zero T
	if ref.err != nil {
		return zero, ref.err
	}
	if err := ref.released(); err != nil {
		return zero, err
	}
	c, err := core.Current()
	if err != nil {
		return zero, err
	}
	// The ref keeps the object until Get has read it: without this the
	// collector could find the ref dead (and the object freed) mid-read.
	defer runtime.KeepAlive(ref.h)
	var v T
	err = c.Read(ctx, ref.id, ref.owner, func(data []byte, format pb.Format, mapped bool) error {
		if mapped && format == pb.Format_FORMAT_RAW {
			// The mapping is read-only and lasts only while pinned.
			data = append([]byte(nil), data...)
		}
		var err error
		v, err = decode[T](data, format)
		return err
	})
	return v, err
}

// GetAll gets every ref, in order.
func GetAll[T any](ctx context.Context, refs []ObjectRef[T]) ([]T, error) {
	out := make([]T, len(refs))
	for i, r := range refs {
		v, err := Get(ctx, r)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// Wait returns once numReady of refs are ready (finished, with a value or
// an error) or timeout passes (0: no timeout): the ready ones, in the order
// given, and the rest.
func Wait[T any](ctx context.Context, refs []ObjectRef[T], numReady int, timeout time.Duration) (ready, pending []ObjectRef[T], err error) {
	c, err := core.Current()
	if err != nil {
		return nil, nil, err
	}
	keys := make([]core.ObjectKey, len(refs))
	failed := make([]bool, len(refs))
	for i, r := range refs {
		keys[i] = core.ObjectKey{ID: r.id, Owner: r.owner}
		failed[i] = r.err != nil
	}
	isReady, err := c.Wait(ctx, keys, failed, numReady, timeout)
	for i, r := range refs {
		if isReady[i] {
			ready = append(ready, r)
		} else {
			pending = append(pending, r)
		}
	}
	return ready, pending, err
}

// Put stores a value as an object owned by this process and returns its ref.
func Put[T any](ctx context.Context, v T) (ObjectRef[T], error) {
	c, err := core.Current()
	if err != nil {
		return ObjectRef[T]{}, err
	}
	k, err := c.Put(ctx, v)
	if err != nil {
		return ObjectRef[T]{}, err
	}
	return refOf[T](k), nil
}
