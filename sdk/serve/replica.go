package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/internal/core"
	"github.com/manta-ray/manta/sdk/ray"
)

// ReportPeriod is how often replicas and proxies report to the
// controller (load, health, address).
const ReportPeriod = 500 * time.Millisecond

// HealthChecker is implemented by instances that check their own health:
// a replica whose check fails (or takes longer than its timeout) is
// replaced.
type HealthChecker interface {
	CheckHealth(ctx context.Context) error
}

// replica is the actor instance of every deployment: the user's instance
// and what the replica tracks about it.
type replica struct {
	def      *deploymentDef
	inst     any
	app      string
	dep      *pb.ServeDeployment
	actorID  string
	workerID string
	cp       *cpclient.Client
	log      *zap.Logger

	ongoing atomic.Int32
	mu      sync.Mutex
	healthy bool
	message string
}

// process-wide facts of a worker hosting a replica or proxy (a worker
// hosts one actor).
var hosted struct {
	sync.Mutex
	app string
}

func hostedApp() string {
	hosted.Lock()
	defer hosted.Unlock()
	return hosted.app
}

func runtimeParts(ctx context.Context) (*cpclient.Client, *zap.Logger, ray.RuntimeInfo, error) {
	c, err := core.Current()
	if err != nil {
		return nil, nil, ray.RuntimeInfo{}, err
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return nil, nil, ray.RuntimeInfo{}, err
	}
	ri, err := ray.RuntimeContext(ctx)
	return cp, c.Logger().Named("serve"), ri, err
}

func newReplica(ctx context.Context, d *deploymentDef, construct func(context.Context, []byte) (any, error)) (*replica, error) {
	cp, log, ri, err := runtimeParts(ctx)
	if err != nil {
		return nil, err
	}
	// The controller wrote the replica's record before it registered the
	// actor: the leader's copy has it.
	st, err := cp.ServeStatus(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("serve: read the replica's record: %w", err)
	}
	r := &replica{def: d, actorID: ri.ActorID, workerID: ri.WorkerID, cp: cp, healthy: true}
	for _, rs := range st.Replicas {
		if rs.Replica.ReplicaId == ri.ActorID {
			r.app = rs.Replica.App
			for _, a := range st.Apps {
				if a.Name == r.app {
					r.dep = findDep(a, rs.Replica.Deployment)
				}
			}
		}
	}
	if r.dep == nil {
		return nil, fmt.Errorf("%w: replica %s of %s has no deployment record", ErrNotFound, ri.ActorID, d.name)
	}
	r.log = log.With(zap.String("app", r.app), zap.String("deployment", d.name), zap.String("replica", r.actorID))
	hosted.Lock()
	hosted.app = r.app
	hosted.Unlock()
	if r.inst, err = construct(ctx, r.dep.InitArg); err != nil {
		return nil, err
	}
	// The loop lives as long as the replica's worker process: the actor
	// ends by its process ending.
	go r.reportLoop()
	return r, nil
}

func findDep(a *pb.ServeApp, name string) *pb.ServeDeployment {
	for _, d := range a.Deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// call is method serve.call: one request. A panic in the handler is a
// 500 with an error ID in the replica's log; the replica goes on.
func (r *replica) call(ctx context.Context, req *wireRequest) (resp *wireResponse, err error) {
	r.ongoing.Add(1)
	defer r.ongoing.Add(-1)
	defer func() {
		if p := recover(); p != nil {
			id := auth.RandomHex(6)
			r.log.WithOptions(zap.AddStacktrace(zap.FatalLevel)).Error("handler panicked", zap.String("error_id", id), zap.Any("panic", p), zap.String("path", req.Path),
				zap.ByteString("stack", debug.Stack()))
			resp, err = &wireResponse{Status: http.StatusInternalServerError, ErrorID: id,
				Body: []byte("Internal Server Error (error id " + id + ")\n")}, nil
		}
	}()
	resp, err = r.def.handle(ctx, r.inst, req)
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) {
			return &wireResponse{Status: he.Status, Body: []byte(he.Message + "\n")}, nil
		}
		id := auth.RandomHex(6)
		r.log.Warn("handler failed", zap.String("error_id", id), zap.Error(err), zap.String("path", req.Path))
		return &wireResponse{Status: http.StatusInternalServerError, ErrorID: id,
			Body: []byte(fmt.Sprintf("%v (error id %s)\n", err, id))}, nil
	}
	return resp, nil
}

// checkHealth runs the user's check, bounded by the timeout.
func (r *replica) checkHealth(ctx context.Context) (bool, error) {
	hc, ok := r.inst.(HealthChecker)
	if !ok {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(r.dep.HealthCheckTimeoutMs)*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- hc.CheckHealth(ctx) }()
	select {
	case err := <-done:
		return err == nil, err
	case <-ctx.Done():
		return false, fmt.Errorf("health check timed out after %dms", r.dep.HealthCheckTimeoutMs)
	}
}

func (r *replica) reportLoop() {
	ctx := context.Background()
	t := time.NewTicker(ReportPeriod)
	defer t.Stop()
	lastCheck := time.Time{}
	period := time.Duration(r.dep.HealthCheckPeriodMs) * time.Millisecond
	for {
		if time.Since(lastCheck) >= period {
			lastCheck = time.Now()
			ok, err := r.checkHealth(ctx)
			r.mu.Lock()
			r.healthy, r.message = ok, ""
			if err != nil {
				r.message = err.Error()
			}
			r.mu.Unlock()
		}
		r.mu.Lock()
		rep := &pb.ServeReportRequest{ActorId: r.actorID, WorkerId: r.workerID, Ongoing: r.ongoing.Load(),
			Healthy: r.healthy, Message: r.message}
		r.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = r.cp.ServeReport(rctx, rep)
		cancel()
		<-t.C
	}
}
