package core

// The registry of remote functions and actor classes, by name, filled at
// init time by sdk/ray's typed constructors (Func1, Actor0, Method1, ...).
// A registered entry is untyped: its call decodes the arguments itself,
// so the executor only looks a name up and calls it.

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"

	pb "github.com/manta-ray/manta/proto/rayletpb"
)

// Function is a registered remote function in untyped form.
type Function struct {
	Name  string
	NArgs int
	NRet  int
	// Call decodes the arguments, runs the function and returns its
	// results, still to be encoded.
	Call func(ctx context.Context, args []*pb.ObjectValue) ([]any, error)
	// InPlace marks the parameters of type ReadOnlyBytes: a stored
	// argument there is handed over as a view of the node's arena.
	InPlace []bool
	// Generator marks a generator: its Call yields items (Yield) and
	// returns their count (generator.go).
	Generator bool
}

// ActorClass is a registered actor type in untyped form.
type ActorClass struct {
	Name string
	Type reflect.Type
	// Construct decodes the arguments and returns the new instance.
	Construct func(ctx context.Context, args []*pb.ObjectValue) (any, error)
	methods   map[string]*ActorMethod // filled at init time
}

// ActorMethod is a registered method of an actor class.
type ActorMethod struct {
	Class *ActorClass
	Name  string
	NRet  int
	Call  func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error)
	// Generator marks a method that yields items (generator.go).
	Generator bool
}

// registry holds every remote function and actor class by name.
var registry = struct {
	sync.RWMutex
	funcs   map[string]*Function
	classes map[string]*ActorClass
}{funcs: map[string]*Function{}, classes: map[string]*ActorClass{}}

// Register adds a remote function; a name registered twice panics.
func Register(f *Function) *Function {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.funcs[f.Name]; dup {
		panic(fmt.Sprintf("ray: remote function %q registered twice", f.Name))
	}
	registry.funcs[f.Name] = f
	return f
}

// Lookup returns the remote function name, or nil.
func Lookup(name string) *Function {
	registry.RLock()
	defer registry.RUnlock()
	return registry.funcs[name]
}

// RegisterClass adds an actor class; a name registered twice panics.
func RegisterClass(c *ActorClass) *ActorClass {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.classes[c.Name]; dup {
		panic(fmt.Sprintf("ray: actor class %q registered twice", c.Name))
	}
	c.methods = map[string]*ActorMethod{}
	registry.classes[c.Name] = c
	return c
}

// LookupClass returns the actor class name, or nil.
func LookupClass(name string) *ActorClass {
	registry.RLock()
	defer registry.RUnlock()
	return registry.classes[name]
}

// RegisterMethod adds a method to an actor class; a name registered twice
// panics.
func RegisterMethod(c *ActorClass, name string, nret int, call func(ctx context.Context, inst any, args []*pb.ObjectValue) ([]any, error)) *ActorMethod {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := c.methods[name]; dup {
		panic(fmt.Sprintf("ray: method %s.%s registered twice", c.Name, name))
	}
	m := &ActorMethod{Class: c, Name: name, NRet: nret, Call: call}
	c.methods[name] = m
	return m
}

// method returns a class's method name, or nil. Methods are registered at
// init time only, so reading them takes no lock.
func (c *ActorClass) method(name string) *ActorMethod { return c.methods[name] }

// invoke runs f, turning a panic into an error and its stack.
func invoke(ctx context.Context, f *Function, args []*pb.ObjectValue) (results []any, err error, stack string) {
	defer func() {
		if p := recover(); p != nil {
			err, stack = fmt.Errorf("%v", p), string(debug.Stack())
		}
	}()
	results, err = f.Call(ctx, args)
	return results, err, ""
}

func invokeCtor(ctx context.Context, cls *ActorClass, args []*pb.ObjectValue) (inst any, err error, stack string) {
	defer func() {
		if p := recover(); p != nil {
			err, stack = fmt.Errorf("%v", p), string(debug.Stack())
		}
	}()
	inst, err = cls.Construct(ctx, args)
	return inst, err, ""
}

func invokeMethod(ctx context.Context, m *ActorMethod, inst any, args []*pb.ObjectValue) (results []any, err error, stack string) {
	defer func() {
		if p := recover(); p != nil {
			err, stack = fmt.Errorf("%v", p), string(debug.Stack())
		}
	}()
	results, err = m.Call(ctx, inst, args)
	return results, err, ""
}
