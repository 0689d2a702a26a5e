package serve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// deploymentDef is a registered deployment: its actor class and how its
// replicas are called.
type deploymentDef struct {
	name, class string
	argType     reflect.Type
	// reqType and respType are a typed deployment's (nil for HTTP).
	reqType, respType reflect.Type
	opts              deploymentOptions
	// handle and stream run a request on an instance (stream is set for
	// streaming deployments only).
	handle func(ctx context.Context, inst any, req *wireRequest) (*wireResponse, error)
	stream func(ctx context.Context, inst any, req *wireRequest, w *streamWriter) error
	// call and callStream send a request to a replica actor.
	call       func(ctx context.Context, actorID string, req *wireRequest) ray.ObjectRef[*wireResponse]
	callStream func(ctx context.Context, actorID string, req *wireRequest) *ray.ObjectRefGenerator[*wireChunk]
}

var registry = struct {
	sync.RWMutex
	byClass map[string]*deploymentDef
}{byClass: map[string]*deploymentDef{}}

func lookupClass(class string) *deploymentDef {
	registry.RLock()
	defer registry.RUnlock()
	return registry.byClass[class]
}

// Deployment is a registered deployment whose constructor takes an A.
type Deployment[A any] struct{ d *deploymentDef }

// Name is the deployment's name.
func (d *Deployment[A]) Name() string { return d.d.name }

// register makes the deployment's actor class: its constructor finds the
// replica's record, decodes the argument and builds the instance; method
// "serve.call" runs serveFn on it.
func register[T, A any](name string, newFn func(context.Context, A) (*T, error),
	serveFn func(*T, context.Context, *wireRequest) (*wireResponse, error), d *deploymentDef, opts []Option) *Deployment[A] {
	d.name, d.class, d.argType = name, "serve:"+name, reflect.TypeFor[A]()
	d.opts = defaultOptions().with(opts)
	construct := func(ctx context.Context, initArg []byte) (any, error) {
		var a A
		if len(initArg) > 0 {
			if err := msgpack.Unmarshal(initArg, &a); err != nil {
				return nil, fmt.Errorf("serve: decode the argument of %s: %w", name, err)
			}
		}
		return newFn(ctx, a)
	}
	d.handle = func(ctx context.Context, inst any, req *wireRequest) (*wireResponse, error) {
		return serveFn(inst.(*T), ctx, req)
	}
	cls := ray.Actor0[*replica](d.class, func(ctx context.Context) (*replica, error) {
		return newReplica(ctx, d, construct)
	})
	call := ray.Method1(cls, "serve.call", (*replica).call)
	d.call = func(ctx context.Context, actorID string, req *wireRequest) ray.ObjectRef[*wireResponse] {
		return call.Remote(ctx, ray.ActorHandle[*replica]{ActorID: actorID}, ray.Val(req))
	}
	if d.stream != nil {
		gen := ray.ActorGen1(cls, "serve.stream", (*replica).callStream)
		d.callStream = func(ctx context.Context, actorID string, req *wireRequest) *ray.ObjectRefGenerator[*wireChunk] {
			return gen.Remote(ctx, ray.ActorHandle[*replica]{ActorID: actorID}, ray.Val(req))
		}
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.byClass[d.class]; dup {
		panic(fmt.Sprintf("serve: deployment %q registered twice", name))
	}
	registry.byClass[d.class] = d
	return &Deployment[A]{d: d}
}

// HTTP registers a deployment whose handler takes HTTP requests. Call it
// at init time (a package variable), so worker processes register it too.
// The handler sees the full path; its Response's zero Status is 200.
func HTTP[T, A any](name string, newFn func(context.Context, A) (*T, error),
	handler func(*T, context.Context, *http.Request) (Response, error), opts ...Option) *Deployment[A] {
	return register(name, newFn, func(t *T, ctx context.Context, w *wireRequest) (*wireResponse, error) {
		if w.Typed {
			return nil, &HTTPError{Status: http.StatusBadRequest, Message: "deployment " + name + " takes HTTP requests, not handle calls"}
		}
		r, err := w.httpRequest(ctx)
		if err != nil {
			return nil, &HTTPError{Status: http.StatusBadRequest, Message: err.Error()}
		}
		resp, err := handler(t, ctx, r)
		if err != nil {
			return nil, err
		}
		if resp.Status == 0 {
			resp.Status = http.StatusOK
		}
		return &wireResponse{Status: resp.Status, Header: resp.Header, Body: resp.Body}, nil
	}, &deploymentDef{}, opts)
}

// Typed registers a deployment whose handler takes a Req and answers a
// Resp. Handles call it with Go values (msgpack); over HTTP the body is
// Req in JSON and the answer Resp in JSON.
func Typed[T, A, Req, Resp any](name string, newFn func(context.Context, A) (*T, error),
	handler func(*T, context.Context, Req) (Resp, error), opts ...Option) *Deployment[A] {
	d := &deploymentDef{reqType: reflect.TypeFor[Req](), respType: reflect.TypeFor[Resp]()}
	return register(name, newFn, func(t *T, ctx context.Context, w *wireRequest) (*wireResponse, error) {
		var req Req
		var err error
		switch {
		case w.Typed:
			err = msgpack.Unmarshal(w.Body, &req)
		case len(w.Body) > 0:
			err = json.Unmarshal(w.Body, &req)
		}
		if err != nil {
			return nil, &HTTPError{Status: http.StatusBadRequest, Message: fmt.Sprintf("request is not a %T: %v", req, err)}
		}
		resp, err := handler(t, ctx, req)
		if err != nil {
			return nil, err
		}
		out := &wireResponse{Status: http.StatusOK}
		if w.Typed {
			out.Body, err = msgpack.Marshal(resp)
		} else {
			out.Header = map[string][]string{"Content-Type": {"application/json"}}
			out.Body, err = json.Marshal(resp)
		}
		return out, err
	}, d, opts)
}

// Bound is a deployment bound to its constructor's argument: a node of an
// application. Bind a deployment whose argument holds Handles of other
// bound deployments to compose them.
type Bound struct {
	def  *deploymentDef
	arg  []byte
	opts deploymentOptions
	deps []*Bound
	err  error
}

// Bind binds the deployment to its constructor's argument (with options
// that override the registered ones for this application).
func (d *Deployment[A]) Bind(arg A, opts ...Option) *Bound {
	b := &Bound{def: d.d, opts: d.d.opts.with(opts)}
	b.err = b.opts.err
	var err error
	if b.arg, err = msgpack.Marshal(arg); err != nil && b.err == nil {
		b.err = fmt.Errorf("%w: encode the argument of %s: %v", ErrBadConfig, d.d.name, err)
	}
	// Handles in the argument (itself or its exported fields) bring their
	// deployments into the application.
	v := reflect.ValueOf(arg)
	visit := func(x reflect.Value) {
		if !x.IsValid() || !x.CanInterface() {
			return
		}
		if h, ok := x.Interface().(handleRef); ok {
			dep, herr := h.bound()
			if herr != nil && b.err == nil {
				b.err = herr
			}
			if dep != nil {
				b.deps = append(b.deps, dep)
			}
		}
	}
	visit(v)
	if v.Kind() == reflect.Struct {
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				visit(v.Field(i))
			}
		}
	}
	return b
}

// version is a digest of what makes replicas differ: the class, the
// argument, the options and the user's version string.
func (b *Bound) version() string {
	h := sha256.New()
	o := b.opts
	fmt.Fprintf(h, "%s|%x|%s|%d|", b.def.class, b.arg, o.version, o.maxOngoing)
	envKeys := make([]string, 0, len(o.envVars))
	for k := range o.envVars {
		envKeys = append(envKeys, k)
	}
	sort.Strings(envKeys)
	for _, k := range envKeys {
		fmt.Fprintf(h, "env %s=%s,", k, o.envVars[k])
	}
	keys := make([]string, 0, len(o.resources))
	for k := range o.resources {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%v,", k, o.resources[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func (b *Bound) spec(ingress bool) *pb.ServeDeployment {
	o := b.opts
	d := &pb.ServeDeployment{Name: b.def.name, ClassName: b.def.class, Version: b.version(),
		NumReplicas: int32(o.numReplicas), MaxOngoingRequests: int32(o.maxOngoing), MaxQueuedRequests: int32(o.maxQueued),
		Resources: o.resources, InitArg: b.arg, Ingress: ingress, Streaming: b.def.stream != nil, EnvVars: o.envVars,
		HealthCheckPeriodMs: o.healthPeriod.Milliseconds(), HealthCheckTimeoutMs: o.healthTimeout.Milliseconds()}
	if a := o.autoscaling; a != nil {
		d.Autoscaling = &pb.ServeAutoscaling{MinReplicas: int32(a.Min), MaxReplicas: int32(a.Max),
			TargetOngoingRequests: a.TargetOngoingRequests, UpscaleDelayMs: a.UpscaleDelay.Milliseconds(),
			DownscaleDelayMs: a.DownscaleDelay.Milliseconds()}
	}
	return d
}

// deployments lists the bound deployment and those it uses, each once
// (the ingress first); a name bound twice differently is an error.
func (b *Bound) deployments() ([]*pb.ServeDeployment, error) {
	var out []*pb.ServeDeployment
	seen := map[string]*Bound{}
	var walk func(x *Bound, ingress bool) error
	walk = func(x *Bound, ingress bool) error {
		if x.err != nil {
			return x.err
		}
		if o := seen[x.def.name]; o != nil {
			if o != x && o.version() != x.version() {
				return fmt.Errorf("%w: deployment %q is bound twice with different arguments", ErrBadConfig, x.def.name)
			}
			return nil
		}
		seen[x.def.name] = x
		out = append(out, x.spec(ingress))
		for _, d := range x.deps {
			if err := walk(d, false); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(b, true)
}
