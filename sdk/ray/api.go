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

// Put stores a value as an object owned by this process and returns its
// ref. Replicas(n) keeps a large value on n nodes, Durable() a value of
// up to 1 MiB in the control store too.
func Put[T any](ctx context.Context, v T, opts ...PutOption) (ObjectRef[T], error) {
	c, err := core.Current()
	if err != nil {
		return ObjectRef[T]{}, err
	}
	var o core.PutOptions
	for _, opt := range opts {
		opt(&o)
	}
	k, err := c.Put(ctx, v, o)
	if err != nil {
		return ObjectRef[T]{}, err
	}
	return refOf[T](k), nil
}

// PutOption is an option of Put.
type PutOption func(*core.PutOptions)

// Replicas stores the object on n distinct alive nodes before Put
// returns (the one it is made on, and n-1 that pull a copy in parallel)
// and, while it is referenced, makes a new copy from a surviving one when
// a node that held it dies. Put fails with ErrInvalidOption when fewer
// than n nodes are alive. Only values larger than InlineLimit live on
// nodes: a smaller one lives in its owner's memory, which no node loss
// touches, and Replicas does nothing for it.
func Replicas(n int) PutOption { return func(o *core.PutOptions) { o.Replicas = n } }

// Durable also stores the value (at most DurableLimit bytes encoded, else
// ErrInvalidOption) in the replicated control store, from which Get reads
// it when no node holds a copy any more (every raylet that had one died).
// It is deleted there when the object is released.
func Durable() PutOption { return func(o *core.PutOptions) { o.Durable = true } }

// DurableLimit is the largest value Durable takes (1 MiB).
const DurableLimit = core.DurableLimit
