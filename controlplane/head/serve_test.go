package head

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestCheckServeAppNamesTheField(t *testing.T) {
	good := func() *pb.ServeApp {
		return &pb.ServeApp{Name: "a", RoutePrefix: "/a", JobId: "j", Deployments: []*pb.ServeDeployment{
			{Name: "d", ClassName: "serve:d", NumReplicas: 1, MaxOngoingRequests: 1, Ingress: true},
			{Name: "m", ClassName: "serve:m", NumReplicas: 1, MaxOngoingRequests: 1},
		}}
	}
	if err := checkServeApp(good()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*pb.ServeApp)
		want string
	}{
		{"no route", func(a *pb.ServeApp) { a.RoutePrefix = "" }, "app.route_prefix"},
		{"no job", func(a *pb.ServeApp) { a.JobId = "" }, "app.job_id"},
		{"duplicate deployment", func(a *pb.ServeApp) { a.Deployments[1].Name = "d" }, "deployments[1].name"},
		{"no ingress", func(a *pb.ServeApp) { a.Deployments[0].Ingress = false }, "exactly one ingress"},
		{"zero max ongoing", func(a *pb.ServeApp) { a.Deployments[1].MaxOngoingRequests = 0 }, "deployments[1].max_ongoing_requests"},
		{"bad autoscaling", func(a *pb.ServeApp) {
			a.Deployments[1].Autoscaling = &pb.ServeAutoscaling{MinReplicas: 2, MaxReplicas: 1, TargetOngoingRequests: 1}
		}, "deployments[1].autoscaling"},
		{"negative resource", func(a *pb.ServeApp) { a.Deployments[0].Resources = map[string]float64{"CPU": -1} }, "deployments[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good()
			tc.edit(a)
			err := checkServeApp(a)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %q", err, tc.want)
			}
			if c := status.Code(rpcerr.ToStatus(err)); c != codes.InvalidArgument {
				t.Fatalf("code %v, want InvalidArgument", c)
			}
		})
	}
}
