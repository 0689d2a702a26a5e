package ray

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// Get waits for the object and returns its value, or the task's error (a
// *TaskError). It gives up when ctx ends. A released ref gives
// ErrObjectNotFound; an object no node holds any more, ErrObjectLost.
func Get[T any](ctx context.Context, ref ObjectRef[T]) (T, error) {
	var zero T
	if ref.err != nil {
		return zero, ref.err
	}
	if ref.h != nil && ref.h.released.Load() {
		return zero, fmt.Errorf("%w: object %s was released", ErrObjectNotFound, ref.id)
	}
	c, err := current()
	if err != nil {
		return zero, err
	}
	// The ref keeps the object until Get has read it: without this the
	// collector could find the ref dead (and the object freed) mid-read.
	defer runtime.KeepAlive(ref.h)
	o := c.objectFor(objectKey{id: ref.id, owner: ref.owner})
	if err := c.await(ctx, o); err != nil {
		return zero, err
	}
	var v T
	for rebuilds := 0; ; rebuilds++ {
		val := c.mem.Value(o)
		err = c.objs.Read(ctx, val, ref.id, ref.owner, func(data []byte, format pb.Format, mapped bool) error {
			if mapped && format == pb.Format_FORMAT_RAW {
				// The mapping is read-only and lasts only while pinned.
				data = append([]byte(nil), data...)
			}
			v, err = decode[T](data, format)
			return err
		})
		// A stored object of ours that no node has any more is rebuilt
		// from its lineage (lineage.go); every Get that saw it lost waits
		// for the same rebuild.
		if err == nil || val.Location == "" || ref.owner != c.address || rebuilds >= maxGetRebuilds ||
			!errors.Is(err, ErrObjectLost) || ctx.Err() != nil {
			return v, err
		}
		if o, err = c.recoverObject(ref.id, o); err != nil {
			return zero, err
		}
		if err := c.await(ctx, o); err != nil {
			return zero, err
		}
	}
}

// await waits until o is ready or ctx ends; a task that has to wait lends
// its CPU to its raylet meanwhile.
func (c *core) await(ctx context.Context, o *object) error {
	select {
	case <-o.Ready():
		return nil
	default:
	}
	done := c.blocked(ctx)
	defer done()
	select {
	case <-o.Ready():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
	c, err := current()
	if err != nil {
		return nil, nil, err
	}
	numReady = min(numReady, len(refs))
	objs := make([]*object, len(refs))
	for i, r := range refs {
		if r.err == nil {
			objs[i] = c.objectFor(objectKey{id: r.id, owner: r.owner})
		}
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	var done func()
	defer func() {
		if done != nil {
			done()
		}
	}()
	for {
		changed := c.mem.Changed()
		ready, pending = ready[:0], pending[:0]
		for i, r := range refs {
			if objs[i] == nil || objs[i].IsReady() {
				ready = append(ready, r)
			} else {
				pending = append(pending, r)
			}
		}
		if len(ready) >= numReady {
			return ready, pending, nil
		}
		if done == nil {
			done = c.blocked(ctx)
		}
		select {
		case <-changed:
		case <-deadline:
			return ready, pending, nil
		case <-ctx.Done():
			return ready, pending, ctx.Err()
		}
	}
}

// Put stores a value as an object owned by this process and returns its ref.
func Put[T any](ctx context.Context, v T) (ObjectRef[T], error) {
	c, err := current()
	if err != nil {
		return ObjectRef[T]{}, err
	}
	tc := c.taskOf(ctx)
	id := ids.PutID(tc.id, tc.puts.Add(1))
	ov, err := encode(v)
	if err != nil {
		return ObjectRef[T]{}, err
	}
	if ov, err = c.objs.Store(ctx, id, c.address, ov); err != nil {
		return ObjectRef[T]{}, err
	}
	c.mem.NewOwned([]ids.ObjectID{id}, "")
	h := c.newHandle(id)
	c.mem.Complete([]ids.ObjectID{id}, []*pb.ObjectValue{ov})
	return ObjectRef[T]{id: id, owner: c.address, h: h}, nil
}
