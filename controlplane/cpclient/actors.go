package cpclient

import (
	"context"

	"google.golang.org/grpc/codes"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// CreateActor registers an actor and returns its ID; retries reuse one
// request ID, so the actor is registered once.
func (c *Client) CreateActor(ctx context.Context, a *pb.ActorInfo) (string, error) {
	req := &pb.CreateActorRequest{Actor: a, RequestId: RequestID()}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.CreateActorResponse, error) {
		return cl.CreateActor(ctx, req)
	})
	if err != nil {
		return "", err
	}
	return r.ActorId, nil
}

// GetActor returns an actor by ID, or by name in a namespace (req.Name).
func (c *Client) GetActor(ctx context.Context, req *pb.GetActorRequest) (*pb.ActorInfo, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.GetActorResponse, error) {
		return cl.GetActor(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	return r.Actor, nil
}

// ListActors lists actors (of one job when jobID is set).
func (c *Client) ListActors(ctx context.Context, jobID string, stale bool) ([]*pb.ActorInfo, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListActorsResponse, error) {
		return cl.ListActors(ctx, &pb.ListActorsRequest{JobId: jobID, Stale: stale})
	})
	if err != nil {
		return nil, err
	}
	return r.Actors, nil
}

// KillActor kills an actor; with noRestart false it restarts if it may.
func (c *Client) KillActor(ctx context.Context, actorID string, noRestart bool) error {
	req := &pb.KillActorRequest{ActorId: actorID, NoRestart: noRestart, RequestId: RequestID()}
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.KillActorResponse, error) {
		return cl.KillActor(ctx, req)
	})
	return err
}

// ReportActorFailure reports the death of an actor's worker.
func (c *Client) ReportActorFailure(ctx context.Context, req *pb.ReportActorFailureRequest) (*pb.ReportActorFailureResponse, error) {
	return call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ReportActorFailureResponse, error) {
		return cl.ReportActorFailure(ctx, req)
	})
}

// ResolveActorDependencies tells the control plane that the constructor
// arguments of a DEPENDENCIES_UNREADY actor are ready (initArgs) or failed
// (errMsg non-empty). applied is false when the actor no longer waited.
func (c *Client) ResolveActorDependencies(ctx context.Context, actorID string, initArgs []byte, errMsg string) (applied bool, err error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ResolveActorDependenciesResponse, error) {
		return cl.ResolveActorDependencies(ctx, &pb.ResolveActorDependenciesRequest{ActorId: actorID, InitArgs: initArgs, Error: errMsg})
	})
	if err != nil {
		return false, err
	}
	return r.Applied, nil
}

// CreatePlacementGroup records a group (PENDING) and returns its ID;
// retries reuse one request ID, so it is created once.
func (c *Client) CreatePlacementGroup(ctx context.Context, g *pb.PlacementGroupInfo) (string, error) {
	req := &pb.CreatePlacementGroupRequest{Group: g, RequestId: RequestID()}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.CreatePlacementGroupResponse, error) {
		return cl.CreatePlacementGroup(ctx, req)
	})
	if err != nil {
		return "", err
	}
	return r.PlacementGroupId, nil
}

// GetPlacementGroup returns a group by ID, or by name in a namespace.
func (c *Client) GetPlacementGroup(ctx context.Context, req *pb.GetPlacementGroupRequest) (*pb.PlacementGroupInfo, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.GetPlacementGroupResponse, error) {
		return cl.GetPlacementGroup(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	return r.Group, nil
}

// ListPlacementGroups lists every group.
func (c *Client) ListPlacementGroups(ctx context.Context, stale bool) ([]*pb.PlacementGroupInfo, error) {
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListPlacementGroupsResponse, error) {
		return cl.ListPlacementGroups(ctx, &pb.ListPlacementGroupsRequest{Stale: stale})
	})
	if err != nil {
		return nil, err
	}
	return r.Groups, nil
}

// RemovePlacementGroup removes a group: its actors die, its bundles are
// released.
func (c *Client) RemovePlacementGroup(ctx context.Context, id string) error {
	req := &pb.RemovePlacementGroupRequest{PlacementGroupId: id, RequestId: RequestID()}
	_, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.RemovePlacementGroupResponse, error) {
		return cl.RemovePlacementGroup(ctx, req)
	})
	return err
}

// HeldActor is an actor's worker a raylet hosts.
type HeldActor struct{ Actor, Worker string }

// Stray is a hosted worker the actor table no longer names, and why.
type Stray struct {
	HeldActor
	Why string
}

// Strays says which of the hosted actor workers are strays (strayWhy): one
// stale read of all of them, which any head answers from its own table,
// and a linearizable read of each would-be stray to confirm, since a stale
// answer can only lag. With no answer it returns none (ask again later).
func (c *Client) Strays(ctx context.Context, held []HeldActor) []Stray {
	if len(held) == 0 {
		return nil
	}
	ids := make([]string, len(held))
	for i, h := range held {
		ids[i] = h.Actor
	}
	r, err := call(ctx, c, func(ctx context.Context, cl pb.ControlPlaneClient) (*pb.ListActorsResponse, error) {
		return cl.ListActors(ctx, &pb.ListActorsRequest{ActorIds: ids, Stale: true})
	})
	if err != nil {
		return nil
	}
	table := make(map[string]*pb.ActorInfo, len(r.Actors))
	for _, a := range r.Actors {
		table[a.ActorId] = a
	}
	var out []Stray
	for _, h := range held {
		if strayWhy(table[h.Actor], h.Worker) == "" {
			continue
		}
		a, err := c.GetActor(ctx, &pb.GetActorRequest{ActorId: h.Actor})
		switch {
		case rpcerr.Code(err) == codes.NotFound:
			a = nil
		case err != nil:
			continue // no answer: ask again next time
		}
		if why := strayWhy(a, h.Worker); why != "" {
			out = append(out, Stray{h, why})
		}
	}
	return out
}

// strayWhy says why a worker of an actor is a stray by the actor table's
// entry (nil: unknown), or "" when it is not: the actor is unknown, DEAD,
// or ALIVE on another worker. A PENDING or RESTARTING actor keeps its
// worker, which may be the placement under way.
func strayWhy(a *pb.ActorInfo, workerID string) string {
	switch {
	case a == nil:
		return "the actor is unknown"
	case a.State == pb.ActorState_DEAD:
		return "the actor is dead"
	case a.State == pb.ActorState_ALIVE && a.WorkerId != workerID:
		return "the actor lives on worker " + a.WorkerId
	}
	return ""
}
