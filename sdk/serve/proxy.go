package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// The proxy is an actor the controller places on every alive node (node
// affinity), in the binary of the oldest application's job: it needs the
// SDK's actor calls (ordered streams to replicas, cancel, ownership of
// the replies), which a raylet does not have, and as an actor it is
// restarted by the actor machinery when its worker dies, like Ray's
// ProxyActor.
const proxyClass = "manta.serve.proxy"

var proxyActor = ray.Actor0[*proxy](proxyClass, newProxy)

// DefaultHTTPPort is the proxies' port unless HTTPPort says otherwise.
const DefaultHTTPPort = 8000

type proxy struct {
	r        *router
	cp       *cpclient.Client
	log      *zap.Logger
	actorID  string
	workerID string
	addr     string
	srv      *http.Server
}

func newProxy(ctx context.Context) (*proxy, error) {
	cp, log, ri, err := runtimeParts(ctx)
	if err != nil {
		return nil, err
	}
	r, err := processRouter(ctx)
	if err != nil {
		return nil, err
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r.mu.Lock()
	port := 0
	if r.opts != nil {
		port = int(r.opts.HttpPort)
	}
	r.mu.Unlock()
	lis, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil && port != 0 {
		// Several raylets on one host (manta up) share the port: the
		// others take a free one, which Status shows.
		log.Warn("serve proxy port taken; using a free one", zap.Int("port", port), zap.Error(err))
		lis, err = net.Listen("tcp", ":0")
	}
	if err != nil {
		return nil, fmt.Errorf("serve proxy: %w", err)
	}
	host := "127.0.0.1"
	if nodes, err := ray.Nodes(ctx); err == nil {
		for _, n := range nodes {
			if n.ID == ri.NodeID {
				if h, _, err := net.SplitHostPort(n.Address); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
					host = h
				}
			}
		}
	}
	p := &proxy{r: r, cp: cp, log: log.With(zap.String("proxy", ri.ActorID)), actorID: ri.ActorID, workerID: ri.WorkerID,
		addr: net.JoinHostPort(host, strconv.Itoa(lis.Addr().(*net.TCPAddr).Port))}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	// The server and the report loop live as long as the proxy's worker
	// process (the actor ends by its process ending).
	go func() { _ = p.srv.Serve(lis) }()
	go p.reportLoop()
	p.log.Info("serve proxy listening", zap.String("address", p.addr))
	return p, nil
}

func (p *proxy) reportLoop() {
	t := time.NewTicker(ReportPeriod)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = p.cp.ServeReport(ctx, &pb.ServeReportRequest{ActorId: p.actorID, WorkerId: p.workerID, Proxy: true,
			Healthy: true, Address: p.addr, Queued: p.r.queued(), RoutesIndex: p.r.tableIndex()})
		cancel()
		// A new table is reported at once: Run waits for every proxy
		// to route by a table that has the application.
		select {
		case <-t.C:
		case <-p.r.changed:
		}
	}
}

// defaultMaxRequestBytes bounds a request body unless the application
// says otherwise.
const defaultMaxRequestBytes = 10 << 20

func (p *proxy) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	app := p.r.matchFresh(req.Context(), req.URL.Path)
	if app == nil {
		http.Error(w, "no application serves "+req.URL.Path, http.StatusNotFound)
		return
	}
	var dep *pb.ServeDeployment
	for _, d := range app.Deployments {
		if d.Ingress {
			dep = d
		}
	}
	if dep == nil {
		http.Error(w, "application "+app.Name+" has no ingress deployment", http.StatusNotFound)
		return
	}
	limit := app.MaxRequestBytes
	if limit <= 0 {
		limit = defaultMaxRequestBytes
	}
	if req.ContentLength > limit {
		http.Error(w, fmt.Sprintf("request body of %d bytes; at most %d", req.ContentLength, limit), http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, limit))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			http.Error(w, fmt.Sprintf("request body over %d bytes", limit), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := req.Context()
	if app.RequestTimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(app.RequestTimeoutMs)*time.Millisecond)
		defer cancel()
	}
	wreq := &wireRequest{Method: req.Method, Path: req.URL.Path, RawQuery: req.URL.RawQuery,
		Header: req.Header, Body: body, Route: app.RoutePrefix}
	var resp *wireResponse
	// Whether it streams is the class's (this binary's registry), which a
	// config file cannot say.
	if def := lookupClass(dep.ClassName); def != nil && def.callStream != nil {
		if err = p.r.stream(ctx, app.Name, def, app.Name+"/"+dep.Name, wreq, w); err == nil {
			return
		}
	} else {
		resp, err = p.r.call(ctx, app.Name, dep, wreq)
	}
	switch {
	case err == nil:
	case errors.Is(err, errQueueFull):
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case errors.Is(err, ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case req.Context().Err() != nil:
		return // the client is gone; its replica call was cancelled
	case errors.Is(err, context.DeadlineExceeded):
		http.Error(w, "request timed out", http.StatusGatewayTimeout)
		return
	default:
		id := auth.RandomHex(6)
		p.log.Warn("request failed", zap.String("error_id", id), zap.String("app", app.Name), zap.Error(err))
		http.Error(w, fmt.Sprintf("Internal Server Error (error id %s)", id), http.StatusInternalServerError)
		return
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if resp.ErrorID != "" {
		w.Header().Set("X-Error-Id", resp.ErrorID)
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}
