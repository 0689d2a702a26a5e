package ray_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// boxed holds a ref inside a value.
type boxed struct {
	Name string
	Ref  ray.ObjectRef[[]byte]
}

// keeper is an actor that keeps the refs it is given.
type keeper struct{ kept *boxed }

func (k *keeper) Keep(_ context.Context, b boxed) (string, error) {
	k.kept = &b
	return b.Name, nil
}

// Read gets the kept ref's value and returns its digest.
func (k *keeper) Read(ctx context.Context) (string, error) {
	if k.kept == nil {
		return "", errors.New("nothing kept")
	}
	b, err := ray.Get(ctx, k.kept.Ref)
	if err != nil {
		return "", err
	}
	return shaOf(b), nil
}

// Drop releases the kept ref.
func (k *keeper) Drop(context.Context) (bool, error) {
	if k.kept == nil {
		return false, nil
	}
	k.kept.Ref.Release()
	k.kept = nil
	return true, nil
}

func (k *keeper) Pid(context.Context) (int, error) { return os.Getpid(), nil }

var (
	Keeper     = ray.Actor0("test.Keeper", func(context.Context) (*keeper, error) { return &keeper{}, nil })
	keeperKeep = ray.Method1(Keeper, "Keep", (*keeper).Keep)
	keeperRead = ray.Method0(Keeper, "Read", (*keeper).Read)
	keeperDrop = ray.Method0(Keeper, "Drop", (*keeper).Drop)
	keeperPid  = ray.Method0(Keeper, "Pid", (*keeper).Pid)

	// passToKeeper hands the box it was given to the actor: the box's ref
	// is borrowed by this task, then by the actor (nested borrowing).
	passToKeeper = ray.Func2("test.PassToKeeper", func(ctx context.Context, h ray.ActorHandle[*keeper], b boxed) (string, error) {
		return ray.Get(ctx, keeperKeep.Remote(ctx, h, ray.Val(b)))
	})

	// squares submits n tasks and returns their refs, which it owns.
	squares = ray.Func1("test.Squares", func(ctx context.Context, n int) ([]ray.ObjectRef[int], error) {
		refs := make([]ray.ObjectRef[int], n)
		for i := range refs {
			refs[i] = square.Remote(ctx, ray.Val(i))
		}
		return refs, nil
	})

	// putBox puts a value and returns a box of its ref, with this
	// worker's PID: the worker owns the object.
	putBox = ray.Func1("test.PutBox", func(ctx context.Context, n int) (pidBox, error) {
		r, err := ray.Put(ctx, bytesOf(n))
		if err != nil {
			return pidBox{}, err
		}
		return pidBox{Pid: os.Getpid(), Box: boxed{Name: "put", Ref: r}}, nil
	})

	// echoBox returns the box it was given: the ref comes back to its owner.
	echoBox = ray.Func1("test.EchoBox", func(_ context.Context, b boxed) (boxed, error) { return b, nil })

	// getBoxed reads the ref inside its argument.
	getBoxed = ray.Func1("test.GetBoxed", func(ctx context.Context, b boxed) (string, error) {
		v, err := ray.Get(ctx, b.Ref)
		if err != nil {
			return "", err
		}
		return shaOf(v), nil
	})
	// getBoxedErr says which error Get of the boxed ref gave.
	getBoxedErr = ray.Func1("test.GetBoxedErr", func(ctx context.Context, b boxed) (string, error) {
		_, err := ray.Get(ctx, b.Ref)
		switch {
		case err == nil:
			return "ok", nil
		case errors.Is(err, ray.ErrObjectNotFound):
			return "not found", nil
		}
		return err.Error(), nil
	})
)

type pidBox struct {
	Pid int
	Box boxed
}

// TestBorrowers: refs travel inside values, and the object lives while any
// process holds a ref to it.
func TestBorrowers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 4})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })
	raylet, token := ray.EmbeddedRaylet()
	// A second node, where the keeper of the first subtest lives: its Get
	// pulls a copy there.
	far, err := ray.AddEmbeddedNode(map[string]float64{"CPU": 2, "borrowers_far": 1})
	if err != nil {
		t.Fatal(err)
	}
	onFar := ray.Resources(map[string]float64{"borrowers_far": 1})

	t.Run("a ref in a struct kept by an actor outlives the driver's", func(t *testing.T) {
		big := bytesOf(ray.InlineLimit + 4096) // stored in the node's arena
		ref, err := ray.Put(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		id := objectID(t, ref.ID())
		h, err := Keeper.Remote(ctx, onFar)
		if err != nil {
			t.Fatal(err)
		}
		// Through a task: the task borrows it, then passes it on.
		if name, err := ray.Get(ctx, passToKeeper.Remote(ctx, ray.Val(h), ray.Val(boxed{Name: "b1", Ref: ref}))); err != nil || name != "b1" {
			t.Fatalf("PassToKeeper = %q, %v", name, err)
		}
		ref.Release()
		// The driver holds no ref; the actor does.
		waitHeld(t, ctx, raylet, token, id, true)
		if sum, err := ray.Get(ctx, keeperRead.Remote(ctx, h)); err != nil || sum != shaOf(big) {
			t.Fatalf("the actor's Get after the driver released: %q, %v", sum, err)
		}
		waitHeld(t, ctx, far, token, id, true) // the copy the actor pulled
		if ok, err := ray.Get(ctx, keeperDrop.Remote(ctx, h)); err != nil || !ok {
			t.Fatalf("Drop: %v, %v", ok, err)
		}
		// Freed on every node.
		waitHeld(t, ctx, raylet, token, id, false)
		waitHeld(t, ctx, far, token, id, false)
	})

	t.Run("a task returns 100 refs it owns", func(t *testing.T) {
		refs, err := ray.Get(ctx, squares.Remote(ctx, ray.Val(100)))
		if err != nil || len(refs) != 100 {
			t.Fatalf("Squares: %d refs, %v", len(refs), err)
		}
		for i, r := range refs {
			if v, err := ray.Get(ctx, r); err != nil || v != i*i {
				t.Fatalf("ref %d: %d, %v; want %d", i, v, err, i*i)
			}
		}
		// A returned ref is an argument like any other.
		if v, err := ray.Get(ctx, add.Remote(ctx, refs[3], refs[4])); err != nil || v != 25 {
			t.Fatalf("Add(refs[3], refs[4]) = %d, %v", v, err)
		}
	})

	t.Run("a ref inside an argument", func(t *testing.T) {
		big := bytesOf(ray.InlineLimit + 100)
		ref, err := ray.Put(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		out := getBoxed.Remote(ctx, ray.Val(boxed{Ref: ref}))
		// Released right after the submission: the task still reads it.
		ref.Release()
		if sum, err := ray.Get(ctx, out); err != nil || sum != shaOf(big) {
			t.Fatalf("GetBoxed = %q, %v", sum, err)
		}
	})

	t.Run("a ref returned to its owner inside a result", func(t *testing.T) {
		big := bytesOf(ray.InlineLimit + 200)
		ref, err := ray.Put(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		id := objectID(t, ref.ID())
		out := echoBox.Remote(ctx, ray.Val(boxed{Name: "echo", Ref: ref}))
		ref.Release()
		// The result holds the ref while it lives, before anyone Gets it.
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[boxed]{out}, 1, 0); err != nil {
			t.Fatal(err)
		}
		waitHeld(t, ctx, raylet, token, id, true)
		b, err := ray.Get(ctx, out)
		if err != nil || b.Name != "echo" {
			t.Fatalf("EchoBox = %+v, %v", b, err)
		}
		if v, err := ray.Get(ctx, b.Ref); err != nil || shaOf(v) != shaOf(big) {
			t.Fatalf("Get of the returned ref: %d bytes, %v", len(v), err)
		}
		out.Release()
		b.Ref.Release()
		waitHeld(t, ctx, raylet, token, id, false)
	})

	t.Run("a ref released before it is sent reads as not found", func(t *testing.T) {
		ref, err := ray.Put(ctx, []byte("gone"))
		if err != nil {
			t.Fatal(err)
		}
		box := boxed{Ref: ref}
		ref.Release()
		// Made after the release: nothing pins it.
		if got, err := ray.Get(ctx, getBoxedErr.Remote(ctx, ray.Val(box))); err != nil || got != "not found" {
			t.Fatalf("Get of a released ref inside a value: %q, %v", got, err)
		}
	})

	t.Run("a malformed ref is a bad argument naming the field", func(t *testing.T) {
		bad := map[string]any{"Name": "x", "Ref": []any{[]byte("short"), "127.0.0.1:1"}}
		_, err := ray.Get(ctx, ray.CallByName[string](ctx, "test.GetBoxed", bad))
		if !errors.Is(err, ray.ErrBadArgument) || !strings.Contains(err.Error(), "object_id") {
			t.Fatalf("malformed ref: %v", err)
		}
	})

	t.Run("the owner died", func(t *testing.T) {
		pb, err := ray.Get(ctx, putBox.Remote(ctx, ray.Val(1000)))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pb.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := ray.Get(ctx, pb.Box.Ref); !errors.Is(err, ray.ErrOwnerDied) {
			t.Fatalf("Get of a ref whose owner was killed: %v; want ErrOwnerDied", err)
		}
	})

	t.Run("a borrower that dies stops holding the object", func(t *testing.T) {
		big := bytesOf(ray.InlineLimit + 8192)
		ref, err := ray.Put(ctx, big)
		if err != nil {
			t.Fatal(err)
		}
		id := objectID(t, ref.ID())
		h, err := Keeper.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ray.Get(ctx, keeperKeep.Remote(ctx, h, ray.Val(boxed{Name: "doomed", Ref: ref}))); err != nil {
			t.Fatal(err)
		}
		pid, err := ray.Get(ctx, keeperPid.Remote(ctx, h))
		if err != nil {
			t.Fatal(err)
		}
		ref.Release()
		waitHeld(t, ctx, raylet, token, id, true)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitHeld(t, ctx, raylet, token, id, false)
	})
}
