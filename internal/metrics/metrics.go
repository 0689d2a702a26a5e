// Package metrics holds what heads and raylets share to expose Prometheus
// metrics: registries, the gRPC server middleware, the /metrics HTTP
// server behind the cluster token, and the file-based service-discovery
// file that lists every scrape target.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/manta-ray/manta/internal/tlsconfig"

	"github.com/manta-ray/manta/internal/auth"
)

// Namespace prefixes every manta series.
const Namespace = "manta"

// Path is where every metrics endpoint serves.
const Path = "/metrics"

// LatencyBuckets suit control-plane and raylet calls, most of which take
// well under a millisecond on a LAN; Prometheus' default buckets start at
// 5 ms and would put nearly every call in the first one.
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewRegistry returns a registry with the Go runtime and process
// collectors. Each component has its own (tests run several heads and
// raylets in one process), never the global default one.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// NewGRPCServerMetrics returns grpc-ecosystem's server middleware with the
// latency histogram on (grpc_server_handled_total by method and code,
// grpc_server_handling_seconds by method), registered in reg. Methods are
// not pre-initialised: every method times every code would be about a
// thousand idle series per server.
func NewGRPCServerMetrics(reg prometheus.Registerer) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(LatencyBuckets)))
	reg.MustRegister(m)
	return m
}

// Handler serves g in Prometheus' exposition formats. It does not check
// the token: mount it behind a handler that does (see Protect).
func Handler(g prometheus.Gatherer, log *zap.Logger) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: zapErrorLog{log}, ErrorHandling: promhttp.ContinueOnError})
}

// Protect refuses requests without the cluster token (Authorization:
// Bearer), as every other manta port does.
func Protect(token func() string, next http.Handler) http.Handler {
	return ProtectWith(token, nil, next)
}

// ProtectWith is Protect that also lets in a token other (a scoped read
// token, on a head) says yes to.
func ProtectWith(token func() string, other func(token string) bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := token()
		if want == "" {
			http.Error(w, "the cluster has not finished bootstrapping", http.StatusServiceUnavailable)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got = strings.TrimSpace(got)
		if !ok || !auth.Equal(got, want) && (other == nil || !other(got)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="manta"`)
			http.Error(w, "missing or wrong cluster token: send Authorization: Bearer <token>", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

type zapErrorLog struct{ log *zap.Logger }

func (l zapErrorLog) Println(v ...any) {
	if l.log != nil {
		l.log.Warn("metrics", zap.String("error", strings.TrimSpace(fmt.Sprintln(v...))))
	}
}

// Server is an HTTP server with /metrics only. Close stops it.
type Server struct {
	lis  net.Listener
	srv  *http.Server
	done chan struct{}
	once sync.Once
}

// Listen serves g on addr ("host:0" picks a port) behind the token.
func Listen(addr string, g prometheus.Gatherer, token func() string, log *zap.Logger) (*Server, error) {
	return ListenTLS(addr, g, token, log, nil, nil)
}

// ListenTLS is Listen over mutual TLS with src's certificates (plain HTTP
// when src is nil), also serving tokens other accepts (see ProtectWith).
func ListenTLS(addr string, g prometheus.Gatherer, token func() string, log *zap.Logger, src *tlsconfig.Source, other func(string) bool) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	lis = src.Listener(lis)
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, ProtectWith(token, other, Handler(g, log)))
	s := &Server{lis: lis, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) && log != nil {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	return s, nil
}

// Address is where the server listens.
func (s *Server) Address() string { return s.lis.Addr().String() }

// Close stops the server and waits for it. Idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = s.srv.Shutdown(ctx); err != nil {
			err = s.srv.Close()
		}
		<-s.done
	})
	return err
}
