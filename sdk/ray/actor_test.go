package ray_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

type counter struct {
	mu sync.Mutex
	n  int
}

func newCounter(context.Context) (*counter, error) { return &counter{}, nil }

func (c *counter) Incr(context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n, nil
}

func (c *counter) Add(_ context.Context, d int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += d
	return c.n, nil
}

func (c *counter) Pid(context.Context) (int, error) { return os.Getpid(), nil }

var (
	Counter     = ray.Actor0("test.Counter", newCounter)
	counterIncr = ray.Method0(Counter, "Incr", (*counter).Incr)
	counterAdd  = ray.Method1(Counter, "Add", (*counter).Add)
	counterPid  = ray.Method0(Counter, "Pid", (*counter).Pid)

	Gate      = ray.Actor0("test.Gate", func(context.Context) (*gate, error) { return &gate{ch: make(chan struct{})}, nil })
	gateEnter = ray.Method1(Gate, "Enter", (*gate).Enter)

	// incrVia calls the actor whose handle it was given, from a task.
	incrVia = ray.Func1("test.IncrVia", func(ctx context.Context, h ray.ActorHandle[*counter]) (int, error) {
		return ray.Get(ctx, counterIncr.Remote(ctx, h))
	})
)

// gate lets Enter return once n calls are inside it at the same time.
type gate struct {
	mu sync.Mutex
	in int
	ch chan struct{}
}

func (g *gate) Enter(ctx context.Context, n int) (int, error) {
	g.mu.Lock()
	g.in++
	if g.in == n {
		close(g.ch)
	}
	g.mu.Unlock()
	select {
	case <-g.ch:
		return n, nil
	case <-time.After(20 * time.Second):
		return 0, errors.New("the calls did not run concurrently")
	}
}

func TestActorsEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	t.Run("1000 calls from one caller run in order", func(t *testing.T) {
		h, err := Counter.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		refs := make([]ray.ObjectRef[int], 1000)
		for i := range refs {
			refs[i] = counterIncr.Remote(ctx, h)
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vs {
			if v != i+1 {
				t.Fatalf("call %d returned %d; want %d", i+1, v, i+1)
			}
		}
	})

	t.Run("two actors called concurrently both progress", func(t *testing.T) {
		a, err := Counter.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Counter.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		res := make([]int, 2)
		errs := make([]error, 2)
		for i, h := range []ray.ActorHandle[*counter]{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var last ray.ObjectRef[int]
				for range 200 {
					last = counterAdd.Remote(ctx, h, ray.Val(2))
				}
				res[i], errs[i] = ray.Get(ctx, last)
			}()
		}
		wg.Wait()
		for i := range res {
			if errs[i] != nil || res[i] != 400 {
				t.Fatalf("actor %d: %d, %v; want 400", i, res[i], errs[i])
			}
		}
		pa, _ := ray.Get(ctx, counterPid.Remote(ctx, a))
		pb, _ := ray.Get(ctx, counterPid.Remote(ctx, b))
		if pa == pb || pa == 0 {
			t.Fatalf("two actors share worker pid %d", pa)
		}
	})

	t.Run("a handle passed to 10 tasks reaches the one actor", func(t *testing.T) {
		h, err := Counter.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var refs []ray.ObjectRef[int]
		for range 10 {
			refs = append(refs, incrVia.Remote(ctx, ray.Val(h), ray.NumCPUs(0)))
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for _, v := range vs {
			seen[v] = true
		}
		if len(seen) != 10 {
			t.Fatalf("the tasks saw %v; want 1..10 each once", vs)
		}
		if v, err := ray.Get(ctx, counterIncr.Remote(ctx, h)); err != nil || v != 11 {
			t.Fatalf("after 10 task calls the counter is %d, %v; want 11", v, err)
		}
	})

	t.Run("MaxConcurrency runs calls at once", func(t *testing.T) {
		h, err := Gate.Remote(ctx, ray.MaxConcurrency(4))
		if err != nil {
			t.Fatal(err)
		}
		var refs []ray.ObjectRef[int]
		for range 4 {
			refs = append(refs, gateEnter.Remote(ctx, h, ray.Val(4)))
		}
		if _, err := ray.GetAll(ctx, refs); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("names, GetActor and Kill", func(t *testing.T) {
		h, err := Counter.Remote(ctx, ray.Name("c1"), ray.Namespace("ns"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Counter.Remote(ctx, ray.Name("c1"), ray.Namespace("ns")); err == nil {
			t.Fatal("a second actor took a taken name")
		}
		if _, err := Counter.Remote(ctx, ray.Name("c1"), ray.Namespace("other")); err != nil {
			t.Fatalf("the name in another namespace: %v", err)
		}
		if _, err := ray.GetActor[*counter](ctx, "nope", ray.Namespace("ns")); !errors.Is(err, ray.ErrActorNotFound) {
			t.Fatalf("GetActor of an unknown name: %v; want ErrActorNotFound", err)
		}
		g, err := ray.GetActor[*counter](ctx, "c1", ray.Namespace("ns"))
		if err != nil || g.ID() != h.ID() {
			t.Fatalf("GetActor = %v, %v; want %s", g.ID(), err, h.ID())
		}
		if v, err := ray.Get(ctx, counterIncr.Remote(ctx, g)); err != nil || v != 1 {
			t.Fatalf("call through GetActor's handle: %d, %v", v, err)
		}
		if err := ray.Kill(ctx, h, true); err != nil {
			t.Fatal(err)
		}
		_, err = ray.Get(ctx, counterIncr.Remote(ctx, h))
		if !errors.Is(err, ray.ErrActorDied) {
			t.Fatalf("call after Kill: %v; want ErrActorDied", err)
		}
		// The name is free again once its actor is dead.
		if _, err := Counter.Remote(ctx, ray.Name("c1"), ray.Namespace("ns")); err != nil {
			t.Fatalf("reuse a dead actor's name: %v", err)
		}
	})
}
