package ray

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"sync"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// ErrGeneratorDone is what ObjectRefGenerator.Next returns after the last
// item, as io.EOF ends a reader.
var ErrGeneratorDone = core.ErrGeneratorDone

// GeneratorBackpressure makes a generator's yield wait while n items it
// yielded are not yet taken by the consumer (Next or All), so a fast
// producer holds at most n items ahead (Ray's
// _generator_backpressure_num_objects). 0, the default, never waits. On a
// function that is not a generator the call fails with ErrInvalidOption.
func GeneratorBackpressure(n int) CallOption {
	return func(o *core.CallOptions) {
		if n < 0 {
			o.Err = fmt.Errorf("%w: GeneratorBackpressure(%d)", ErrInvalidOption, n)
		}
		o.Backpressure, o.BackpressureSet = n, true
	}
}

// ObjectRefGenerator is the stream of a generator task's items (Ray's
// ObjectRefGenerator): each item is an object of its own, owned by the
// caller, whose ref arrives as soon as the task yields it, while the task
// still runs. Consume it with All or Next, from one goroutine at a time.
// An item's ref is an ordinary ObjectRef: Get it, pass it to other tasks,
// Release it.
type ObjectRefGenerator[R any] struct {
	g   *core.Generator
	end ObjectRef[int] // the task's return: the item count, or its error
	err error          // a failure to submit
	mu  sync.Mutex
}

// newGenerator wraps a generator task's return keys.
func newGenerator[R any](keys []core.ObjectKey, err error) *ObjectRefGenerator[R] {
	if err != nil {
		return &ObjectRefGenerator[R]{err: err, end: ObjectRef[int]{err: err}}
	}
	c, err := core.Current()
	if err != nil {
		return &ObjectRefGenerator[R]{err: err, end: ObjectRef[int]{err: err}}
	}
	g, err := c.OpenGenerator(keys[0])
	if err != nil {
		return &ObjectRefGenerator[R]{err: err, end: ObjectRef[int]{err: err}}
	}
	gen := &ObjectRefGenerator[R]{g: g, end: refOf[int](keys[0])}
	// A generator dropped before its end stops its producer (its reports
	// are refused) and frees the items not taken.
	runtime.AddCleanup(gen, func(g *core.Generator) { g.Close() }, g)
	return gen
}

// Next returns the ref of the next item, waiting until the task yields
// it. After the last item it returns ErrGeneratorDone; if the task
// failed (an error, a panic, its worker died on every retry, Cancel) it
// returns that error after the items yielded before.
func (g *ObjectRefGenerator[R]) Next(ctx context.Context) (ObjectRef[R], error) {
	if g.err != nil {
		return ObjectRef[R]{err: g.err}, g.err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	k, err := g.g.Next(ctx)
	if err != nil {
		return ObjectRef[R]{err: err}, err
	}
	return refOf[R](k), nil
}

// All ranges over the items' refs as they arrive:
//
//	for ref, err := range gen.All(ctx) { ... }
//
// It ends after the last item, or after one pair carrying the task's
// error (or ctx's).
func (g *ObjectRefGenerator[R]) All(ctx context.Context) iter.Seq2[ObjectRef[R], error] {
	return func(yield func(ObjectRef[R], error) bool) {
		for {
			ref, err := g.Next(ctx)
			if errors.Is(err, ErrGeneratorDone) {
				return
			}
			if !yield(ref, err) || err != nil {
				return
			}
		}
	}
}

// Ref is the generator task's own result: the number of items it
// yielded, ready when it ended (or its error). Cancel(ctx, gen.Ref())
// stops the producer: its yield returns the context's error.
func (g *ObjectRefGenerator[R]) Ref() ObjectRef[int] { return g.end }

// Close stops consuming: the producer's next yield fails, and the items
// not taken are freed. Dropping the generator does the same.
func (g *ObjectRefGenerator[R]) Close() {
	if g.g != nil {
		g.g.Close()
	}
}

// genCall is the untyped run of a generator: fn yields through yield and
// returns the item count as the task's result.
func genCall(ctx context.Context, run func(ctx context.Context) error) ([]any, error) {
	err := run(ctx)
	return []any{core.Yielded(ctx)}, err
}

func yieldTo[R any](ctx context.Context) func(R) error {
	return func(r R) error { return core.Yield(ctx, r) }
}

// RemoteGen0 is a generator without arguments.
type RemoteGen0[R any] struct{ f *core.Function }

// Gen0 registers fn as the generator name: a remote function that yields
// items of type R one by one (Ray's generator task, num_returns
// "streaming"). yield returns once the caller's process has the item; its
// error (the call was cancelled or dropped) should end fn.
func Gen0[R any](name string, fn func(ctx context.Context, yield func(R) error) error) RemoteGen0[R] {
	return RemoteGen0[R]{core.Register(&core.Function{Name: name, NArgs: 0, NRet: 1, Generator: true,
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 0); err != nil {
				return nil, err
			}
			return genCall(ctx, func(ctx context.Context) error { return fn(ctx, yieldTo[R](ctx)) })
		}})}
}

// Remote submits a call and returns its stream of items at once.
func (f RemoteGen0[R]) Remote(ctx context.Context, opts ...CallOption) *ObjectRefGenerator[R] {
	return newGenerator[R](call(ctx, f.f, nil, opts))
}

// RemoteGen1 is a generator of one argument.
type RemoteGen1[A, R any] struct{ f *core.Function }

// Gen1 registers fn as the generator name (see Gen0).
func Gen1[A, R any](name string, fn func(ctx context.Context, a A, yield func(R) error) error) RemoteGen1[A, R] {
	return RemoteGen1[A, R]{core.Register(&core.Function{Name: name, NArgs: 1, NRet: 1, Generator: true, InPlace: []bool{isInPlace[A]()},
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			a, err := args1[A](ctx, name, args)
			if err != nil {
				return nil, err
			}
			return genCall(ctx, func(ctx context.Context) error { return fn(ctx, a, yieldTo[R](ctx)) })
		}})}
}

// Remote submits a call and returns its stream of items at once.
func (f RemoteGen1[A, R]) Remote(ctx context.Context, a Arg[A], opts ...CallOption) *ObjectRefGenerator[R] {
	return newGenerator[R](call(ctx, f.f, []argumenter{a}, opts))
}

// RemoteGen2 is a generator of two arguments.
type RemoteGen2[A, B, R any] struct{ f *core.Function }

// Gen2 registers fn as the generator name (see Gen0).
func Gen2[A, B, R any](name string, fn func(ctx context.Context, a A, b B, yield func(R) error) error) RemoteGen2[A, B, R] {
	return RemoteGen2[A, B, R]{core.Register(&core.Function{Name: name, NArgs: 2, NRet: 1, Generator: true, InPlace: []bool{isInPlace[A](), isInPlace[B]()},
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			a, b, err := args2[A, B](ctx, name, args)
			if err != nil {
				return nil, err
			}
			return genCall(ctx, func(ctx context.Context) error { return fn(ctx, a, b, yieldTo[R](ctx)) })
		}})}
}

// Remote submits a call and returns its stream of items at once.
func (f RemoteGen2[A, B, R]) Remote(ctx context.Context, a Arg[A], b Arg[B], opts ...CallOption) *ObjectRefGenerator[R] {
	return newGenerator[R](call(ctx, f.f, []argumenter{a, b}, opts))
}

// ActorGenMethod0 is an actor method without arguments that yields items.
type ActorGenMethod0[T, R any] struct{ m *core.ActorMethod }

// ActorGen0 registers a generator method of an actor class (see Gen0).
func ActorGen0[T, R any](class ActorType[T], name string, fn func(inst T, ctx context.Context, yield func(R) error) error) ActorGenMethod0[T, R] {
	m := core.RegisterMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		if err := checkArity(name, args, 0); err != nil {
			return nil, err
		}
		return genCall(ctx, func(ctx context.Context) error { return fn(inst.(T), ctx, yieldTo[R](ctx)) })
	})
	m.Generator = true
	return ActorGenMethod0[T, R]{m}
}

// Remote calls the method and returns its stream of items at once.
func (m ActorGenMethod0[T, R]) Remote(ctx context.Context, h ActorHandle[T]) *ObjectRefGenerator[R] {
	return newGenerator[R](callActor(ctx, h.ActorID, m.m, nil))
}

// ActorGenMethod1 is an actor method of one argument that yields items.
type ActorGenMethod1[T, A, R any] struct{ m *core.ActorMethod }

// ActorGen1 registers a generator method of one argument (see Gen0).
func ActorGen1[T, A, R any](class ActorType[T], name string, fn func(inst T, ctx context.Context, a A, yield func(R) error) error) ActorGenMethod1[T, A, R] {
	m := core.RegisterMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		a, err := args1[A](ctx, name, args)
		if err != nil {
			return nil, err
		}
		return genCall(ctx, func(ctx context.Context) error { return fn(inst.(T), ctx, a, yieldTo[R](ctx)) })
	})
	m.Generator = true
	return ActorGenMethod1[T, A, R]{m}
}

// Remote calls the method and returns its stream of items at once.
func (m ActorGenMethod1[T, A, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A]) *ObjectRefGenerator[R] {
	return newGenerator[R](callActor(ctx, h.ActorID, m.m, []argumenter{a}))
}
