package cpclient

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// ServeDeploy deploys (or updates) a Serve application.
func (c *Client) ServeDeploy(ctx context.Context, app *pb.ServeApp) error {
	req := &pb.ServeDeployRequest{RequestId: RequestID(), App: app}
	_, err := callConn(ctx, c, func(ctx context.Context, cc grpc.ClientConnInterface) (*pb.ServeDeployResponse, error) {
		return pb.NewServeServiceClient(cc).Deploy(ctx, req)
	})
	return err
}

// ServeDelete deletes a Serve application ("": every application).
func (c *Client) ServeDelete(ctx context.Context, app string) error {
	req := &pb.ServeDeleteRequest{RequestId: RequestID(), App: app}
	_, err := callConn(ctx, c, func(ctx context.Context, cc grpc.ClientConnInterface) (*pb.ServeDeleteResponse, error) {
		return pb.NewServeServiceClient(cc).Delete(ctx, req)
	})
	return err
}

// ServeStatus is the Serve state; stale answers from any head's copy
// (without the leader's load and health reports).
func (c *Client) ServeStatus(ctx context.Context, stale bool) (*pb.ServeStatusResponse, error) {
	return callConn(ctx, c, func(ctx context.Context, cc grpc.ClientConnInterface) (*pb.ServeStatusResponse, error) {
		return pb.NewServeServiceClient(cc).Status(ctx, &pb.ServeStatusRequest{Stale: stale})
	})
}

// ServeReport sends a replica's or proxy's soft state to the controller.
func (c *Client) ServeReport(ctx context.Context, r *pb.ServeReportRequest) error {
	_, err := callConn(ctx, c, func(ctx context.Context, cc grpc.ClientConnInterface) (*pb.ServeReportResponse, error) {
		return pb.NewServeServiceClient(cc).Report(ctx, r)
	})
	return err
}
