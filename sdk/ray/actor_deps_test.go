package ray

import (
	"context"

	cpb "github.com/manta-ray/manta/proto/controlpb"
	"github.com/manta-ray/manta/sdk/internal/core"
)

// ControlPlaneActor is the control plane's record of an actor (what
// `manta list actors` shows), read through this process's client: tests of
// the embedded cluster have no other way to its head.
func ControlPlaneActor(ctx context.Context, id string) (*cpb.ActorInfo, error) {
	c, err := core.Current()
	if err != nil {
		return nil, err
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return nil, err
	}
	return cp.GetActor(ctx, &cpb.GetActorRequest{ActorId: id})
}
