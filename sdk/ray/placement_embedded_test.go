package ray_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// TestPlacementGroupEmbedded runs a placement group's whole life in one
// process (embedded head and raylet), so the race detector sees the
// placement routine, the raylet's bundle pools and the SDK together.
func TestPlacementGroupEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	pg, err := ray.NewPlacementGroup(ctx, []ray.Bundle{{"CPU": 1}, {"CPU": 0.5}}, ray.StrictPack, ray.Name("embedded"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ray.Get(ctx, square.Remote(ctx, ray.Val(3), ray.NumCPUs(1), ray.InPlacementGroup(pg, 0))); err != nil {
		t.Fatalf("a task in bundle 0: %v", err)
	}
	h, err := Where.Remote(ctx, ray.InPlacementGroup(pg, -1), ray.NumCPUs(0.5))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ray.Get(ctx, whereNode.Remote(ctx, h)); err != nil {
		t.Fatalf("an actor in the group: %v", err)
	}
	// A task bigger than any bundle can never run in the group.
	if _, err := ray.Get(ctx, square.Remote(ctx, ray.Val(3), ray.NumCPUs(2), ray.InPlacementGroup(pg, -1))); !errors.Is(err, ray.ErrTaskUnschedulable) {
		t.Fatalf("a task bigger than its bundles: %v; want ErrTaskUnschedulable", err)
	}
	if err := pg.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := ray.Get(ctx, whereNode.Remote(ctx, h))
		if errors.Is(err, ray.ErrActorDied) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the actor of a removed group: %v; want ErrActorDied", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := pg.Ready(ctx); !errors.Is(err, ray.ErrPlacementGroupRemoved) {
		t.Fatalf("Ready of a removed group: %v; want ErrPlacementGroupRemoved", err)
	}
	// Every CPU comes back (the bundles released, the leases returned).
	for {
		got, err := ray.AvailableResources(ctx)
		if err == nil && got["CPU"] == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("available after the removal: %v, %v; want CPU 2", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
