package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/sdk/ray"
)

// wireChunk is one item of a streamed answer: the head first, then data.
type wireChunk struct {
	Head    bool                `msgpack:"head"`
	Status  int                 `msgpack:"status"`
	Header  map[string][]string `msgpack:"header"`
	Data    []byte              `msgpack:"data"`
	ErrorID string              `msgpack:"error_id"`
}

// streamWriter is the http.ResponseWriter a streaming handler writes to:
// every Write goes to the client as a chunk (the proxy flushes each).
type streamWriter struct {
	header http.Header
	wrote  bool
	yield  func(*wireChunk) error
	err    error
}

func (w *streamWriter) Header() http.Header { return w.header }

func (w *streamWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	w.err = w.yield(&wireChunk{Head: true, Status: code, Header: w.header.Clone()})
}

func (w *streamWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if err := w.yield(&wireChunk{Data: append([]byte(nil), b...)}); err != nil {
		w.err = err
		return 0, err
	}
	return len(b), nil
}

// Flush does nothing: every Write is a chunk already.
func (w *streamWriter) Flush() {}

// StreamingHTTP registers a deployment whose handler streams its answer:
// it writes to w as to any http.ResponseWriter, and each Write reaches
// the client as one chunk of a chunked response while the handler goes
// on. A client that goes away cancels the handler's ctx.
func StreamingHTTP[T, A any](name string, newFn func(context.Context, A) (*T, error),
	handler func(*T, context.Context, *http.Request, http.ResponseWriter) error, opts ...Option) *Deployment[A] {
	d := &deploymentDef{stream: func(ctx context.Context, inst any, req *wireRequest, w *streamWriter) error {
		r, err := req.httpRequest(ctx)
		if err != nil {
			return &HTTPError{Status: http.StatusBadRequest, Message: err.Error()}
		}
		return handler(inst.(*T), ctx, r, w)
	}}
	return register(name, newFn, func(*T, context.Context, *wireRequest) (*wireResponse, error) {
		return nil, &HTTPError{Status: http.StatusBadRequest, Message: "deployment " + name + " streams its answers"}
	}, d, opts)
}

// callStream is method serve.stream of a streaming deployment.
func (r *replica) callStream(ctx context.Context, req *wireRequest, yield func(*wireChunk) error) (err error) {
	r.ongoing.Add(1)
	defer r.ongoing.Add(-1)
	w := &streamWriter{header: http.Header{}, yield: yield}
	fail := func(status int, id string, msg string) error {
		if w.wrote {
			return nil // the client sees a truncated stream
		}
		w.wrote = true
		return yield(&wireChunk{Head: true, Status: status, ErrorID: id, Data: []byte(msg)})
	}
	defer func() {
		if p := recover(); p != nil {
			id := auth.RandomHex(6)
			r.log.WithOptions(zap.AddStacktrace(zap.FatalLevel)).Error("streaming handler panicked", zap.String("error_id", id),
				zap.Any("panic", p), zap.String("path", req.Path), zap.ByteString("stack", debug.Stack()))
			err = fail(http.StatusInternalServerError, id, "Internal Server Error (error id "+id+")\n")
		}
	}()
	if err := r.def.stream(ctx, r.inst, req, w); err != nil {
		var he *HTTPError
		if errors.As(err, &he) {
			return fail(he.Status, "", he.Message+"\n")
		}
		if ctx.Err() != nil {
			return nil
		}
		id := auth.RandomHex(6)
		r.log.Warn("streaming handler failed", zap.String("error_id", id), zap.Error(err))
		return fail(http.StatusInternalServerError, id, fmt.Sprintf("%v (error id %s)\n", err, id))
	}
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.err
}

// stream sends req to a replica of a streaming deployment and copies its
// chunks to w as they come, flushing each. The replica's generator is
// cancelled when ctx ends (client gone or timed out).
func (r *router) stream(ctx context.Context, app string, def *deploymentDef, key string, req *wireRequest, w http.ResponseWriter) error {
	id, release, err := r.pick(ctx, key, "")
	if err != nil {
		return err
	}
	defer release()
	gen := def.callStream(ctx, id, req)
	defer gen.Close()
	flusher, _ := w.(http.Flusher)
	wrote := false
	for ref, err := range gen.All(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				r.cancel(gen.Ref())
				return ctx.Err()
			}
			if wrote {
				return nil
			}
			return err
		}
		c, err := ray.Get(ctx, ref)
		if err != nil {
			if wrote {
				return nil
			}
			return err
		}
		if c.Head {
			for k, vs := range c.Header {
				for _, v := range vs {
					w.Header().Add(k, v)
				}
			}
			if c.ErrorID != "" {
				w.Header().Set("X-Error-Id", c.ErrorID)
			}
			w.WriteHeader(c.Status)
			wrote = true
		}
		if len(c.Data) > 0 {
			if _, err := w.Write(c.Data); err != nil {
				return nil
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	if ctx.Err() != nil {
		r.cancel(gen.Ref())
	}
	return nil
}

// cancelCall cancels a replica call whose request ended (the client
// went away or timed out): its handler's context ends.
func cancelCall[T any](log *zap.Logger, ref ray.ObjectRef[T]) {
	ctx, cancel := context.WithTimeout(context.Background(), streamCancelTimeout)
	defer cancel()
	if err := ray.Cancel(ctx, ref); err != nil {
		log.Debug("cancel a replica call", zap.Error(err))
	}
}

func (r *router) cancel(ref ray.ObjectRef[int]) { cancelCall(r.log, ref) }

const streamCancelTimeout = 2 * time.Second
