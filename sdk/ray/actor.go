package ray

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/ids"
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
// meanwhile wait for it). With reference arguments (the other arities)
// it does not wait for them either: the actor is DEPENDENCIES_UNREADY until
// they are ready, and DEAD with the argument's error if one fails.
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

// ActorClass2 is an actor class whose constructor takes two arguments.
type ActorClass2[T, A, B any] struct{ c *actorClass }

func (a ActorClass2[T, A, B]) class() *actorClass { return a.c }
func (ActorClass2[T, A, B]) instance(T)           {}

// Name is the class's registered name.
func (a ActorClass2[T, A, B]) Name() string { return a.c.name }

// Actor2 registers an actor class whose constructor takes two arguments.
func Actor2[T, A, B any](name string, newFn func(context.Context, A, B) (T, error)) ActorClass2[T, A, B] {
	return ActorClass2[T, A, B]{registerClass[T](name, func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		if err := checkArity(name, args, 2); err != nil {
			return nil, err
		}
		x, err := arg[A](args, 0)
		if err != nil {
			return nil, err
		}
		y, err := arg[B](args, 1)
		if err != nil {
			return nil, err
		}
		return newFn(ctx, x, y)
	})}
}

// Remote creates an actor (see ActorClass0.Remote).
func (a ActorClass2[T, A, B]) Remote(ctx context.Context, x Arg[A], y Arg[B], opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, []argumenter{x, y}, opts)
	return ActorHandle[T]{ActorID: id}, err
}

// ActorClass3 is an actor class whose constructor takes three arguments.
type ActorClass3[T, A, B, C any] struct{ c *actorClass }

func (a ActorClass3[T, A, B, C]) class() *actorClass { return a.c }
func (ActorClass3[T, A, B, C]) instance(T)           {}

// Name is the class's registered name.
func (a ActorClass3[T, A, B, C]) Name() string { return a.c.name }

// Actor3 registers an actor class whose constructor takes three arguments.
func Actor3[T, A, B, C any](name string, newFn func(context.Context, A, B, C) (T, error)) ActorClass3[T, A, B, C] {
	return ActorClass3[T, A, B, C]{registerClass[T](name, func(ctx context.Context, args []*pb.ObjectValue) (any, error) {
		if err := checkArity(name, args, 3); err != nil {
			return nil, err
		}
		x, err := arg[A](args, 0)
		if err != nil {
			return nil, err
		}
		y, err := arg[B](args, 1)
		if err != nil {
			return nil, err
		}
		z, err := arg[C](args, 2)
		if err != nil {
			return nil, err
		}
		return newFn(ctx, x, y, z)
	})}
}

// Remote creates an actor (see ActorClass0.Remote).
func (a ActorClass3[T, A, B, C]) Remote(ctx context.Context, x Arg[A], y Arg[B], z Arg[C], opts ...CallOption) (ActorHandle[T], error) {
	id, err := createActor(ctx, a.c, []argumenter{x, y, z}, opts)
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

// ActorMethod3 is a method of three arguments.
type ActorMethod3[T, A, B, C, R any] struct{ m *actorMethod }

// Method3 registers a method of three arguments.
func Method3[T, A, B, C, R any](class ActorType[T], name string, fn func(T, context.Context, A, B, C) (R, error)) ActorMethod3[T, A, B, C, R] {
	return ActorMethod3[T, A, B, C, R]{registerMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
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
		r, err := fn(inst.(T), ctx, a, b, c)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod3[T, A, B, C, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A], b Arg[B], c Arg[C]) ObjectRef[R] {
	return refsOf[R](submitActorCall(ctx, h.ActorID, m.m, []argumenter{a, b, c}))
}

// ActorMethod4 is a method of four arguments.
type ActorMethod4[T, A, B, C, D, R any] struct{ m *actorMethod }

// Method4 registers a method of four arguments.
func Method4[T, A, B, C, D, R any](class ActorType[T], name string, fn func(T, context.Context, A, B, C, D) (R, error)) ActorMethod4[T, A, B, C, D, R] {
	return ActorMethod4[T, A, B, C, D, R]{registerMethod(class.class(), name, 1, func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error) {
		if err := checkArity(name, args, 4); err != nil {
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
		d, err := arg[D](args, 3)
		if err != nil {
			return nil, err
		}
		r, err := fn(inst.(T), ctx, a, b, c, d)
		return []any{r}, err
	})}
}

// Remote calls the method (see ActorMethod0.Remote).
func (m ActorMethod4[T, A, B, C, D, R]) Remote(ctx context.Context, h ActorHandle[T], a Arg[A], b Arg[B], c Arg[C], d Arg[D]) ObjectRef[R] {
	return refsOf[R](submitActorCall(ctx, h.ActorID, m.m, []argumenter{a, b, c, d}))
}

// createActor registers an actor with the control plane, whose leader
// places it. Without reference arguments it is registered PENDING_CREATION
// with its arguments. With them it is registered DEPENDENCIES_UNREADY (its
// name taken, so a clash fails here) and an owned goroutine resolves the
// references and hands the arguments over, as Ray does: the caller gets the
// handle at once, and calls made meanwhile wait for the actor to be ALIVE.
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
	spec := &pb.TaskSpec{NumCpus: o.res[resources.CPU]}
	refs, refKeys, err := encodeArgs(spec, args)
	if err != nil {
		return "", err
	}
	// Never unpinned: a restarted actor reruns its constructor with these
	// arguments, for as long as the actor may restart. Pinned before this
	// returns, so the caller may drop its refs at once.
	c.pinArgs(refKeys)
	runtime.KeepAlive(args)
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
	info := &cpb.ActorInfo{JobId: c.jobID, ClassName: cls.name, Name: o.name, Namespace: o.namespace,
		Detached: o.detached, MaxRestarts: int32(o.maxRestarts), MaxTaskRetries: int32(o.maxTaskRetries),
		MaxConcurrency: int32(maxConc), Resources: res, BinarySha256: c.binarySHA, OwnerAddress: c.address}
	if !o.runtimeEnv.isZero() {
		env, err := c.resolveEnv(ctx, o.runtimeEnv)
		if err != nil {
			return "", err
		}
		info.RuntimeEnv = &cpb.RuntimeEnv{EnvVars: env.EnvVars, WorkingDir: env.WorkingDir}
	}
	if len(refs) == 0 {
		if info.InitArgs, err = marshalInitArgs(spec); err != nil {
			return "", err
		}
	} else {
		info.State = cpb.ActorState_DEPENDENCIES_UNREADY
	}
	id, err := cp.CreateActor(ctx, info)
	if err != nil {
		return "", fmt.Errorf("ray: create actor %s: %w", cls.name, err)
	}
	if len(refs) > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.resolveActorArgs(cp, id, spec, refs, refKeys)
		}()
	}
	return id, nil
}

// marshalInitArgs encodes a constructor's (resolved) arguments as the
// control plane keeps them: the creation task's PushTasks request.
func marshalInitArgs(spec *pb.TaskSpec) ([]byte, error) {
	return proto.Marshal(&pb.PushTasksRequest{Tasks: []*pb.TaskSpec{spec}})
}

// actorArgsReportTimeout bounds the last report of an owner that shuts
// down before its actor's constructor arguments are ready.
const actorArgsReportTimeout = 5 * time.Second

// resolveActorArgs waits for the reference arguments of a DEPENDENCIES_UNREADY
// actor's constructor and tells the control plane: with the arguments (the
// actor then is placed) or with the first failure (the actor is then DEAD,
// and calls fail with ErrActorDied naming the argument's error).
func (c *core) resolveActorArgs(cp *cpclient.Client, id string, spec *pb.TaskSpec, refs []int, refKeys []objectKey) {
	// fail makes the actor DEAD with cause "a constructor argument failed:
	// msg". When this process is shutting down its own context is gone, and
	// the report still matters: a job's actors die with the job, but a
	// detached one would wait forever. It is then bounded, as the control
	// plane may be gone too.
	fail := func(msg string) {
		ctx := c.ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), actorArgsReportTimeout)
			defer cancel()
		}
		if _, err := cp.ResolveActorDependencies(ctx, id, nil, msg); err != nil {
			c.log.Warn("could not fail an actor whose constructor arguments failed", zap.String("actor", id), zap.Error(err))
		}
	}
	var producers []ids.TaskID
	for j, i := range refs {
		k := refKeys[j]
		ob := c.objectFor(k)
		select {
		case <-ob.Ready():
		case <-c.ctx.Done():
			fail("its owner exited before they were ready")
			return
		}
		if e := ob.Raw().Error; e != nil {
			fail(taskErrorFrom(e).Error())
			return
		}
		v := c.mem.Value(ob)
		spec.Args[i].Value = v
		if p, ok := c.producerToWait(k.id, k.owner, v); ok {
			producers = append(producers, p)
		}
	}
	// The actor consumes outputs of this owner's tasks: their lineage
	// commits first (lineage.go), as for an actor call's arguments.
	c.waitCommitted(c.ctx, producers)
	if c.ctx.Err() != nil {
		fail("its owner exited before they were ready")
		return
	}
	init, err := marshalInitArgs(spec)
	if err != nil {
		fail("the arguments could not be encoded: " + err.Error())
		return
	}
	if _, err := cp.ResolveActorDependencies(c.ctx, id, init, ""); err != nil {
		if c.ctx.Err() != nil {
			fail("its owner exited before they were handed over")
			return
		}
		// Rejected arguments (too large, say) would leave the actor
		// waiting forever: let it die with the reason instead.
		c.log.Error("could not hand over an actor's constructor arguments", zap.String("actor", id), zap.Error(err))
		fail("the arguments could not be handed over: " + err.Error())
	}
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
		as := c.actorSub
		c.mu.Unlock()
		if as != nil {
			as.Dead(h.ActorID, &pb.TaskError{Kind: pb.ErrorKind_ERROR_ACTOR_DIED, Message: fmt.Sprintf("actor %s is dead: killed by ray.Kill", h.ActorID)})
		}
	}
	return nil
}
