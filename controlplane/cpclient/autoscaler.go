package cpclient

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// RequestResources asks the autoscaler to size the cluster so bundles fit
// on its nodes, and to keep it so until the next call (none: cleared).
func (c *Client) RequestResources(ctx context.Context, bundles []map[string]float64) error {
	req := &pb.RequestResourcesRequest{RequestId: RequestID()}
	for _, b := range bundles {
		req.Bundles = append(req.Bundles, &pb.Bundle{Resources: b})
	}
	_, err := callConn(ctx, c, func(ctx context.Context, cc grpc.ClientConnInterface) (*pb.RequestResourcesResponse, error) {
		return pb.NewAutoscalerServiceClient(cc).RequestResources(ctx, req)
	})
	return err
}

// AutoscalerStatus is the leader's autoscaler view.
func (c *Client) AutoscalerStatus(ctx context.Context) (*pb.AutoscalerStatusResponse, error) {
	return callConn(ctx, c, func(ctx context.Context, cc grpc.ClientConnInterface) (*pb.AutoscalerStatusResponse, error) {
		return pb.NewAutoscalerServiceClient(cc).AutoscalerStatus(ctx, &pb.AutoscalerStatusRequest{})
	})
}
