package ray_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

var (
	square = ray.Func1("test.Square", func(_ context.Context, x int) (int, error) { return x * x, nil })
	add    = ray.Func2("test.Add", func(_ context.Context, a, b int) (int, error) { return a + b, nil })
	fails  = ray.Func1("test.Fails", func(_ context.Context, msg string) (int, error) { return 0, errors.New(msg) })
	panics = ray.Func0("test.Panics", func(context.Context) (int, error) { panic("boom") })
	split  = ray.Func1x2("test.Split", func(_ context.Context, s string) (string, string, error) {
		a, b, _ := strings.Cut(s, ",")
		return a, b, nil
	})
	echoBytes    = ray.Func1("test.Bytes", func(_ context.Context, b []byte) ([]byte, error) { return b, nil })
	sumOfSquares = ray.Func1("test.SumOfSquares", func(ctx context.Context, n int) (int, error) {
		var refs []ray.ObjectRef[int]
		for i := range n {
			refs = append(refs, square.Remote(ctx, ray.Val(i), ray.NumCPUs(1)))
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			return 0, err
		}
		s := 0
		for _, v := range vs {
			s += v
		}
		return s, nil
	})
	sleepy = ray.Func1("test.Sleep", func(ctx context.Context, ms int) (int, error) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ms, nil
	})
)

func TestEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 1})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	t.Run("value and ref arguments", func(t *testing.T) {
		a := square.Remote(ctx, ray.Val(3))
		b := add.Remote(ctx, a, ray.Val(1))
		if v, err := ray.Get(ctx, b); err != nil || v != 10 {
			t.Fatalf("Add(Square(3), 1) = %d, %v; want 10", v, err)
		}
		p, err := ray.Put(ctx, 5)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ray.Get(ctx, square.Remote(ctx, p)); err != nil || v != 25 {
			t.Fatalf("Square(Put(5)) = %d, %v", v, err)
		}
	})
	t.Run("errors come back typed", func(t *testing.T) {
		_, err := ray.Get(ctx, fails.Remote(ctx, ray.Val("no luck")))
		var te *ray.TaskError
		if !errors.As(err, &te) || te.Function != "test.Fails" || !strings.Contains(te.Message, "no luck") {
			t.Fatalf("error %v (%T); want a TaskError of test.Fails", err, err)
		}
		_, err = ray.Get(ctx, panics.Remote(ctx))
		if !errors.Is(err, ray.ErrTaskPanicked) || !errors.As(err, &te) || !strings.Contains(te.Stack, "goroutine") {
			t.Fatalf("panic came back as %v", err)
		}
		// An argument that depends on a failed task fails the same way.
		_, err = ray.Get(ctx, square.Remote(ctx, fails.Remote(ctx, ray.Val("upstream"))))
		if !errors.As(err, &te) || te.Function != "test.Fails" {
			t.Fatalf("dependent task: %v", err)
		}
		_, err = ray.Get(ctx, square.Remote(ctx, ray.Val(2), ray.NumCPUs(-1)))
		if !errors.Is(err, ray.ErrInvalidOption) {
			t.Fatalf("negative CPUs: %v", err)
		}
		_, err = ray.Get(ctx, ray.CallByName[int](ctx, "test.NoSuchFunction", 1))
		if !errors.Is(err, ray.ErrFunctionNotFound) || !strings.Contains(err.Error(), "test.NoSuchFunction") {
			t.Fatalf("unregistered function: %v", err)
		}
		_, err = ray.Get(ctx, ray.CallByName[int](ctx, "test.Square", "not a number"))
		if !errors.Is(err, ray.ErrBadArgument) {
			t.Fatalf("wrong argument type: %v", err)
		}
		_, err = ray.Get(ctx, ray.CallByName[int](ctx, "test.Square", 1, 2))
		if !errors.Is(err, ray.ErrBadArgument) {
			t.Fatalf("wrong arity: %v", err)
		}
		// A result read as the wrong type is an error, not a panic.
		_, err = ray.Get(ctx, ray.CallByName[string](ctx, "test.Square", 3))
		if !errors.Is(err, ray.ErrBadArgument) {
			t.Fatalf("result of the wrong type: %v", err)
		}
	})
	t.Run("num_returns 2 and raw bytes", func(t *testing.T) {
		a, b := split.Remote(ctx, ray.Val("left,right"))
		va, err1 := ray.Get(ctx, a)
		vb, err2 := ray.Get(ctx, b)
		if va != "left" || vb != "right" || err1 != nil || err2 != nil {
			t.Fatalf("split: %q %q %v %v", va, vb, err1, err2)
		}
		big := make([]byte, 300<<10)
		for i := range big {
			big[i] = byte(i)
		}
		got, err := ray.Get(ctx, echoBytes.Remote(ctx, ray.Val(big)))
		if err != nil || len(got) != len(big) || got[12345] != big[12345] {
			t.Fatalf("bytes round trip: %d bytes, %v", len(got), err)
		}
	})
	t.Run("nested tasks on one CPU", func(t *testing.T) {
		if v, err := ray.Get(ctx, sumOfSquares.Remote(ctx, ray.Val(5))); err != nil || v != 30 {
			t.Fatalf("SumOfSquares(5) = %d, %v", v, err)
		}
	})
	t.Run("wait", func(t *testing.T) {
		refs := []ray.ObjectRef[int]{sleepy.Remote(ctx, ray.Val(1)), sleepy.Remote(ctx, ray.Val(2000))}
		ready, pending, err := ray.Wait(ctx, refs, 1, 0)
		if err != nil || len(ready) != 1 || len(pending) != 1 || ready[0].ID() != refs[0].ID() {
			t.Fatalf("wait: %d ready, %d pending, %v", len(ready), len(pending), err)
		}
	})
	t.Run("many tasks", func(t *testing.T) {
		var refs []ray.ObjectRef[int]
		for i := range 1000 {
			refs = append(refs, square.Remote(ctx, ray.Val(i)))
		}
		vs, err := ray.GetAll(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vs {
			if v != i*i {
				t.Fatalf("square(%d) = %d", i, v)
			}
		}
	})
	t.Run("a worker that always dies", func(t *testing.T) {
		_, err := ray.Get(ctx, suicide.Remote(ctx, ray.MaxRetries(1)))
		var te *ray.TaskError
		if !errors.Is(err, ray.ErrWorkerCrashed) || !errors.As(err, &te) || te.Function != "test.Suicide" {
			t.Fatalf("error %v; want ErrWorkerCrashed from test.Suicide", err)
		}
		// The node goes on serving.
		if v, err := ray.Get(ctx, square.Remote(ctx, ray.Val(7))); err != nil || v != 49 {
			t.Fatalf("after the crashes: %d, %v", v, err)
		}
	})
	t.Run("retry exceptions", func(t *testing.T) {
		dir := t.TempDir()
		v, err := ray.Get(ctx, flaky.Remote(ctx, ray.Val(dir), ray.RetryExceptions(true), ray.MaxRetries(2)))
		if err != nil || v != 3 {
			t.Fatalf("flaky with retries: %d, %v; want success on attempt 3", v, err)
		}
		_, err = ray.Get(ctx, flaky.Remote(ctx, ray.Val(t.TempDir())))
		var te *ray.TaskError
		if !errors.As(err, &te) {
			t.Fatalf("flaky without RetryExceptions: %v; want its first error", err)
		}
	})
	_ = fmt.Sprint
}

// suicide kills its own worker process.
var suicide = ray.Func0("test.Suicide", func(context.Context) (int, error) {
	os.Exit(3)
	return 0, nil
})

// flaky fails until its third attempt, counting attempts in files of dir.
var flaky = ray.Func1("test.Flaky", func(_ context.Context, dir string) (int, error) {
	entries, _ := os.ReadDir(dir)
	n := len(entries) + 1
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(n)), nil, 0o600); err != nil {
		return 0, err
	}
	if n < 3 {
		return 0, fmt.Errorf("attempt %d fails", n)
	}
	return n, nil
})
