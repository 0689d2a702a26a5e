package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// wireRequest is a request as it travels to a replica: an HTTP request
// from a proxy, or a typed call from a Handle (Typed, Body in msgpack).
type wireRequest struct {
	Typed    bool                `msgpack:"typed"`
	Method   string              `msgpack:"method"`
	Path     string              `msgpack:"path"`
	RawQuery string              `msgpack:"query"`
	Header   map[string][]string `msgpack:"header"`
	Body     []byte              `msgpack:"body"`
	// Route is the application's route prefix (the handler sees the
	// full path, as in Ray).
	Route string `msgpack:"route"`
}

// wireResponse is a replica's answer.
type wireResponse struct {
	Status int                 `msgpack:"status"`
	Header map[string][]string `msgpack:"header"`
	Body   []byte              `msgpack:"body"`
	// ErrorID names a failure in the replica's log (handler panics).
	ErrorID string `msgpack:"error_id"`
}

func (w *wireRequest) httpRequest(ctx context.Context) (*http.Request, error) {
	u := &url.URL{Path: w.Path, RawQuery: w.RawQuery}
	r, err := http.NewRequestWithContext(ctx, w.Method, u.String(), bytes.NewReader(w.Body))
	if err != nil {
		return nil, err
	}
	r.Header = http.Header(w.Header)
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.RequestURI = u.RequestURI()
	return r, nil
}

// Response is what an HTTP handler answers. A zero Status is 200.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Text is a text/plain response.
func Text(s string) Response {
	return Response{Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte(s)}
}

// JSON is an application/json response of v (500 if v cannot be encoded).
func JSON(v any) Response {
	b, err := json.Marshal(v)
	if err != nil {
		return Response{Status: http.StatusInternalServerError, Body: []byte(err.Error())}
	}
	return Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: b}
}
