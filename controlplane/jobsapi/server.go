// Package jobsapi serves Ray's Jobs REST API over HTTP on a head, so that
// Ray's own clients (`ray job ...`, the Python JobSubmissionClient) work
// against a manta cluster unchanged: version, submit, list, get, stop,
// delete, logs and the logs tail (a websocket), and the package store the
// clients upload working dirs to. Every request needs the cluster token
// (Authorization: Bearer); the handlers are a thin layer over the control
// plane's client, so a follower head forwards writes to the leader.
//
// Browsers log in instead (login.go): the token typed into /login is kept
// in an HttpOnly, SameSite=Strict cookie that every later request carries.
package jobsapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/pkgstore"
	"github.com/manta-ray/manta/internal/rpcerr"
	"github.com/manta-ray/manta/internal/tlsconfig"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// RayVersion is the Ray version /api/version reports: the Ray clients
// manta is tested with.
const RayVersion = "2.60.0"

// Config configures a Server.
type Config struct {
	// Addr is where to listen ("127.0.0.1:8265"; port 0 picks one).
	Addr string
	// Client reaches the control plane (usually the local head).
	Client *cpclient.Client
	// Token returns the cluster token ("" until the cluster bootstrapped:
	// every request is then 503).
	Token  func() string
	Logger *zap.Logger
	// Mount, when set, adds more handlers (the State API, the dashboard,
	// metrics) to the same server, behind the same token check.
	Mount []func(mux *http.ServeMux)
	// Scope, when set, says what a token other than the cluster token may
	// do (head.ScopeOf: scoped tokens from the replicated store). Reads
	// (GET) need read, everything else submit. Nil: only the cluster
	// token works.
	Scope func(token string) (auth.Scope, error)
	// TLS, when set, serves HTTPS with the cluster's certificate; a client
	// certificate is optional (browsers), but one from another CA is
	// refused.
	TLS *tlsconfig.Source
	// Public are path prefixes served without a token (the dashboard's
	// static assets, which the login page needs). /login always is.
	Public []string
}

// Server is a running Jobs API server. Close stops it.
type Server struct {
	cfg Config
	log *zap.Logger
	lis net.Listener
	srv *http.Server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New listens and serves in the background.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("jobs api: listen %s: %w", cfg.Addr, err)
	}
	lis = cfg.TLS.BrowserListener(lis)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: cfg.Logger.Named("jobsapi"), lis: lis, ctx: ctx, cancel: cancel}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/version", s.version)
	mux.HandleFunc("POST /api/jobs/{$}", s.submit)
	mux.HandleFunc("GET /api/jobs/{$}", s.list)
	mux.HandleFunc("GET /api/jobs/{id}", s.get)
	mux.HandleFunc("POST /api/jobs/{id}/stop", s.stop)
	mux.HandleFunc("DELETE /api/jobs/{id}", s.delete)
	mux.HandleFunc("GET /api/jobs/{id}/logs", s.logs)
	mux.HandleFunc("GET /api/jobs/{id}/logs/tail", s.tail)
	mux.HandleFunc("GET /api/packages/{protocol}/{name}", s.packageExists)
	mux.HandleFunc("PUT /api/packages/{protocol}/{name}", s.uploadPackage)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	for _, m := range cfg.Mount {
		m(mux)
	}
	s.srv = &http.Server{Handler: s.auth(mux), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("jobs api stopped", zap.Error(err))
		}
	}()
	return s, nil
}

// Address is where the server listens.
func (s *Server) Address() string { return s.lis.Addr().String() }

// Close stops the server, ending open log tails. Idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		s.wg.Wait()
	})
	return nil
}

// auth refuses every request without the cluster token: Ray's job API
// without it was remote code execution for anyone (CVE-2023-48022). The
// token comes as Authorization: Bearer (Ray's clients, the CLI) or as the
// login cookie (a browser). Only /login and the Public prefixes pass
// without one.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := s.cfg.Token()
		if want == "" {
			httpError(w, http.StatusServiceUnavailable, "the cluster has not finished bootstrapping")
			return
		}
		if s.public(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		need := auth.ScopeSubmit
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			need = auth.ScopeRead
		}
		if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			if scope, ok := s.scopeOf(got, want); ok {
				if !scope.Allows(need) {
					httpError(w, http.StatusForbidden, fmt.Sprintf("this needs a %s token; yours is %s", need, scope))
					return
				}
				next.ServeHTTP(w, r)
				return
			}
		} else if scope, ok := s.cookieScope(r, want); ok {
			if !sameOrigin(r) {
				httpError(w, http.StatusForbidden, "a cross-site request with the login cookie is refused")
				return
			}
			if !scope.Allows(need) {
				httpError(w, http.StatusForbidden, fmt.Sprintf("this needs a %s token; you logged in with a %s one", need, scope))
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if wantsPage(r) {
			// A browser that has not logged in (or whose token is stale)
			// goes to the login form, and comes back after.
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="manta"`)
		httpError(w, http.StatusUnauthorized, "missing or wrong cluster token: send Authorization: Bearer <token> (or log in at /login)")
	})
}

// scopeOf is what token may do: admin for the cluster token, else what
// cfg.Scope says.
func (s *Server) scopeOf(token, cluster string) (auth.Scope, bool) {
	token = strings.TrimSpace(token)
	if tokenEqual(token, cluster) {
		return auth.ScopeAdmin, true
	}
	if s.cfg.Scope == nil || !strings.HasPrefix(token, auth.ScopedTokenPrefix) {
		return 0, false
	}
	scope, err := s.cfg.Scope(token)
	return scope, err == nil
}

func (s *Server) public(path string) bool {
	if path == "/login" {
		return true
	}
	for _, p := range s.cfg.Public {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// tokenEqual compares in constant time, so the answer's timing tells
// nothing about how much of a guess was right.
func tokenEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(want)) == 1
}

func zapRemote(r *http.Request) zap.Field { return zap.String("remote", r.RemoteAddr) }

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, msg)
}

// fail maps a control-plane error to its HTTP status.
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch rpcerr.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.AlreadyExists:
		code = http.StatusConflict
	case codes.Unauthenticated:
		code = http.StatusUnauthorized
	case codes.Unavailable, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	}
	httpError(w, code, err.Error())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 30*time.Second)
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{"version": "4", "ray_version": RayVersion, "ray_commit": "manta", "session_name": "manta"})
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	var req submitRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<20))
	if err := dec.Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "the body is not a job submission (JSON): "+err.Error())
		return
	}
	job, err := req.toSubmission()
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := s.callCtx(r)
	defer cancel()
	id, err := s.cfg.Client.SubmitJob(ctx, job)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, map[string]string{"job_id": id, "submission_id": id})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.callCtx(r)
	defer cancel()
	jobs, err := s.cfg.Client.ListSubmissions(ctx, false)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]jobDetails, len(jobs))
	for i, j := range jobs {
		out[i] = details(j)
	}
	writeJSON(w, out)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.callCtx(r)
	defer cancel()
	j, err := s.cfg.Client.GetSubmission(ctx, r.PathValue("id"), false)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, details(j))
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.callCtx(r)
	defer cancel()
	stopped, err := s.cfg.Client.StopSubmission(ctx, r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, map[string]bool{"stopped": stopped})
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.callCtx(r)
	defer cancel()
	deleted, err := s.cfg.Client.DeleteSubmission(ctx, r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, map[string]bool{"deleted": deleted})
}

// logs answers the output so far, in one piece (Ray's shape).
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.callCtx(r)
	defer cancel()
	var b strings.Builder
	err := s.cfg.Client.JobLogs(ctx, r.PathValue("id"), 0, false, func(c *pb.JobLogsChunk) error {
		b.Write(c.Data)
		return nil
	})
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, map[string]string{"logs": b.String()})
}

// tail streams the output as websocket text messages until the job ends,
// then closes the socket normally (Ray's logs/tail).
func (s *Server) tail(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := s.callCtx(r)
	_, err := s.cfg.Client.GetSubmission(ctx, id, false)
	cancel()
	if err != nil {
		fail(w, err)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the client
	}
	defer c.CloseNow()
	ctx = c.CloseRead(r.Context()) // ends when the client goes
	err = s.cfg.Client.JobLogs(ctx, id, 0, true, func(ch *pb.JobLogsChunk) error {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return c.Write(wctx, websocket.MessageText, ch.Data)
	})
	if err != nil && !errors.Is(err, fsm.ErrNodeDead) && ctx.Err() == nil {
		s.log.Info("job log tail", zap.String("job", id), zap.Error(err))
		c.Close(websocket.StatusInternalError, truncate(err.Error(), 120))
		return
	}
	c.Close(websocket.StatusNormalClosure, "")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *Server) packageName(w http.ResponseWriter, r *http.Request) (string, bool) {
	if p := r.PathValue("protocol"); p != "gcs" {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("package protocol %q is not supported (manta keeps packages in the cluster: gcs)", p))
		return "", false
	}
	name := r.PathValue("name")
	if err := pkgstore.CheckName(name); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return name, true
}

func (s *Server) packageExists(w http.ResponseWriter, r *http.Request) {
	name, ok := s.packageName(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.callCtx(r)
	defer cancel()
	exists, err := pkgstore.Exists(ctx, s.cfg.Client, name)
	if err != nil {
		fail(w, err)
		return
	}
	if !exists {
		httpError(w, http.StatusNotFound, "package "+name+" does not exist")
		return
	}
	httpError(w, http.StatusOK, "package "+name+" exists")
}

func (s *Server) uploadPackage(w http.ResponseWriter, r *http.Request) {
	name, ok := s.packageName(w, r)
	if !ok {
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, pkgstore.MaxPackageBytes+1))
	if err != nil {
		httpError(w, http.StatusBadRequest, "read package: "+err.Error())
		return
	}
	if len(data) > pkgstore.MaxPackageBytes {
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("package %s is over the %d MiB limit", name, pkgstore.MaxPackageBytes>>20))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	if err := pkgstore.Upload(ctx, s.cfg.Client, name, data); err != nil {
		if errors.Is(err, pkgstore.ErrBadName) || errors.Is(err, pkgstore.ErrTooLarge) {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		fail(w, err)
		return
	}
	httpError(w, http.StatusOK, "Successfully uploaded package "+name)
}
