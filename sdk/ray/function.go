package ray

import (
	"context"
	"fmt"
	"sync"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// function is a registered remote function in untyped form.
type function struct {
	name  string
	nargs int
	nret  int
	// call decodes the arguments, runs the function and returns its
	// results, still to be encoded.
	call func(ctx context.Context, args []*pb.ObjectValue) ([]any, error)
	// inPlace marks the parameters of type ReadOnlyBytes: a stored
	// argument there is handed over as a view of the node's arena.
	inPlace []bool
}

// isInPlace says whether a parameter of type T takes stored bytes in place.
func isInPlace[T any]() bool {
	var v T
	_, ok := any(v).(ReadOnlyBytes)
	return ok
}

// registry holds every remote function by name; filled at init time.
var registry = struct {
	sync.RWMutex
	m map[string]*function
}{m: map[string]*function{}}

func register(f *function) *function {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.m[f.name]; dup {
		panic(fmt.Sprintf("ray: remote function %q registered twice", f.name))
	}
	registry.m[f.name] = f
	return f
}

func lookup(name string) *function {
	registry.RLock()
	defer registry.RUnlock()
	return registry.m[name]
}

func arg[T any](args []*pb.ObjectValue, i int) (T, error) {
	var zero T
	if i >= len(args) {
		return zero, fmt.Errorf("%w: %d arguments given, parameter %d missing", ErrBadArgument, len(args), i+1)
	}
	v, err := decode[T](args[i].Data, args[i].Format)
	if err != nil {
		return zero, fmt.Errorf("argument %d: %w", i+1, err)
	}
	return v, nil
}

func checkArity(name string, args []*pb.ObjectValue, n int) error {
	if len(args) != n {
		return fmt.Errorf("%w: %s takes %d arguments, got %d", ErrBadArgument, name, n, len(args))
	}
	return nil
}

func refsOf[R any](ids []objectKey, err error) ObjectRef[R] {
	if err != nil {
		return ObjectRef[R]{err: err}
	}
	return ObjectRef[R]{id: ids[0].id, owner: ids[0].owner, h: ids[0].h}
}

func ref2[R any](ids []objectKey, i int, err error) ObjectRef[R] {
	if err != nil {
		return ObjectRef[R]{err: err}
	}
	return ObjectRef[R]{id: ids[i].id, owner: ids[i].owner, h: ids[i].h}
}

// RemoteFunc0 is a remote function without arguments.
type RemoteFunc0[R any] struct{ f *function }

// Func0 registers fn as the remote function name.
func Func0[R any](name string, fn func(context.Context) (R, error)) RemoteFunc0[R] {
	return RemoteFunc0[R]{register(&function{name: name, nargs: 0, nret: 1,
		call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 0); err != nil {
				return nil, err
			}
			r, err := fn(ctx)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc0[R]) Remote(ctx context.Context, opts ...CallOption) ObjectRef[R] {
	ids, err := submit(ctx, f.f, nil, opts)
	return refsOf[R](ids, err)
}

// Name is the function's registered name.
func (f RemoteFunc0[R]) Name() string { return f.f.name }

// RemoteFunc1 is a remote function of one argument.
type RemoteFunc1[A, R any] struct{ f *function }

// Func1 registers fn as the remote function name.
func Func1[A, R any](name string, fn func(context.Context, A) (R, error)) RemoteFunc1[A, R] {
	return RemoteFunc1[A, R]{register(&function{name: name, nargs: 1, nret: 1, inPlace: []bool{isInPlace[A]()},
		call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 1); err != nil {
				return nil, err
			}
			a, err := arg[A](args, 0)
			if err != nil {
				return nil, err
			}
			r, err := fn(ctx, a)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc1[A, R]) Remote(ctx context.Context, a Arg[A], opts ...CallOption) ObjectRef[R] {
	ids, err := submit(ctx, f.f, []argumenter{a}, opts)
	return refsOf[R](ids, err)
}

// Name is the function's registered name.
func (f RemoteFunc1[A, R]) Name() string { return f.f.name }

// RemoteFunc2 is a remote function of two arguments.
type RemoteFunc2[A, B, R any] struct{ f *function }

// Func2 registers fn as the remote function name.
func Func2[A, B, R any](name string, fn func(context.Context, A, B) (R, error)) RemoteFunc2[A, B, R] {
	return RemoteFunc2[A, B, R]{register(&function{name: name, nargs: 2, nret: 1, inPlace: []bool{isInPlace[A](), isInPlace[B]()},
		call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 2); err != nil {
				return nil, err
			}
			a, err := arg[A](args, 0)
			if err != nil {
				return nil, err
			}
			b, err := arg[B](args, 1)
			if err != nil {
				return nil, err
			}
			r, err := fn(ctx, a, b)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc2[A, B, R]) Remote(ctx context.Context, a Arg[A], b Arg[B], opts ...CallOption) ObjectRef[R] {
	ids, err := submit(ctx, f.f, []argumenter{a, b}, opts)
	return refsOf[R](ids, err)
}

// Name is the function's registered name.
func (f RemoteFunc2[A, B, R]) Name() string { return f.f.name }

// RemoteFunc3 is a remote function of three arguments.
type RemoteFunc3[A, B, C, R any] struct{ f *function }

// Func3 registers fn as the remote function name.
func Func3[A, B, C, R any](name string, fn func(context.Context, A, B, C) (R, error)) RemoteFunc3[A, B, C, R] {
	return RemoteFunc3[A, B, C, R]{register(&function{name: name, nargs: 3, nret: 1, inPlace: []bool{isInPlace[A](), isInPlace[B](), isInPlace[C]()},
		call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 3); err != nil {
				return nil, err
			}
			a, err := arg[A](args, 0)
			if err != nil {
				return nil, err
			}
			b, err := arg[B](args, 1)
			if err != nil {
				return nil, err
			}
			c, err := arg[C](args, 2)
			if err != nil {
				return nil, err
			}
			r, err := fn(ctx, a, b, c)
			return []any{r}, err
		}})}
}

// Remote submits a call and returns the ref of its result at once.
func (f RemoteFunc3[A, B, C, R]) Remote(ctx context.Context, a Arg[A], b Arg[B], c Arg[C], opts ...CallOption) ObjectRef[R] {
	ids, err := submit(ctx, f.f, []argumenter{a, b, c}, opts)
	return refsOf[R](ids, err)
}

// Name is the function's registered name.
func (f RemoteFunc3[A, B, C, R]) Name() string { return f.f.name }

// RemoteFunc1x2 is a remote function of one argument with two results
// (num_returns=2): each result is its own object.
type RemoteFunc1x2[A, R1, R2 any] struct{ f *function }

// Func1x2 registers fn as the remote function name.
func Func1x2[A, R1, R2 any](name string, fn func(context.Context, A) (R1, R2, error)) RemoteFunc1x2[A, R1, R2] {
	return RemoteFunc1x2[A, R1, R2]{register(&function{name: name, nargs: 1, nret: 2, inPlace: []bool{isInPlace[A]()},
		call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 1); err != nil {
				return nil, err
			}
			a, err := arg[A](args, 0)
			if err != nil {
				return nil, err
			}
			r1, r2, err := fn(ctx, a)
			return []any{r1, r2}, err
		}})}
}

// Remote submits a call and returns the refs of its two results at once.
func (f RemoteFunc1x2[A, R1, R2]) Remote(ctx context.Context, a Arg[A], opts ...CallOption) (ObjectRef[R1], ObjectRef[R2]) {
	ids, err := submit(ctx, f.f, []argumenter{a}, opts)
	return ref2[R1](ids, 0, err), ref2[R2](ids, 1, err)
}

// Name is the function's registered name.
func (f RemoteFunc1x2[A, R1, R2]) Name() string { return f.f.name }

// RemoteFunc0x2 is a remote function without arguments and with two results.
type RemoteFunc0x2[R1, R2 any] struct{ f *function }

// Func0x2 registers fn as the remote function name.
func Func0x2[R1, R2 any](name string, fn func(context.Context) (R1, R2, error)) RemoteFunc0x2[R1, R2] {
	return RemoteFunc0x2[R1, R2]{register(&function{name: name, nargs: 0, nret: 2,
		call: func(ctx context.Context, args []*pb.ObjectValue) ([]any, error) {
			if err := checkArity(name, args, 0); err != nil {
				return nil, err
			}
			r1, r2, err := fn(ctx)
			return []any{r1, r2}, err
		}})}
}

// Remote submits a call and returns the refs of its two results at once.
func (f RemoteFunc0x2[R1, R2]) Remote(ctx context.Context, opts ...CallOption) (ObjectRef[R1], ObjectRef[R2]) {
	ids, err := submit(ctx, f.f, nil, opts)
	return ref2[R1](ids, 0, err), ref2[R2](ids, 1, err)
}

// argumenter is an Arg of any type.
type argumenter interface {
	argument() (argument, error)
}
