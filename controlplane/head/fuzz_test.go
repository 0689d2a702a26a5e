package head_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tc "github.com/manta-ray/manta/controlplane/testcluster"
	"github.com/manta-ray/manta/internal/auth"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// FuzzHeadRequests sends arbitrary (well-formed protobuf) requests to the
// write RPCs of a running head: each is answered with a clear status —
// never Internal or Unknown — and the head keeps serving.
func FuzzHeadRequests(f *testing.F) {
	c := tc.Start(f, 1, nil)
	cc, err := grpc.NewClient(c.Addresses()[0], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(c.Token)))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { cc.Close() })
	cl := pb.NewControlPlaneClient(cc)
	type call struct {
		req func() proto.Message
		do  func(ctx context.Context, m proto.Message) error
	}
	calls := []call{
		{func() proto.Message { return &pb.KVPutRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.KVPut(ctx, m.(*pb.KVPutRequest))
			return err
		}},
		{func() proto.Message { return &pb.SubmitJobRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.SubmitJob(ctx, m.(*pb.SubmitJobRequest))
			return err
		}},
		{func() proto.Message { return &pb.CreateActorRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.CreateActor(ctx, m.(*pb.CreateActorRequest))
			return err
		}},
		{func() proto.Message { return &pb.RecordLineageRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.RecordLineage(ctx, m.(*pb.RecordLineageRequest))
			return err
		}},
		{func() proto.Message { return &pb.RegisterNodeRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.RegisterNode(ctx, m.(*pb.RegisterNodeRequest))
			return err
		}},
		{func() proto.Message { return &pb.CreateTokenRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.CreateToken(ctx, m.(*pb.CreateTokenRequest))
			return err
		}},
		{func() proto.Message { return &pb.AddJobRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.AddJob(ctx, m.(*pb.AddJobRequest))
			return err
		}},
		{func() proto.Message { return &pb.ReportTaskEventsRequest{} }, func(ctx context.Context, m proto.Message) error {
			_, err := cl.ReportTaskEvents(ctx, m.(*pb.ReportTaskEventsRequest))
			return err
		}},
	}
	seed := func(i byte, m proto.Message) {
		b, _ := proto.Marshal(m)
		f.Add(i, b)
	}
	seed(0, &pb.KVPutRequest{Key: "k", Value: []byte("v")})
	seed(0, &pb.KVPutRequest{Key: ""})
	seed(1, &pb.SubmitJobRequest{Job: &pb.JobSubmission{Entrypoint: "true", EntrypointNumCpus: -1}})
	seed(2, &pb.CreateActorRequest{Actor: &pb.ActorInfo{ActorId: "a", ClassName: "C", Resources: map[string]float64{"CPU": -1}}})
	seed(3, &pb.RecordLineageRequest{})
	seed(4, &pb.RegisterNodeRequest{Node: &pb.NodeInfo{NodeId: "n", Resources: map[string]float64{"": 1}}})
	seed(5, &pb.CreateTokenRequest{Scope: "admin", TtlSeconds: -1})
	seed(6, &pb.AddJobRequest{})
	seed(7, &pb.ReportTaskEventsRequest{})
	f.Fuzz(func(t *testing.T, which byte, body []byte) {
		k := calls[int(which)%len(calls)]
		m := k.req()
		if proto.Unmarshal(body, m) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if code := status.Code(k.do(ctx, m)); code == codes.Internal || code == codes.Unknown {
			t.Fatalf("%T %v: %v", m, m, k.do(ctx, m))
		}
		if _, err := cl.Status(ctx, &pb.StatusRequest{}); err != nil {
			t.Fatalf("the head stopped serving after %T %v: %v", m, m, err)
		}
	})
}
