package ray

import (
	"context"
	"fmt"
	"runtime"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// isInPlace says whether a parameter of type T takes stored bytes in place.
func isInPlace[T any]() bool {
	var v T
	_, ok := any(v).(ReadOnlyBytes)
	return ok
}

func arg[T any](ctx context.Context, args []*pb.ObjectValue, i int) (T, error) {
	var zero T
	if i >= len(args) {
		return zero, fmt.Errorf("%w: %d arguments given, parameter %d missing", ErrBadArgument, len(args), i+1)
	}
	v, err := decodeIn[T](ctx, args[i].Data, args[i].Format)
	if err != nil {
		return zero, fmt.Errorf("argument %d: %w", i+1, err)
	}
	return v, nil
}

// args1 ... args4 check a call's arity and decode its arguments.
func args1[A any](ctx context.Context, name string, args []*pb.ObjectValue) (a A, err error) {
	if err = checkArity(name, args, 1); err == nil {
		a, err = arg[A](ctx, args, 0)
	}
	return a, err
}

func args2[A, B any](ctx context.Context, name string, args []*pb.ObjectValue) (a A, b B, err error) {
	if err = checkArity(name, args, 2); err != nil {
		return a, b, err
	}
	if a, err = arg[A](ctx, args, 0); err != nil {
		return a, b, err
	}
	b, err = arg[B](ctx, args, 1)
	return a, b, err
}

func args3[A, B, C any](ctx context.Context, name string, args []*pb.ObjectValue) (a A, b B, c C, err error) {
	if err = checkArity(name, args, 3); err != nil {
		return a, b, c, err
	}
	if a, b, err = args2[A, B](ctx, name, args[:2]); err != nil {
		return a, b, c, err
	}
	c, err = arg[C](ctx, args, 2)
	return a, b, c, err
}

func args4[A, B, C, D any](ctx context.Context, name string, args []*pb.ObjectValue) (a A, b B, c C, d D, err error) {
	if err = checkArity(name, args, 4); err != nil {
		return a, b, c, d, err
	}
	if a, b, c, err = args3[A, B, C](ctx, name, args[:3]); err != nil {
		return a, b, c, d, err
	}
	d, err = arg[D](ctx, args, 3)
	return a, b, c, d, err
}

func checkArity(name string, args []*pb.ObjectValue, n int) error {
	if len(args) != n {
		return fmt.Errorf("%w: %s takes %d arguments, got %d", ErrBadArgument, name, n, len(args))
	}
	return nil
}

// call submits a task of f and returns the refs of its returns (the
// runtime's untyped form), keeping args reachable until their refs are
// pinned.
func call(ctx context.Context, f *core.Function, args []argumenter, opts []CallOption) ([]core.ObjectKey, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	o := newCallOptions(opts)
	if o.Err != nil {
		return nil, o.Err
	}
	var buf [4]core.Arg
	as, err := untyped(args, &buf)
	if err != nil {
		return nil, err
	}
	keys, err := c.Submit(ctx, f, as, &o)
	runtime.KeepAlive(args)
	return keys, err
}

func refsOf[R any](keys []core.ObjectKey, err error) ObjectRef[R] {
	if err != nil {
		return ObjectRef[R]{err: err}
	}
	return refOf[R](keys[0])
}

func ref2[R any](keys []core.ObjectKey, i int, err error) ObjectRef[R] {
	if err != nil {
		return ObjectRef[R]{err: err}
	}
	return refOf[R](keys[i])
}

// RemoteFunc0 is a remote function without arguments.
type RemoteFunc0[R any] struct{ f *core.Function }

// Func0 registers fn as the remote function name.
func Func0[R any](name string, fn func(context.Context) (R, error)) RemoteFunc0[R] {
	return RemoteFunc0[R]{core.Register(&core.Function{Name: name, NArgs: 0, NRet: 1,
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 0); err != nil {
				return nil, err
			}
			r, err := fn(ctx)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc0[R]) Remote(ctx context.Context, opts ...CallOption) ObjectRef[R] {
	keys, err := call(ctx, f.f, nil, opts)
	return refsOf[R](keys, err)
}

// Name is the function's registered name.
func (f RemoteFunc0[R]) Name() string { return f.f.Name }

// RemoteFunc1 is a remote function of one argument.
type RemoteFunc1[A, R any] struct{ f *core.Function }

// Func1 registers fn as the remote function name.
func Func1[A, R any](name string, fn func(context.Context, A) (R, error)) RemoteFunc1[A, R] {
	return RemoteFunc1[A, R]{core.Register(&core.Function{Name: name, NArgs: 1, NRet: 1, InPlace: []bool{isInPlace[A]()},
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			a, err := args1[A](ctx, name, args)
			if err != nil {
				return nil, err
			}
			r, err := fn(ctx, a)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc1[A, R]) Remote(ctx context.Context, a Arg[A], opts ...CallOption) ObjectRef[R] {
	keys, err := call(ctx, f.f, []argumenter{a}, opts)
	return refsOf[R](keys, err)
}

// Name is the function's registered name.
func (f RemoteFunc1[A, R]) Name() string { return f.f.Name }

// RemoteFunc2 is a remote function of two arguments.
type RemoteFunc2[A, B, R any] struct{ f *core.Function }

// Func2 registers fn as the remote function name.
func Func2[A, B, R any](name string, fn func(context.Context, A, B) (R, error)) RemoteFunc2[A, B, R] {
	return RemoteFunc2[A, B, R]{core.Register(&core.Function{Name: name, NArgs: 2, NRet: 1, InPlace: []bool{isInPlace[A](), isInPlace[B]()},
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			a, b, err := args2[A, B](ctx, name, args)
			if err != nil {
				return nil, err
			}
			r, err := fn(ctx, a, b)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc2[A, B, R]) Remote(ctx context.Context, a Arg[A], b Arg[B], opts ...CallOption) ObjectRef[R] {
	keys, err := call(ctx, f.f, []argumenter{a, b}, opts)
	return refsOf[R](keys, err)
}

// Name is the function's registered name.
func (f RemoteFunc2[A, B, R]) Name() string { return f.f.Name }

// RemoteFunc3 is a remote function of three arguments.
type RemoteFunc3[A, B, C, R any] struct{ f *core.Function }

// Func3 registers fn as the remote function name.
func Func3[A, B, C, R any](name string, fn func(context.Context, A, B, C) (R, error)) RemoteFunc3[A, B, C, R] {
	return RemoteFunc3[A, B, C, R]{core.Register(&core.Function{Name: name, NArgs: 3, NRet: 1, InPlace: []bool{isInPlace[A](), isInPlace[B](), isInPlace[C]()},
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			a, b, c, err := args3[A, B, C](ctx, name, args)
			if err != nil {
				return nil, err
			}
			r, err := fn(ctx, a, b, c)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc3[A, B, C, R]) Remote(ctx context.Context, a Arg[A], b Arg[B], c Arg[C], opts ...CallOption) ObjectRef[R] {
	keys, err := call(ctx, f.f, []argumenter{a, b, c}, opts)
	return refsOf[R](keys, err)
}

// Name is the function's registered name.
func (f RemoteFunc3[A, B, C, R]) Name() string { return f.f.Name }

// RemoteFunc1x2 is a remote function of one argument with two results
// (num_returns=2): each result is its own object.
type RemoteFunc1x2[A, R1, R2 any] struct{ f *core.Function }

// Func1x2 registers fn as the remote function name.
func Func1x2[A, R1, R2 any](name string, fn func(context.Context, A) (R1, R2, error)) RemoteFunc1x2[A, R1, R2] {
	return RemoteFunc1x2[A, R1, R2]{core.Register(&core.Function{Name: name, NArgs: 1, NRet: 2, InPlace: []bool{isInPlace[A]()},
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			a, err := args1[A](ctx, name, args)
			if err != nil {
				return nil, err
			}
			r1, r2, err := fn(ctx, a)
			return []any{r1, r2}, err
		}})}
}

// Remote submits a call and returns the refs of its two results at once.
func (f RemoteFunc1x2[A, R1, R2]) Remote(ctx context.Context, a Arg[A], opts ...CallOption) (ObjectRef[R1], ObjectRef[R2]) {
	keys, err := call(ctx, f.f, []argumenter{a}, opts)
	return ref2[R1](keys, 0, err), ref2[R2](keys, 1, err)
}

// Name is the function's registered name.
func (f RemoteFunc1x2[A, R1, R2]) Name() string { return f.f.Name }

// RemoteFunc2x2 is a remote function of two arguments with two results.
type RemoteFunc2x2[A, B, R1, R2 any] struct{ f *core.Function }

// Func2x2 registers fn as the remote function name.
func Func2x2[A, B, R1, R2 any](name string, fn func(context.Context, A, B) (R1, R2, error)) RemoteFunc2x2[A, B, R1, R2] {
	return RemoteFunc2x2[A, B, R1, R2]{core.Register(&core.Function{Name: name, NArgs: 2, NRet: 2, InPlace: []bool{isInPlace[A](), isInPlace[B]()},
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			a, b, err := args2[A, B](ctx, name, args)
			if err != nil {
				return nil, err
			}
			r1, r2, err := fn(ctx, a, b)
			return []any{r1, r2}, err
		}})}
}

// Remote submits a call and returns the refs of its two results at once.
func (f RemoteFunc2x2[A, B, R1, R2]) Remote(ctx context.Context, a Arg[A], b Arg[B], opts ...CallOption) (ObjectRef[R1], ObjectRef[R2]) {
	keys, err := call(ctx, f.f, []argumenter{a, b}, opts)
	return ref2[R1](keys, 0, err), ref2[R2](keys, 1, err)
}

// Name is the function's registered name.
func (f RemoteFunc2x2[A, B, R1, R2]) Name() string { return f.f.Name }

// RemoteFunc0x2 is a remote function without arguments and with two results.
type RemoteFunc0x2[R1, R2 any] struct{ f *core.Function }

// Func0x2 registers fn as the remote function name.
func Func0x2[R1, R2 any](name string, fn func(context.Context) (R1, R2, error)) RemoteFunc0x2[R1, R2] {
	return RemoteFunc0x2[R1, R2]{core.Register(&core.Function{Name: name, NArgs: 0, NRet: 2,
		Call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 0); err != nil {
				return nil, err
			}
			r1, r2, err := fn(ctx)
			return []any{r1, r2}, err
		}})}
}

// Remote submits a call and returns the refs of its two results at once.
func (f RemoteFunc0x2[R1, R2]) Remote(ctx context.Context, opts ...CallOption) (ObjectRef[R1], ObjectRef[R2]) {
	keys, err := call(ctx, f.f, nil, opts)
	return ref2[R1](keys, 0, err), ref2[R2](keys, 1, err)
}
