package ray_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cpb "github.com/manta-ray/manta/proto/controlpb"
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

	Accum    = ray.Actor1("test.Accum", func(_ context.Context, base int) (*counter, error) { return &counter{n: base}, nil })
	accumAdd = ray.Method1(Accum, "Add", (*counter).Add)

	Mixer      = ray.Actor2("test.Mixer", newMixer)
	mixerLabel = ray.Method0(Mixer, "Label", (*mixer).Label)
	Weigher    = ray.Actor3("test.Weigher", newWeigher)
	weigh3     = ray.Method3(Weigher, "Weigh", (*weigher).Weigh)
	describe4  = ray.Method4(Weigher, "Describe", (*weigher).Describe)

	// gatedValue returns v once it reads a byte from the FIFO at path: its
	// open blocks until the test opens the FIFO (gate.release), so the test
	// decides when the result is ready without any sleep. A byte other
	// than 'g' makes it fail.
	gatedValue = ray.Func2("test.GatedValue", func(_ context.Context, path string, v int) (int, error) {
		f, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		var b [1]byte
		if _, err := io.ReadFull(f, b[:]); err != nil {
			return 0, err
		}
		if b[0] != 'g' {
			return 0, fmt.Errorf("the gate refused %d", v)
		}
		return v, nil
	})

	// incrVia calls the actor whose handle it was given, from a task.
	incrVia = ray.Func1("test.IncrVia", func(ctx context.Context, h ray.ActorHandle[*counter]) (int, error) {
		return ray.Get(ctx, counterIncr.Remote(ctx, h))
	})
)

// mixer is built from two arguments of different types.
type mixer struct {
	name string
	n    int
}

func newMixer(_ context.Context, name string, n int) (*mixer, error) { return &mixer{name, n}, nil }

func (m *mixer) Label(context.Context) (string, error) { return fmt.Sprintf("%s-%d", m.name, m.n), nil }

// weigher is built from three weights; its methods take three and four
// arguments, and their results depend on the order of the arguments.
type weigher struct{ a, b, c int }

func newWeigher(_ context.Context, a, b, c int) (*weigher, error) { return &weigher{a, b, c}, nil }

func (w *weigher) Weigh(_ context.Context, x, y, z int) (int, error) {
	return w.a*x + w.b*y + w.c*z, nil
}

func (w *weigher) Describe(_ context.Context, sep string, n int, neg bool, unit string) (string, error) {
	if neg {
		n = -n
	}
	return strings.Join([]string{fmt.Sprint(w.a), fmt.Sprint(n), unit}, sep), nil
}

// fifoGate is a FIFO that gatedValue tasks wait on.
type fifoGate struct {
	path string
	mu   sync.Mutex
	w    *os.File
}

func newFIFOGate(t *testing.T) *fifoGate {
	t.Helper()
	g := &fifoGate{path: filepath.Join(t.TempDir(), "gate")}
	if err := syscall.Mkfifo(g.path, 0o600); err != nil {
		t.Fatal(err)
	}
	// A task still waiting when the test ends is let go, so its worker
	// does not stay blocked in open.
	t.Cleanup(func() {
		g.release(t, 'x')
		g.mu.Lock()
		defer g.mu.Unlock()
		g.w.Close()
	})
	return g
}

// release lets the waiting task read b. The FIFO is opened read-write,
// which on Linux does not block even with no reader yet, and the end is
// kept open so the byte waits in the pipe for a reader that comes later.
func (g *fifoGate) release(t *testing.T, b byte) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.w == nil {
		f, err := os.OpenFile(g.path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		g.w = f
	}
	if _, err := g.w.Write([]byte{b}); err != nil {
		t.Fatal(err)
	}
}

func actorState(ctx context.Context, t *testing.T, id string) *cpb.ActorInfo {
	t.Helper()
	a, err := ray.ControlPlaneActor(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

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

	t.Run("Remote returns before a reference argument is ready; calls wait and run in order", func(t *testing.T) {
		gate := newFIFOGate(t)
		// The caller keeps no ref to the argument: the actor's pin holds it.
		h, err := Accum.Remote(ctx, gatedValue.Remote(ctx, ray.Val(gate.path), ray.Val(100)))
		if err != nil {
			t.Fatal(err)
		}
		// The argument cannot be ready (the gate is shut), so Remote did
		// not wait for it, and the actor waits unplaced.
		if a := actorState(ctx, t, h.ID()); a.State != cpb.ActorState_DEPENDENCIES_UNREADY || a.NodeId != "" {
			t.Fatalf("before its argument is ready the actor is %s on node %q; want DEPENDENCIES_UNREADY, unplaced", a.State, a.NodeId)
		}
		refs := []ray.ObjectRef[int]{
			accumAdd.Remote(ctx, h, ray.Val(1)),
			accumAdd.Remote(ctx, h, ray.Val(2)),
			accumAdd.Remote(ctx, h, ray.Val(3)),
		}
		runtime.GC() // the dropped argument ref may be collected: it must stay pinned
		if a := actorState(ctx, t, h.ID()); a.State != cpb.ActorState_DEPENDENCIES_UNREADY {
			t.Fatalf("with calls queued and the argument not ready the actor is %s; want DEPENDENCIES_UNREADY", a.State)
		}
		gate.release(t, 'g')
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{101, 103, 106}; fmt.Sprint(vs) != fmt.Sprint(want) {
			t.Fatalf("calls made before the argument was ready returned %v; want %v (constructed with 100, in order)", vs, want)
		}
		if a := actorState(ctx, t, h.ID()); a.State != cpb.ActorState_ALIVE {
			t.Fatalf("after its calls ran the actor is %s; want ALIVE", a.State)
		}
	})

	t.Run("a failed constructor argument kills the actor and fails its calls", func(t *testing.T) {
		gate := newFIFOGate(t)
		arg := gatedValue.Remote(ctx, ray.Val(gate.path), ray.Val(7))
		h, err := Accum.Remote(ctx, arg, ray.Name("doomed"))
		if err != nil {
			t.Fatal(err)
		}
		// The name is taken at once, while the argument is unresolved.
		if _, err := Accum.Remote(ctx, ray.Val(1), ray.Name("doomed")); err == nil {
			t.Fatal("a second actor took the name of a DEPENDENCIES_UNREADY actor")
		}
		early := accumAdd.Remote(ctx, h, ray.Val(1))
		gate.release(t, 'x')
		if _, err := ray.Get(ctx, arg); err == nil {
			t.Fatal("the gated argument succeeded; want it to fail")
		}
		for i, ref := range []ray.ObjectRef[int]{early, accumAdd.Remote(ctx, h, ray.Val(2))} {
			_, err := ray.Get(ctx, ref)
			if !errors.Is(err, ray.ErrActorDied) || !strings.Contains(err.Error(), "a constructor argument failed") ||
				!strings.Contains(err.Error(), "the gate refused 7") {
				t.Fatalf("call %d: %v; want ErrActorDied naming the failed argument", i, err)
			}
		}
		if a := actorState(ctx, t, h.ID()); a.State != cpb.ActorState_DEAD || !strings.Contains(a.DeathCause, "the gate refused 7") {
			t.Fatalf("the actor is %s (%q); want DEAD by its argument", a.State, a.DeathCause)
		}
	})

	t.Run("Actor2 constructs from two arguments", func(t *testing.T) {
		h, err := Mixer.Remote(ctx, ray.Val("m"), ray.Val(42))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ray.Get(ctx, mixerLabel.Remote(ctx, h)); err != nil || v != "m-42" {
			t.Fatalf("Label = %q, %v; want m-42", v, err)
		}
	})

	t.Run("Actor3 with a reference argument, Method3 and Method4", func(t *testing.T) {
		// The third weight is a ref: the actor resolves it in the background.
		h, err := Weigher.Remote(ctx, ray.Val(1), ray.Val(10), square.Remote(ctx, ray.Val(10)))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ray.Get(ctx, weigh3.Remote(ctx, h, ray.Val(3), ray.Val(2), ray.Val(1))); err != nil || v != 1*3+10*2+100*1 {
			t.Fatalf("Weigh(3, 2, 1) = %d, %v; want 123", v, err)
		}
		// One argument as a ref, of another type than the rest.
		if v, err := ray.Get(ctx, describe4.Remote(ctx, h, ray.Val("/"), square.Remote(ctx, ray.Val(5)), ray.Val(true), ray.Val("kg"))); err != nil || v != "1/-25/kg" {
			t.Fatalf("Describe = %q, %v; want 1/-25/kg", v, err)
		}
	})
}
