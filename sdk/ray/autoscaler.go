package ray

import (
	"context"
	"fmt"

	"github.com/manta-ray/manta/sdk/internal/core"
)

// RequestResources asks the cluster's autoscaler to scale so that bundles
// fit on its nodes (their total resources, whatever runs there), and to
// keep that size until the next call replaces the request; no bundles
// clears it. Ray's ray.autoscaler.sdk.request_resources. It returns once
// the request is recorded, not when the nodes are up. A bundle with a
// quantity <= 0: ErrInvalidOption.
func RequestResources(ctx context.Context, bundles []Bundle) error {
	c, err := core.Current()
	if err != nil {
		return err
	}
	for i, b := range bundles {
		if len(b) == 0 {
			return fmt.Errorf("%w: bundle %d is empty", ErrInvalidOption, i)
		}
		for k, q := range b {
			if !(q > 0) {
				return fmt.Errorf("%w: bundle %d: %s=%v; quantities must be > 0", ErrInvalidOption, i, k, q)
			}
		}
	}
	cp, err := c.ControlPlane()
	if err != nil {
		return err
	}
	if err := cp.RequestResources(ctx, bundles); err != nil {
		return fmt.Errorf("ray: request resources: %w", err)
	}
	return nil
}
