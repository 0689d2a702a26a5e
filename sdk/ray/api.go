package ray

import (
	"context"
	"time"

	"github.com/manta-ray/manta/internal/ids"
)

// Get waits for the object and returns its value, or the task's error (a
// *TaskError). It gives up when ctx ends.
func Get[T any](ctx context.Context, ref ObjectRef[T]) (T, error) {
	var zero T
	if ref.err != nil {
		return zero, ref.err
	}
	c, err := current()
	if err != nil {
		return zero, err
	}
	o := c.objectFor(objectKey{ref.id, ref.owner})
	select {
	case <-o.ready:
	default:
		done := c.blocked(ctx)
		select {
		case <-o.ready:
			done()
		case <-ctx.Done():
			done()
			return zero, ctx.Err()
		}
	}
	data, format, err := c.valueData(ctx, o.val, ref.id)
	if err != nil {
		return zero, err
	}
	return decode[T](data, format)
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
			objs[i] = c.objectFor(objectKey{r.id, r.owner})
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
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		ready, pending = ready[:0], pending[:0]
		for i, r := range refs {
			if objs[i] == nil || isReady(objs[i]) {
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

func isReady(o *object) bool {
	select {
	case <-o.ready:
		return true
	default:
		return false
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
	if ov, err = c.store(ctx, id, ov); err != nil {
		return ObjectRef[T]{}, err
	}
	c.complete(id, ov)
	return ObjectRef[T]{id: id, owner: c.address}, nil
}
