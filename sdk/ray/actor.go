package ray

import (
	"context"
	"fmt"
	"reflect"
	"runtime"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// ActorType is implemented by the registered actor classes of instance
// type T (ActorClass0, ActorClass1, ...); methods are registered on it.
type ActorType[T any] interface {
	class() *core.ActorClass
	instance(T)
}

// ActorHandle names an actor whose instances are of type T. It is a small
// serialisable value: pass it to tasks and other actors, which can then
// call the actor too.
type ActorHandle[T any] struct {
	ActorID string `msgpack:"actor_id"`
}

// ID is the actor's ID.
func (h ActorHandle[T]) ID() string { return h.ActorID }

// ActorClass0 is an actor class whose constructor takes no arguments.
type ActorClass0[T any] struct{ c *core.ActorClass }

func (a ActorClass0[T]) class() *core.ActorClass { return a.c }
func (ActorClass0[T]) instance(T)                {}

// Name is the class's registered name.
func (a ActorClass0[T]) Name() string { return a.c.Name }

// Actor0 registers an actor class: newFn builds an instance in the actor's
// worker process.
func Actor0[T any](name string, newFn func(context.Context) (T, error)) ActorClass0[T] {
	return ActorClass0[T]{core.RegisterClass(&core.ActorClass{Name: name, Type: reflect.TypeFor[T](), Construct: func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		if err := checkArity(name, args, 0); err != nil {
			return nil, err
		}
		return newFn(ctx)
	}})}
}

// Remote creates an actor; it returns once the control plane has
// registered it (its placement goes on in the background: calls made
// meanwhile wait for it). With reference arguments (the other arities)
// it does not wait for them either: the actor is DEPENDENCIES_UNREADY until
// they are ready, and DEAD with the argument's error if one fails.
func (a ActorClass0[T]) Remote(ctx context.Context, opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, nil, opts)
	return ActorHandle[T]{ActorID: id}, err
}

// ActorClass1 is an actor class whose constructor takes one argument.
type ActorClass1[T, A any] struct{ c *core.ActorClass }

func (a ActorClass1[T, A]) class() *core.ActorClass { return a.c }
func (ActorClass1[T, A]) instance(T)                {}

// Name is the class's registered name.
func (a ActorClass1[T, A]) Name() string { return a.c.Name }

// Actor1 registers an actor class whose constructor takes one argument.
func Actor1[T, A any](name string, newFn func(context.Context, A) (T, error)) ActorClass1[T, A] {
	return ActorClass1[T, A]{core.RegisterClass(&core.ActorClass{Name: name, Type: reflect.TypeFor[T](), Construct: func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		x, err := args1[A](ctx, name, args)
		if err != nil {
			return nil, err
		}
		return newFn(ctx, x)
	}})}
}

// Remote creates an actor (see ActorClass0.Remote).
func (a ActorClass1[T, A]) Remote(ctx context.Context, x Arg[A], opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, []argumenter{x}, opts)
	return ActorHandle[T]{ActorID: id}, err
}

// ActorClass2 is an actor class whose constructor takes two arguments.
type ActorClass2[T, A, B any] struct{ c *core.ActorClass }

func (a ActorClass2[T, A, B]) class() *core.ActorClass { return a.c }
func (ActorClass2[T, A, B]) instance(T)                {}

// Name is the class's registered name.
func (a ActorClass2[T, A, B]) Name() string { return a.c.Name }

// Actor2 registers an actor class whose constructor takes two arguments.
func Actor2[T, A, B any](name string, newFn func(context.Context, A, B) (T, error)) ActorClass2[T, A, B] {
	return ActorClass2[T, A, B]{core.RegisterClass(&core.ActorClass{Name: name, Type: reflect.TypeFor[T](), Construct: func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		x, y, err := args2[A, B](ctx, name, args)
		if err != nil {
			return nil, err
		}
		return newFn(ctx, x, y)
	}})}
}

// Remote creates an actor (see ActorClass0.Remote).
func (a ActorClass2[T, A, B]) Remote(ctx context.Context, x Arg[A], y Arg[B], opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, []argumenter{x, y}, opts)
	return ActorHandle[T]{ActorID: id}, err
}

// ActorClass3 is an actor class whose constructor takes three arguments.
type ActorClass3[T, A, B, C any] struct{ c *core.ActorClass }

func (a ActorClass3[T, A, B, C]) class() *core.ActorClass { return a.c }
func (ActorClass3[T, A, B, C]) instance(T)                {}

// Name is the class's registered name.
func (a ActorClass3[T, A, B, C]) Name() string { return a.c.Name }

// Actor3 registers an actor class whose constructor takes three arguments.
func Actor3[T, A, B, C any](name string, newFn func(context.Context, A, B, C) (T, error)) ActorClass3[T, A, B, C] {
	return ActorClass3[T, A, B, C]{core.RegisterClass(&core.ActorClass{Name: name, Type: reflect.TypeFor[T](), Construct: func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		x, y, z, err := args3[A, B, C](ctx, name, args)
		if err != nil {
			return nil, err
		}
		return newFn(ctx, x, y, z)
	}})}
}

// Remote creates an actor (see ActorClass0.Remote).
func (a ActorClass3[T, A, B, C]) Remote(ctx context.Context, x Arg[A], y Arg[B], z Arg[C], opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, []argumenter{x, y, z}, opts)
	return ActorHandle[T]{ActorID: id}, err
}

// ActorMethod0 is a method without arguments.
type ActorMethod0[T, R any] struct{ m *core.ActorMethod }

// Method0 registers a method of an actor class; fn is usually a method
// expression such as (*counter).Incr.
func Method0[T, R any](class ActorType[T], name string, fn func(T, context.Context) (R, error)) ActorMethod0[T, R] {
	return ActorMethod0[T, R]{core.RegisterMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		if err := checkArity(name, args, 0); err != nil {
			return nil, err
		}
		r, err := fn(inst.(T), ctx)
		return []any{r}, err
	})}
}

// Remote calls the method on the actor and returns the ref of its result
// at once. Calls from one caller run in the order they were made.
func (m ActorMethod0[T, R]) Remote(ctx context.Context, h ActorHandle[T]) ObjectRef[R] {
	return refsOf[R](callActor(ctx, h.ActorID, m.m, nil))
}

// ActorMethod1 is a method of one argument.
type ActorMethod1[T, A, R any] struct{ m *core.ActorMethod }

// Method1 registers a method of one argument.
func Method1[T, A, R any](class ActorType[T], name string, fn func(T, context.Context, A) (R, error)) ActorMethod1[T, A, R] {
	return ActorMethod1[T, A, R]{core.RegisterMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		a, err := args1[A](ctx, name, args)
		if err != nil {
			return nil, err
		}
		r, err := fn(inst.(T), ctx, a)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod1[T, A, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A]) ObjectRef[R] {
	return refsOf[R](callActor(ctx, h.ActorID, m.m, []argumenter{a}))
}

// ActorMethod2 is a method of two arguments.
type ActorMethod2[T, A, B, R any] struct{ m *core.ActorMethod }

// Method2 registers a method of two arguments.
func Method2[T, A, B, R any](class ActorType[T], name string, fn func(T, context.Context, A, B) (R, error)) ActorMethod2[T, A, B, R] {
	return ActorMethod2[T, A, B, R]{core.RegisterMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		a, b, err := args2[A, B](ctx, name, args)
		if err != nil {
			return nil, err
		}
		r, err := fn(inst.(T), ctx, a, b)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod2[T, A, B, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A], b Arg[B]) ObjectRef[R] {
	return refsOf[R](callActor(ctx, h.ActorID, m.m, []argumenter{a, b}))
}

// ActorMethod3 is a method of three arguments.
type ActorMethod3[T, A, B, C, R any] struct{ m *core.ActorMethod }

// Method3 registers a method of three arguments.
func Method3[T, A, B, C, R any](class ActorType[T], name string, fn func(T, context.Context, A, B, C) (R, error)) ActorMethod3[T, A, B, C, R] {
	return ActorMethod3[T, A, B, C, R]{core.RegisterMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		a, b, c, err := args3[A, B, C](ctx, name, args)
		if err != nil {
			return nil, err
		}
		r, err := fn(inst.(T), ctx, a, b, c)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod3[T, A, B, C, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A], b Arg[B], c Arg[C]) ObjectRef[R] {
	return refsOf[R](callActor(ctx, h.ActorID, m.m, []argumenter{a, b, c}))
}

// ActorMethod4 is a method of four arguments.
type ActorMethod4[T, A, B, C, D, R any] struct{ m *core.ActorMethod }

// Method4 registers a method of four arguments.
func Method4[T, A, B, C, D, R any](class ActorType[T], name string, fn func(T, context.Context, A, B, C, D) (R, error)) ActorMethod4[T, A, B, C, D, R] {
	return ActorMethod4[T, A, B, C, D, R]{core.RegisterMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		a, b, c, d, err := args4[A, B, C, D](ctx, name, args)
		if err != nil {
			return nil, err
		}
		r, err := fn(inst.(T), ctx, a, b, c, d)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod4[T, A, B, C, D, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A], b Arg[B], c Arg[C], d Arg[D]) ObjectRef[R] {
	return refsOf[R](callActor(ctx, h.ActorID, m.m, []argumenter{a, b, c, d}))
}

// createActor registers an actor with the control plane (the runtime's
// CreateActor), keeping args reachable until their refs are pinned.
func createActor(ctx context.Context, cls *core.ActorClass, args []argumenter, opts []CallOption) (string, error) {
	c, err := core.Current()
	if err != nil {
		return "", err
	}
	o := newCallOptions(opts)
	if o.Err != nil {
		return "", o.Err
	}
	var buf [4]core.Arg
	as, err := untyped(args, &buf)
	if err != nil {
		return "", err
	}
	id, err := c.CreateActor(ctx, cls, as, &o)
	runtime.KeepAlive(args)
	return id, err
}

// callActor submits a call of m to actor actorID, keeping args reachable
// until their refs are pinned.
func callActor(ctx context.Context, actorID string, m *core.ActorMethod, args []argumenter) ([]core.ObjectKey, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	var buf [4]core.Arg
	as, err := untyped(args, &buf)
	if err != nil {
		return nil, err
	}
	keys, err := c.SubmitActorCall(ctx, actorID, m, as)
	runtime.KeepAlive(args)
	return keys, err
}

// GetActor returns the handle of the live actor named name (in the
// namespace given by the Namespace option, default ""). T must be the
// instance type of the actor's class. An unknown name is ErrActorNotFound.
func GetActor[T any](ctx context.Context, name string, opts ...CallOption) (ActorHandle[T], error) {
	c, err := core.Current()
	if err != nil {
		return ActorHandle[T]{}, err
	}
	o := newCallOptions(opts)
	info, err := c.GetActor(ctx, name, o.Namespace)
	if err != nil {
		return ActorHandle[T]{}, err
	}
	cls := core.LookupClass(info.ClassName)
	if cls == nil || cls.Type != reflect.TypeFor[T]() {
		return ActorHandle[T]{}, fmt.Errorf("%w: actor %q is of class %s, not of type %v", ErrInvalidOption, name, info.ClassName, reflect.TypeFor[T]())
	}
	return ActorHandle[T]{ActorID: info.ActorId}, nil
}

// Kill kills the actor: its worker ends and calls fail with ErrActorDied.
// With noRestart false it is restarted if it has restarts left.
func Kill[T any](ctx context.Context, h ActorHandle[T], noRestart bool) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	return c.KillActor(ctx, h.ActorID, noRestart)
}
