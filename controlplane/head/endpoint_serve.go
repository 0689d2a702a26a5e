package head

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/manta-ray/manta/controlplane/fsm"
	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// ServeService: deploy, delete and read Serve applications, and the
// reports of replicas and proxies (serve.go holds the controller).

type serveAPI struct {
	pb.UnimplementedServeServiceServer
	h *Head
}

// checkServeApp refuses a malformed application, naming the field.
func checkServeApp(a *pb.ServeApp) error {
	bad := func(format string, args ...any) error { return rpcerr.Wrapf(ErrBadRequest, format, args...) }
	if a == nil {
		return bad("app is required")
	}
	if err := checkID("app.name", a.Name); err != nil {
		return err
	}
	if strings.ContainsAny(a.Name, "/ ") {
		return bad("app.name %q may not contain '/' or spaces", a.Name)
	}
	if !strings.HasPrefix(a.RoutePrefix, "/") {
		return bad("app.route_prefix %q must start with '/'", a.RoutePrefix)
	}
	if err := checkID("app.job_id", a.JobId); err != nil {
		return err
	}
	if a.HttpPort < 0 || a.HttpPort > 65535 || a.MaxRequestBytes < 0 || a.RequestTimeoutMs < 0 {
		return bad("app.http_port, max_request_bytes and request_timeout_ms must be in range")
	}
	if len(a.Deployments) == 0 {
		return bad("app.deployments: at least one is required")
	}
	seen := map[string]bool{}
	ingress := 0
	for i, d := range a.Deployments {
		if err := checkID(fmt.Sprintf("deployments[%d].name", i), d.Name); err != nil {
			return err
		}
		if seen[d.Name] {
			return bad("deployments[%d].name %q is used twice", i, d.Name)
		}
		seen[d.Name] = true
		if err := checkID(fmt.Sprintf("deployments[%d].class_name", i), d.ClassName); err != nil {
			return err
		}
		if d.Ingress {
			ingress++
		}
		if d.NumReplicas < 0 || d.NumReplicas > 1000 {
			return bad("deployments[%d].num_replicas %d out of [0, 1000]", i, d.NumReplicas)
		}
		if d.MaxOngoingRequests < 1 {
			return bad("deployments[%d].max_ongoing_requests %d must be at least 1", i, d.MaxOngoingRequests)
		}
		if d.MaxQueuedRequests < 0 {
			return bad("deployments[%d].max_queued_requests must be >= 0", i)
		}
		if as := d.Autoscaling; as != nil {
			if as.MinReplicas < 0 || as.MaxReplicas < as.MinReplicas || as.MaxReplicas > 1000 || !(as.TargetOngoingRequests > 0) ||
				as.UpscaleDelayMs < 0 || as.DownscaleDelayMs < 0 {
				return bad("deployments[%d].autoscaling: want 0 <= min_replicas <= max_replicas <= 1000, target_ongoing_requests > 0, delays >= 0", i)
			}
		}
		if err := checkResources(fmt.Sprintf("deployments[%d]", i), d.Resources); err != nil {
			return err
		}
		if err := CheckEnvVars(d.EnvVars); err != nil {
			return rpcerr.Wrapf(ErrBadRequest, "deployments[%d].env_vars: %v", i, err)
		}
	}
	if ingress != 1 {
		return bad("app.deployments: exactly one ingress deployment, found %d", ingress)
	}
	return nil
}

func (a *serveAPI) Deploy(ctx context.Context, req *pb.ServeDeployRequest) (*pb.ServeDeployResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	if err := checkServeApp(req.App); err != nil {
		return nil, err
	}
	return onLeaderVia(h, ctx, req, pb.NewServeServiceClient, pb.ServeServiceClient.Deploy, func() (*pb.ServeDeployResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdServeDeploy, req.RequestId, &pb.ServeDeployCommand{App: req.App})
		if err != nil {
			return nil, err
		}
		return &pb.ServeDeployResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *serveAPI) Delete(ctx context.Context, req *pb.ServeDeleteRequest) (*pb.ServeDeleteResponse, error) {
	h := a.h
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	return onLeaderVia(h, ctx, req, pb.NewServeServiceClient, pb.ServeServiceClient.Delete, func() (*pb.ServeDeleteResponse, error) {
		r, err := h.applier.Apply(ctx, fsm.CmdServeDelete, req.RequestId, &pb.ServeDeleteCommand{App: req.App})
		if err != nil {
			return nil, err
		}
		if req.App == "" {
			// Shutdown: the proxies end too.
			for _, p := range h.fsm.ServeProxies() {
				if _, err := h.applier.Apply(ctx, fsm.CmdActorFailed, "", &pb.ActorFailedCommand{ActorId: p.ActorId,
					Cause: "serve: shut down", NoRestart: true}); err != nil && !errors.Is(err, fsm.ErrActorNotFound) {
					return nil, err
				}
				if r, err = h.applier.Apply(ctx, fsm.CmdServeProxy, "", &pb.ServeProxyCommand{Proxy: p, Remove: true}); err != nil {
					return nil, err
				}
			}
		}
		return &pb.ServeDeleteResponse{Header: h.headerAt(r.Index)}, nil
	})
}

func (a *serveAPI) Status(ctx context.Context, req *pb.ServeStatusRequest) (*pb.ServeStatusResponse, error) {
	h := a.h
	if req.Stale {
		out := h.serve.status()
		out.Header = h.header()
		return out, nil
	}
	return onLeaderVia(h, ctx, req, pb.NewServeServiceClient, pb.ServeServiceClient.Status, func() (*pb.ServeStatusResponse, error) {
		out := h.serve.status()
		out.Header = h.header()
		return out, nil
	})
}

func (a *serveAPI) Report(ctx context.Context, req *pb.ServeReportRequest) (*pb.ServeReportResponse, error) {
	h := a.h
	if err := checkID("actor_id", req.ActorId); err != nil {
		return nil, err
	}
	return onLeaderVia(h, ctx, req, pb.NewServeServiceClient, pb.ServeServiceClient.Report, func() (*pb.ServeReportResponse, error) {
		h.serve.report(req)
		return &pb.ServeReportResponse{Header: h.header()}, nil
	})
}
