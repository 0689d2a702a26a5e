package serve_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/manta-ray/manta/sdk/serve"
)

// echo answers with its path and body; /panic panics, /fail fails,
// /sleep?ms=N sleeps, /pid answers its worker's PID, /version its tag.
type echo struct{ tag string }

var Echo = serve.HTTP("test.echo", func(_ context.Context, tag string) (*echo, error) { return &echo{tag: tag}, nil },
	func(e *echo, ctx context.Context, r *http.Request) (serve.Response, error) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/panic"):
			panic("the handler panicked on purpose")
		case strings.HasSuffix(r.URL.Path, "/fail"):
			return serve.Response{}, fmt.Errorf("failed on purpose")
		case strings.HasSuffix(r.URL.Path, "/pid"):
			return serve.Text(strconv.Itoa(os.Getpid())), nil
		case strings.HasSuffix(r.URL.Path, "/version"):
			return serve.Text(e.tag), nil
		case strings.HasSuffix(r.URL.Path, "/env"):
			return serve.Text(os.Getenv("SERVE_TEST_GREETING")), nil
		case r.URL.Query().Get("ms") != "":
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-ctx.Done():
				return serve.Response{}, ctx.Err()
			}
		}
		b := make([]byte, 0, 64)
		b = append(b, r.URL.Path...)
		if r.ContentLength > 0 || r.Body != nil {
			var buf [4096]byte
			n, _ := r.Body.Read(buf[:])
			b = append(b, buf[:n]...)
		}
		return serve.Response{Body: b}, nil
	}, serve.MaxOngoingRequests(8))

// In and Out are the model's request and answer.
type In struct{ X int }
type Out struct {
	Y   int
	PID int
}

type model struct{ scale int }

var Model = serve.Typed("test.model", func(_ context.Context, scale int) (*model, error) { return &model{scale: scale}, nil },
	func(m *model, _ context.Context, in In) (Out, error) {
		return Out{Y: in.X * m.scale, PID: os.Getpid()}, nil
	},
	serve.MaxOngoingRequests(16))

// pre parses ?x= and asks the model.
type pre struct{ model serve.Handle[In, Out] }

// PreArg is pre's constructor argument.
type PreArg struct{ Model serve.Handle[In, Out] }

var Pre = serve.HTTP("test.pre", func(_ context.Context, a PreArg) (*pre, error) { return &pre{model: a.Model}, nil },
	func(p *pre, ctx context.Context, r *http.Request) (serve.Response, error) {
		x, err := strconv.Atoi(r.URL.Query().Get("x"))
		if err != nil {
			return serve.Response{}, serve.Errorf(http.StatusBadRequest, "x: %v", err)
		}
		out, err := p.model.Call(ctx, In{X: x})
		if err != nil {
			return serve.Response{}, err
		}
		return serve.Text(strconv.Itoa(out.Y)), nil
	}, serve.MaxOngoingRequests(16))

// batched counts the calls of its batch handler.
type batched struct {
	calls atomic.Int64
	call  func(context.Context, int) (BatchOut, error)
}

// BatchOut is a batched answer: the value and how many batch calls the
// replica had made when it was answered.
type BatchOut struct {
	V     int
	Calls int64
	Size  int
}

var Batched = serve.Typed("test.batched", func(_ context.Context, _ struct{}) (*batched, error) {
	b := &batched{}
	b.call = serve.Batch(8, 200*time.Millisecond, func(_ context.Context, xs []int) ([]BatchOut, error) {
		n := b.calls.Add(1)
		out := make([]BatchOut, len(xs))
		for i, x := range xs {
			out[i] = BatchOut{V: 2 * x, Calls: n, Size: len(xs)}
		}
		return out, nil
	})
	return b, nil
}, func(b *batched, ctx context.Context, x int) (BatchOut, error) { return b.call(ctx, x) }, serve.MaxOngoingRequests(64))

// streamer writes "first" at once, then waits for its request to end and
// counts the requests that ended so, by a cancelled context or a write
// that failed (/stream/cancelled answers that).
type streamer struct{ cancelled atomic.Int64 }

var Streamer = serve.StreamingHTTP("test.stream", func(context.Context, struct{}) (*streamer, error) { return &streamer{}, nil },
	func(s *streamer, ctx context.Context, r *http.Request, w http.ResponseWriter) error {
		if strings.HasSuffix(r.URL.Path, "/cancelled") {
			_, err := fmt.Fprintf(w, "%d %d", s.cancelled.Load(), os.Getpid())
			return err
		}
		if strings.HasSuffix(r.URL.Path, "/count") {
			for i := range 5 {
				fmt.Fprintf(w, "%d\n", i)
			}
			return nil
		}
		w.Header().Set("Content-Type", "text/plain")
		if _, err := fmt.Fprintf(w, "first %d\n", os.Getpid()); err != nil {
			// The chunk went out but the stream was closed before the
			// write returned: the client left as soon as it read it.
			s.cancelled.Add(1)
			return err
		}
		<-ctx.Done()
		s.cancelled.Add(1)
		return ctx.Err()
	}, serve.MaxOngoingRequests(8))

// sick fails its health check once /sick was called.
type sick struct{ bad atomic.Bool }

func (s *sick) CheckHealth(context.Context) error {
	if s.bad.Load() {
		return fmt.Errorf("told to be sick")
	}
	return nil
}

var Sick = serve.HTTP("test.sick", func(context.Context, struct{}) (*sick, error) { return &sick{}, nil },
	func(s *sick, _ context.Context, r *http.Request) (serve.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/sick") {
			s.bad.Store(true)
		}
		return serve.Text(strconv.Itoa(os.Getpid())), nil
	}, serve.HealthCheck(100*time.Millisecond, time.Second))

// broken's constructor fails.
type broken struct{}

var Broken = serve.HTTP("test.broken", func(_ context.Context, why string) (*broken, error) { return nil, fmt.Errorf("%s", why) },
	func(*broken, context.Context, *http.Request) (serve.Response, error) { return serve.Response{}, nil })
