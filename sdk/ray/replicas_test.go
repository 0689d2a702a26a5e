package ray_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
	"github.com/manta-ray/manta/sdk/ray"
)

// TestReplicatedPuts: Put with Replicas keeps n copies on n nodes, makes a
// new one when a holder dies, and a Durable Put survives every raylet.
func TestReplicatedPuts(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 1, Nodes: 4, DataDir: t.TempDir(),
		NodeArgs: func(int) []string { return []string{"--num-cpus", "1"} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nodes := c.Nodes()
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()),
		ray.Raylet(nodes[0].Address)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	// holders lists the running nodes that hold the object.
	holders := func(id []byte) []int {
		var out []int
		for i, n := range c.Nodes() {
			if !n.Running {
				continue
			}
			if ok, err := holds(ctx, n.Address, c.Token(), id); err == nil && ok {
				out = append(out, i)
			}
		}
		return out
	}

	t.Run("Replicas(2) keeps two copies through a node's death", func(t *testing.T) {
		big := bytesOf(32 << 20)
		ref, err := ray.Put(ctx, big, ray.Replicas(2))
		if err != nil {
			t.Fatal(err)
		}
		id := objectID(t, ref.ID())
		on := holders(id)
		if len(on) != 2 || on[0] != 0 {
			t.Fatalf("held by nodes %v; want node 0 and one other, as Put returned", on)
		}
		if err := c.KillNode(on[1]); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			now := holders(id)
			if len(now) == 2 && now[0] == 0 && now[1] != on[1] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("held by %v after node %d died; want a new second copy", now, on[1])
			}
			time.Sleep(100 * time.Millisecond)
		}
		if b, err := ray.Get(ctx, ref); err != nil || shaOf(b) != shaOf(big) {
			t.Fatalf("Get: %d bytes, %v", len(b), err)
		}
		ref.Release()
		deadline = time.Now().Add(30 * time.Second)
		for len(holders(id)) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("still held by %v after Release", holders(id))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("more replicas than nodes is refused", func(t *testing.T) {
		_, err := ray.Put(ctx, bytesOf(1<<20), ray.Replicas(9))
		if !errors.Is(err, ray.ErrInvalidOption) || !strings.Contains(err.Error(), "alive nodes") {
			t.Fatalf("Replicas(9) on 3 alive nodes: %v; want ErrInvalidOption naming the alive nodes", err)
		}
		_, err = ray.Put(ctx, bytesOf(2<<20), ray.Durable())
		if !errors.Is(err, ray.ErrInvalidOption) || !strings.Contains(err.Error(), "limit") {
			t.Fatalf("Durable of 2 MiB: %v; want ErrInvalidOption naming the limit", err)
		}
	})

	t.Run("ReturnReplicas(2) keeps a task's return on two nodes", func(t *testing.T) {
		ref := makeBytes.Remote(ctx, ray.Val(4<<20), ray.ReturnReplicas(2))
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[[]byte]{ref}, 1, 0); err != nil {
			t.Fatal(err)
		}
		id := objectID(t, ref.ID())
		on := holders(id)
		if len(on) != 2 {
			t.Fatalf("return held by nodes %v once ready; want two", on)
		}
		if err := c.KillNode(on[1]); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			now := holders(id)
			if len(now) == 2 && !slices.Contains(now, on[1]) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("held by %v after node %d died; want two copies again", now, on[1])
			}
			time.Sleep(100 * time.Millisecond)
		}
		want := shaOf(bytesOf(4 << 20))
		if b, err := ray.Get(ctx, ref); err != nil || shaOf(b) != want {
			t.Fatalf("Get: %d bytes, %v", len(b), err)
		}
		_, err := ray.Get(ctx, makeBytes.Remote(ctx, ray.Val(4<<20), ray.ReturnReplicas(9)))
		if err == nil || !strings.Contains(err.Error(), "alive nodes") {
			t.Fatalf("ReturnReplicas(9): %v; want an error naming the alive nodes", err)
		}
	})

	t.Run("a Durable Put survives every raylet", func(t *testing.T) {
		val := bytesOf(512 << 10) // stored on node 0, not inline
		ref, err := ray.Put(ctx, val, ray.Durable())
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range c.Nodes() {
			if n.Running {
				if err := c.KillNode(i); err != nil {
					t.Fatal(err)
				}
			}
		}
		if b, err := ray.Get(ctx, ref); err != nil || shaOf(b) != shaOf(val) {
			t.Fatalf("Get with every raylet dead: %d bytes, %v", len(b), err)
		}
	})
}
