package serve

import (
	"context"
	"fmt"
	"net/http"
	"reflect"

	"github.com/vmihailenco/msgpack/v5"
)

// Handle calls a typed deployment from inside another (or from a driver):
// each call goes straight to one of its replicas, picked as the proxy
// picks. It is a small value: pass it in a constructor's argument.
type Handle[Req, Resp any] struct {
	// App is the application ("": the caller replica's own).
	App        string `msgpack:"app"`
	Deployment string `msgpack:"deployment"`

	b   *Bound
	err error
}

type handleRef interface{ bound() (*Bound, error) }

func (h Handle[Req, Resp]) bound() (*Bound, error) { return h.b, h.err }

// HandleOf is a handle to a bound typed deployment of the same
// application; binding a deployment with it in its argument adds b to the
// application.
func HandleOf[Req, Resp any](b *Bound) Handle[Req, Resp] {
	h := Handle[Req, Resp]{Deployment: b.def.name, b: b}
	if b.def.reqType != reflect.TypeFor[Req]() || b.def.respType != reflect.TypeFor[Resp]() {
		h.err = fmt.Errorf("%w: deployment %s does not take %v and answer %v", ErrBadConfig, b.def.name,
			reflect.TypeFor[Req](), reflect.TypeFor[Resp]())
	}
	return h
}

// GetHandle is a handle to deployment dep of application app.
func GetHandle[Req, Resp any](app, dep string) Handle[Req, Resp] {
	return Handle[Req, Resp]{App: app, Deployment: dep}
}

// Call sends req to a replica and returns its answer. A replica's error
// comes back as an *HTTPError.
func (h Handle[Req, Resp]) Call(ctx context.Context, req Req) (Resp, error) {
	var zero Resp
	r, err := processRouter(ctx)
	if err != nil {
		return zero, err
	}
	app := h.App
	if app == "" {
		app = hostedApp()
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	dep := r.deployment(app, h.Deployment)
	if dep == nil {
		return zero, fmt.Errorf("%w: deployment %q of application %q", ErrNotFound, h.Deployment, app)
	}
	body, err := msgpack.Marshal(req)
	if err != nil {
		return zero, err
	}
	resp, err := r.call(ctx, app, dep, &wireRequest{Typed: true, Body: body})
	if err != nil {
		return zero, err
	}
	if resp.Status != http.StatusOK {
		return zero, &HTTPError{Status: resp.Status, Message: string(resp.Body)}
	}
	var out Resp
	if err := msgpack.Unmarshal(resp.Body, &out); err != nil {
		return zero, err
	}
	return out, nil
}
