package cpclient

import (
	"context"

	pb "github.com/manta-ray/manta/proto/controlpb"
)

// OwnerDied reports an owner that stopped answering and returns which of
// objs (copies the caller holds) the control plane adopted.
// FailedPrecondition (OWNER_ALIVE) when the leader still reaches it.
func (c *Client) OwnerDied(ctx context.Context, req *pb.OwnerDiedRequest) (*pb.OwnerDiedResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.OwnerDiedResponse, error) {
		return cl.OwnerDied(ctx, req)
	})
}

// ResolveObject asks who answers for an object whose owner cannot be
// reached, and where it is.
func (c *Client) ResolveObject(ctx context.Context, req *pb.ResolveObjectRequest) (*pb.ResolveObjectResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ResolveObjectResponse, error) {
		return cl.ResolveObject(ctx, req)
	})
}
