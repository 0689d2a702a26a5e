package fsm

import (
	"errors"
	"io"
	"testing"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestServeDeployScaleDeleteAndSnapshot(t *testing.T) {
	a := &applier{t: t, f: New(nil)}
	app := func(name, route string) *pb.ServeApp {
		return &pb.ServeApp{Name: name, RoutePrefix: route, JobId: "j1", Deployments: []*pb.ServeDeployment{
			{Name: "d", ClassName: "serve:d", Version: "v1", NumReplicas: 2, MaxOngoingRequests: 4, Ingress: true},
			{Name: "auto", ClassName: "serve:auto", Version: "v1", MaxOngoingRequests: 4,
				Autoscaling: &pb.ServeAutoscaling{MinReplicas: 1, MaxReplicas: 5, TargetOngoingRequests: 2}},
		}}
	}
	must := func(r *pb.CommandResult) {
		t.Helper()
		if err := ResultError(r); err != nil {
			t.Fatal(err)
		}
	}
	must(a.apply(cmd(t, CmdServeDeploy, "", &pb.ServeDeployCommand{App: app("a", "/a")}))[0])
	if err := ResultError(a.apply(cmd(t, CmdServeDeploy, "", &pb.ServeDeployCommand{App: app("b", "/a")}))[0]); !errors.Is(err, ErrServeRouteTaken) {
		t.Fatalf("route taken twice: %v", err)
	}
	if d := a.f.ServeApps()[0].Deployments[1]; ServeTarget(d) != 1 {
		t.Fatalf("an autoscaled deployment starts at its minimum: %v", d)
	}
	must(a.apply(cmd(t, CmdServeScale, "", &pb.ServeScaleCommand{App: "a", Deployment: "auto", TargetReplicas: 4}))[0])
	// A redeploy keeps the autoscaler's target.
	must(a.apply(cmd(t, CmdServeDeploy, "", &pb.ServeDeployCommand{App: app("a", "/a")}))[0])
	if d := a.f.ServeApps()[0].Deployments[1]; ServeTarget(d) != 4 {
		t.Fatalf("redeploy reset the autoscaled target: %v", d)
	}
	must(a.apply(cmd(t, CmdServeReplica, "", &pb.ServeReplicaCommand{Replica: &pb.ServeReplica{ReplicaId: "r1", App: "a", Deployment: "d", Version: "v1"}}))[0])
	if err := ResultError(a.apply(cmd(t, CmdServeReplica, "", &pb.ServeReplicaCommand{Replica: &pb.ServeReplica{ReplicaId: "r2", App: "gone", Deployment: "d"}}))[0]); !errors.Is(err, ErrServeAppNotFound) {
		t.Fatalf("replica of a missing app: %v", err)
	}
	must(a.apply(cmd(t, CmdServeProxy, "", &pb.ServeProxyCommand{Proxy: &pb.ServeProxy{NodeId: "n1", ActorId: "p1", JobId: "j1"}}))[0])

	// A restored store has the same serve state.
	snap, _ := a.f.Snapshot()
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	b := New(nil)
	if err := b.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	if h1, _ := a.f.StateHash(); func() string { h2, _ := b.StateHash(); return h2 }() != h1 {
		t.Fatal("restored state differs")
	}
	if len(b.ServeApps()) != 1 || len(b.ServeReplicas()) != 1 || len(b.ServeProxies()) != 1 {
		t.Fatalf("restored: %v %v %v", b.ServeApps(), b.ServeReplicas(), b.ServeProxies())
	}

	// Delete drains the app's replicas (the controller ends them).
	must(a.apply(cmd(t, CmdServeDelete, "", &pb.ServeDeleteCommand{App: "a"}))[0])
	if len(a.f.ServeApps()) != 0 || a.f.ServeReplicas()[0].State != pb.ServeReplicaState_REPLICA_DRAINING {
		t.Fatalf("after delete: %v %v", a.f.ServeApps(), a.f.ServeReplicas())
	}
	if err := ResultError(a.apply(cmd(t, CmdServeDelete, "", &pb.ServeDeleteCommand{App: "a"}))[0]); !errors.Is(err, ErrServeAppNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	must(a.apply(cmd(t, CmdServeReplica, "", &pb.ServeReplicaCommand{Replica: &pb.ServeReplica{ReplicaId: "r1"}, Remove: true}))[0])
	if len(a.f.ServeReplicas()) != 0 {
		t.Fatal("replica not removed")
	}
}
