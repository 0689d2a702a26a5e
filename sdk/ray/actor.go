package ray

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/fsm"
	cpb "github.com/manta-ray/manta/proto/controlpb"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet/resources"
)

// actorClass is a registered actor type in untyped form.
type actorClass struct {
	name string
	typ  reflect.Type
	// construct decodes the arguments and returns the new instance.
	construct func(ctx context.Context, args []*pb.ObjectValue) (any, error)
	methods   map[string]*actorMethod // filled at init time
}

type actorMethod struct {
	class *actorClass
	name  string
	nret  int
	call  func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error)
}

var actorRegistry = struct {
	sync.RWMutex
	m map[string]*actorClass
}{m: map[string]*actorClass{}}

func registerClass[T any](name string, construct func(ctx context.Context, args []*pb.ObjectValue) (any, error)) *actorClass {
	actorRegistry.Lock()
	defer actorRegistry.Unlock()
	if _, dup := actorRegistry.m[name]; dup {
		panic(fmt.Sprintf("ray: actor class %q registered twice", name))
	}
	c := &actorClass{name: name, typ: reflect.TypeFor[T](), construct: construct, methods: map[string]*actorMethod{}}
	actorRegistry.m[name] = c
	return c
}

func lookupClass(name string) *actorClass {
	actorRegistry.RLock()
	defer actorRegistry.RUnlock()
	return actorRegistry.m[name]
}

func registerMethod(c *actorClass, name string, nret int, call func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error)) *actorMethod {
	actorRegistry.Lock()
	defer actorRegistry.Unlock()
	if _, dup := c.methods[name]; dup {
		panic(fmt.Sprintf("ray: method %s.%s registered twice", c.name, name))
	}
	m := &actorMethod{class: c, name: name, nret: nret, call: call}
	c.methods[name] = m
	return m
}

// ActorType is implemented by the registered actor classes of instance
// type T (ActorClass0, ActorClass1, ...); methods are registered on it.
type ActorType[T any] interface {
	class() *actorClass
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
type ActorClass0[T any] struct{ c *actorClass }

func (a ActorClass0[T]) class() *actorClass { return a.c }
func (ActorClass0[T]) instance(T)           {}

// Name is the class's registered name.
func (a ActorClass0[T]) Name() string { return a.c.name }

// Actor0 registers an actor class: newFn builds an instance in the actor's
// worker process.
func Actor0[T any](name string, newFn func(context.Context) (T, error)) ActorClass0[T] {
	return ActorClass0[T]{registerClass[T](name, func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		if err := checkArity(name, args, 0); err != nil {
			return nil, err
		}
		return newFn(ctx)
	})}
}

// Remote creates an actor; it returns once the control plane has
// registered it (its placement goes on in the background: calls made
// meanwhile wait for it).
func (a ActorClass0[T]) Remote(ctx context.Context, opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, nil, opts)
	return ActorHandle[T]{ActorID: id}, err
}

// ActorClass1 is an actor class whose constructor takes one argument.
type ActorClass1[T, A any] struct{ c *actorClass }

func (a ActorClass1[T, A]) class() *actorClass { return a.c }
func (ActorClass1[T, A]) instance(T)           {}

// Name is the class's registered name.
func (a ActorClass1[T, A]) Name() string { return a.c.name }

// Actor1 registers an actor class whose constructor takes one argument.
func Actor1[T, A any](name string, newFn func(context.Context, A) (T, error)) ActorClass1[T, A] {
	return ActorClass1[T, A]{registerClass[T](name, func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		if err := checkArity(name, args, 1); err != nil {
			return nil, err
		}
		x, err := arg[A](args, 0)
		if err != nil {
			return nil, err
		}
		return newFn(ctx, x)
	})}
}

// Remote creates an actor (see ActorClass0.Remote).
func (a ActorClass1[T, A]) Remote(ctx context.Context, x Arg[A], opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, []argumenter{x}, opts)
	return ActorHandle[T]{ActorID: id}, err
}

// ActorMethod0 is a method without arguments.
type ActorMethod0[T, R any] struct{ m *actorMethod }

// Method0 registers a method of an actor class; fn is usually a method
// expression such as (*counter).Incr.
func Method0[T, R any](class ActorType[T], name string, fn func(T, context.Context) (R, error)) ActorMethod0[T, R] {
	return ActorMethod0[T, R]{registerMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
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
	return refsOf[R](submitActorCall(ctx, h.ActorID, m.m, nil))
}

// ActorMethod1 is a method of one argument.
type ActorMethod1[T, A, R any] struct{ m *actorMethod }

// Method1 registers a method of one argument.
func Method1[T, A, R any](class ActorType[T], name string, fn func(T, context.Context, A) (R, error)) ActorMethod1[T, A, R] {
	return ActorMethod1[T, A, R]{registerMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		if err := checkArity(name, args, 1); err != nil {
			return nil, err
		}
		a, err := arg[A](args, 0)
		if err != nil {
			return nil, err
		}
		r, err := fn(inst.(T), ctx, a)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod1[T, A, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A]) ObjectRef[R] {
	return refsOf[R](submitActorCall(ctx, h.ActorID, m.m, []argumenter{a}))
}

// ActorMethod2 is a method of two arguments.
type ActorMethod2[T, A, B, R any] struct{ m *actorMethod }

// Method2 registers a method of two arguments.
func Method2[T, A, B, R any](class ActorType[T], name string, fn func(T, context.Context, A, B) (R, error)) ActorMethod2[T, A, B, R] {
	return ActorMethod2[T, A, B, R]{registerMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
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
		r, err := fn(inst.(T), ctx, a, b)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod2[T, A, B, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A], b Arg[B]) ObjectRef[R] {
	return refsOf[R](submitActorCall(ctx, h.ActorID, m.m, []argumenter{a, b}))
}

// createActor registers an actor with the control plane, whose leader
// places it. Reference arguments are resolved first (the caller waits).
func createActor(ctx context.Context, cls *actorClass, args []argumenter, opts []CallOption) (string, error) {
	c, err := current()
	if err != nil {
		return "", err
	}
	o := newCallOptions(opts)
	if o.err != nil {
		return "", o.err
	}
	cp, err := c.controlPlane()
	if err != nil {
		return "", err
	}
	spec := &pb.TaskSpec{}
	refs, refKeys, err := encodeArgs(spec, args)
	if err != nil {
		return "", err
	}
	// Never unpinned: a restarted actor reruns its constructor with these
	// arguments, for as long as the actor may restart.
	c.pinArgs(refKeys)
	runtime.KeepAlive(args)
	// The constructor's reference arguments are resolved before the actor
	// is registered (DEPENDENCIES_UNREADY is not used yet).
	for j, i := range refs {
		ob := c.objectFor(refKeys[j])
		select {
		case <-ob.ready:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if ob.val.Error != nil {
			return "", taskErrorFrom(ob.val.Error)
		}
		spec.Args[i].Value = c.valueOf(ob)
	}
	spec.NumCpus = o.res[resources.CPU]
	init, err := proto.Marshal(&pb.PushTasksRequest{Tasks: []*pb.TaskSpec{spec}})
	if err != nil {
		return "", err
	}
	res := o.res
	if !o.cpuSet {
		// As in Ray, an actor holds no CPU unless it asks for one.
		res = res.Clone()
		delete(res, resources.CPU)
	}
	maxConc := o.maxConcurrency
	if maxConc == 0 {
		maxConc = 1
	}
	id, err := cp.CreateActor(ctx, &cpb.ActorInfo{JobId: c.jobID, ClassName: cls.name, Name: o.name, Namespace: o.namespace,
		Detached: o.detached, MaxRestarts: int32(o.maxRestarts), MaxTaskRetries: int32(o.maxTaskRetries),
		MaxConcurrency: int32(maxConc), Resources: res, InitArgs: init, BinarySha256: c.binarySHA, OwnerAddress: c.address})
	if err != nil {
		return "", fmt.Errorf("ray: create actor %s: %w", cls.name, err)
	}
	return id, nil
}

// GetActor returns the handle of the live actor named name (in the
// namespace given by the Namespace option, default ""). T must be the
// instance type of the actor's class. An unknown name is ErrActorNotFound.
func GetActor[T any](ctx context.Context, name string, opts ...CallOption) (ActorHandle[T], error) {
	c, err := current()
	if err != nil {
		return ActorHandle[T]{}, err
	}
	o := newCallOptions(opts)
	cp, err := c.controlPlane()
	if err != nil {
		return ActorHandle[T]{}, err
	}
	info, err := cp.GetActor(ctx, &cpb.GetActorRequest{Name: name, Namespace: o.namespace})
	if err != nil {
		if errors.Is(err, fsm.ErrActorNotFound) {
			return ActorHandle[T]{}, fmt.Errorf("%w: %v", ErrActorNotFound, err)
		}
		return ActorHandle[T]{}, err
	}
	cls := lookupClass(info.ClassName)
	if cls == nil || cls.typ != reflect.TypeFor[T]() {
		return ActorHandle[T]{}, fmt.Errorf("%w: actor %q is of class %s, not of type %v", ErrInvalidOption, name, info.ClassName, reflect.TypeFor[T]())
	}
	return ActorHandle[T]{ActorID: info.ActorId}, nil
}

// Kill kills the actor: its worker ends and calls fail with ErrActorDied.
// With noRestart false it is restarted if it has restarts left.
func Kill[T any](ctx context.Context, h ActorHandle[T], noRestart bool) error {
	c, err := current()
	if err != nil {
		return err
	}
	cp, err := c.controlPlane()
	if err != nil {
		return err
	}
	if err := cp.KillActor(ctx, h.ActorID, noRestart); err != nil {
		return err
	}
	if noRestart {
		// This process's later calls fail at once, without waiting for the
		// worker's end to come back through the watch.
		c.mu.Lock()
		ac := c.actorClients[h.ActorID]
		c.mu.Unlock()
		if ac != nil {
			ac.die(&pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED, Message: fmt.Sprintf("actor %s is dead: killed by ray.Kill", h.ActorID)})
		}
	}
	return nil
}
