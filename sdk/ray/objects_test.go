package ray_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/manta-ray/manta/internal/auth"
	"github.com/manta-ray/manta/internal/launcher"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/ray"
)

// digest is what a task saw of a []byte argument: its SHA-256 and how
// many objects its process had read in place from its node's arena.
type digest struct {
	SHA    string
	Mapped int64
}

var (
	sumBytes = ray.Func1("test.SumBytes", func(_ context.Context, b []byte) (digest, error) {
		s := sha256.Sum256(b)
		return digest{SHA: hex.EncodeToString(s[:]), Mapped: ray.MappedReads()}, nil
	})
	// readInPlace reports what a ReadOnlyBytes parameter saw: its digest
	// and whether it was a view of the node's arena.
	readInPlace = ray.Func1("test.ReadInPlace", func(_ context.Context, b ray.ReadOnlyBytes) (inPlace, error) {
		return inPlace{SHA: shaOf(b), View: ray.InArena(b)}, nil
	})
	copyOf = ray.Func1("test.CopyOf", func(_ context.Context, b []byte) (inPlace, error) {
		return inPlace{SHA: shaOf(b), View: ray.InArena(b)}, nil
	})
	// makeBytes returns n bytes of a pattern, stored on the node it ran on.
	makeBytes = ray.Func1("test.MakeBytes", func(_ context.Context, n int) ([]byte, error) { return bytesOf(n), nil })
)

type inPlace struct {
	SHA  string
	View bool
}

func shaOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// objectID is a ref's object ID as bytes.
func objectID(t *testing.T, hexID string) []byte {
	t.Helper()
	id, err := hex.DecodeString(hexID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// holds says whether the raylet at addr holds the object (LocateObjects).
func holds(ctx context.Context, addr, token string, id []byte) (bool, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Token(func() string { return token })))
	if err != nil {
		return false, err
	}
	defer cc.Close()
	rep, err := pb.NewRayletClient(cc).LocateObjects(ctx, &pb.LocateObjectsRequest{ObjectIds: [][]byte{id}})
	if err != nil {
		return false, err
	}
	for _, o := range rep.Objects {
		if string(o.ObjectId) == string(id) {
			return true, nil
		}
	}
	return false, nil
}

// waitHeld waits until the raylet at addr holds the object (want) or not.
func waitHeld(t *testing.T, ctx context.Context, addr, token string, id []byte, want bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := holds(ctx, addr, token, id)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("raylet %s holds %x: %v (%v); want %v", addr, id, got, err, want)
		}
		// The GC's cleanups run in their own goroutine: collect again
		// while waiting, for the tests that drop a ref without Release.
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}

// TestObjectRefcountEmbedded checks the owner's reference counting on a
// one-node embedded cluster: Release and an unreachable ref both free the
// object in the node's store, a released ref reads as ErrObjectNotFound,
// and a ref passed to a task stays until the task is done.
func TestObjectRefcountEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	addr, token := ray.EmbeddedRaylet()
	big := bytesOf(4 << 20)

	t.Run("a ReadOnlyBytes parameter reads the arena in place, a []byte one a copy", func(t *testing.T) {
		ref, err := ray.Put(ctx, ray.ReadOnlyBytes(big))
		if err != nil {
			t.Fatal(err)
		}
		defer ref.Release()
		got, err := ray.Get(ctx, readInPlace.Remote(ctx, ref))
		if err != nil || got.SHA != shaOf(big) || !got.View {
			t.Fatalf("ReadOnlyBytes argument: %+v, %v; want the right bytes, viewed in place", got, err)
		}
		made := makeBytes.Remote(ctx, ray.Val(len(big)))
		defer made.Release()
		got, err = ray.Get(ctx, readInPlace.Remote(ctx, ray.ReadOnly(made)))
		if err != nil || got.SHA != shaOf(big) || !got.View {
			t.Fatalf("a []byte result read through ReadOnly: %+v, %v; want the right bytes, viewed in place", got, err)
		}
		got, err = ray.Get(ctx, copyOf.Remote(ctx, made))
		if err != nil || got.SHA != shaOf(big) || got.View {
			t.Fatalf("[]byte argument: %+v, %v; want the right bytes, copied", got, err)
		}
	})

	t.Run("Release frees the object and Get then says not found", func(t *testing.T) {
		ref, err := ray.Put(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		id := objectID(t, ref.ID())
		waitHeld(t, ctx, addr, token, id, true)
		got, err := ray.Get(ctx, ref)
		if err != nil || shaOf(got) != shaOf(big) {
			t.Fatalf("Get: %d bytes, %v", len(got), err)
		}
		copyOfRef := ref
		ref.Release()
		ref.Release() // idempotent
		waitHeld(t, ctx, addr, token, id, false)
		if _, err := ray.Get(ctx, copyOfRef); !errors.Is(err, ray.ErrObjectNotFound) {
			t.Fatalf("Get after Release: %v; want ErrObjectNotFound", err)
		}
		if _, err := ray.Get(ctx, sumBytes.Remote(ctx, copyOfRef)); !errors.Is(err, ray.ErrObjectNotFound) {
			t.Fatalf("a task given a released ref: %v; want ErrObjectNotFound", err)
		}
	})

	t.Run("small objects Release too", func(t *testing.T) {
		ref, err := ray.Put(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ray.Get(ctx, ref); err != nil || v != 7 {
			t.Fatalf("Get = %d, %v", v, err)
		}
		ref.Release()
		if _, err := ray.Get(ctx, ref); !errors.Is(err, ray.ErrObjectNotFound) {
			t.Fatalf("Get after Release: %v; want ErrObjectNotFound", err)
		}
	})

	t.Run("an unreachable ref is freed by the collector", func(t *testing.T) {
		id := func() []byte {
			ref, err := ray.Put(ctx, big)
			if err != nil {
				t.Fatal(err)
			}
			return objectID(t, ref.ID())
		}()
		waitHeld(t, ctx, addr, token, id, false)
	})

	t.Run("a task argument outlives the Release of its ref", func(t *testing.T) {
		ref, err := ray.Put(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		id := objectID(t, ref.ID())
		// The task waits for its slow dependency, so the Put object is
		// released while the task is still queued.
		res := sumBytes.Remote(ctx, echoBytes.Remote(ctx, ref))
		dep := sumBytes.Remote(ctx, ref)
		ref.Release()
		for _, r := range []ray.ObjectRef[digest]{res, dep} {
			d, err := ray.Get(ctx, r)
			if err != nil || d.SHA != shaOf(big) {
				t.Fatalf("task read %+v, %v; want sha %s", d, err, shaOf(big))
			}
		}
		waitHeld(t, ctx, addr, token, id, false)
	})

	t.Run("large task results are freed with their ref", func(t *testing.T) {
		ref := makeBytes.Remote(ctx, ray.Val(2<<20))
		got, err := ray.Get(ctx, ref)
		if err != nil || len(got) != 2<<20 {
			t.Fatalf("Get: %d bytes, %v", len(got), err)
		}
		id := objectID(t, ref.ID())
		waitHeld(t, ctx, addr, token, id, true)
		ref.Release()
		waitHeld(t, ctx, addr, token, id, false)
	})
}

// TestObjectStoreCluster moves large objects between the processes and
// nodes of a real cluster (3 heads, 2 raylets): a worker on the object's
// node maps it, one on another node gets it pulled to its node; Release
// frees every copy; objects survive a leader failover (their owner keeps
// their directory); an object whose only node died is lost, promptly.
func TestObjectStoreCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := launcher.Start(ctx, launcher.Options{Binary: buildManta(t), Heads: 3, Nodes: 2, DataDir: t.TempDir(),
		NodeArgs: func(i int) []string {
			return []string{"--num-cpus", "2", "--resources", fmt.Sprintf("node%d=1", i+1)}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nodes := c.Nodes()
	// The driver submits through node-1 and stores its Puts there.
	if err := ray.Init(ctx, ray.Address(strings.Join(c.Addresses(), ",")), ray.Token(c.Token()),
		ray.Raylet(nodes[0].Address)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	token := c.Token()
	on := func(node int) ray.CallOption {
		return ray.Resources(map[string]float64{fmt.Sprintf("node%d", node): 1})
	}

	big := bytesOf(256 << 20)
	want := shaOf(big)
	ref, err := ray.Put(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	big = nil
	id := objectID(t, ref.ID())

	t.Run("a worker on the object's node maps it", func(t *testing.T) {
		d, err := ray.Get(ctx, sumBytes.Remote(ctx, ref, on(1)))
		if err != nil || d.SHA != want {
			t.Fatalf("task on node-1 read %+v, %v; want sha %s", d, err, want)
		}
		if d.Mapped < 1 {
			t.Fatalf("the worker read the object through no mapping (%d mapped reads)", d.Mapped)
		}
	})

	t.Run("a worker on another node gets it pulled", func(t *testing.T) {
		d, err := ray.Get(ctx, sumBytes.Remote(ctx, ref, on(2)))
		if err != nil || d.SHA != want {
			t.Fatalf("task on node-2 read %+v, %v; want sha %s", d, err, want)
		}
		if d.Mapped < 1 {
			t.Fatalf("the worker on node-2 read the pulled object through no mapping (%d mapped reads)", d.Mapped)
		}
		waitHeld(t, ctx, nodes[1].Address, token, id, true)
	})

	t.Run("objects survive a leader failover", func(t *testing.T) {
		small, err := ray.Put(ctx, "small")
		if err != nil {
			t.Fatal(err)
		}
		leader, _, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		if s, err := ray.Get(ctx, small); err != nil || s != "small" {
			t.Fatalf("small object after failover: %q, %v", s, err)
		}
		d, err := ray.Get(ctx, sumBytes.Remote(ctx, ref, on(2)))
		if err != nil || d.SHA != want {
			t.Fatalf("large object after failover: %+v, %v", d, err)
		}
	})

	t.Run("Release frees every copy", func(t *testing.T) {
		ref.Release()
		for _, n := range nodes {
			waitHeld(t, ctx, n.Address, token, id, false)
		}
		if _, err := ray.Get(ctx, ref); !errors.Is(err, ray.ErrObjectNotFound) {
			t.Fatalf("Get after Release: %v; want ErrObjectNotFound", err)
		}
	})

	t.Run("an object whose only node died is lost", func(t *testing.T) {
		// Made and stored on node-2, which then dies. MaxRetries(0) leaves
		// no attempt to rebuild it from lineage with (lineage_test.go).
		lost := makeBytes.Remote(ctx, ray.Val(1<<20), on(2), ray.MaxRetries(0))
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[[]byte]{lost}, 1, 0); err != nil {
			t.Fatal(err)
		}
		waitHeld(t, ctx, nodes[1].Address, token, objectID(t, lost.ID()), true)
		if err := c.KillNode(1); err != nil {
			t.Fatal(err)
		}
		bounded, cancelBounded := context.WithTimeout(ctx, time.Minute)
		defer cancelBounded()
		if _, err := ray.Get(bounded, lost); !errors.Is(err, ray.ErrObjectLost) {
			t.Fatalf("Get of an object whose node died: %v; want ErrObjectLost", err)
		}
	})
}
