package ray_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// awaitFile waits (up to a minute) until path exists or ctx ends: how a
// test's producer is held until the test releases it.
func awaitFile(ctx context.Context, path string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never appeared", path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var (
	// genHeld yields 0..n-1, but waits for dir/release after item 2.
	genHeld = ray.Gen2("test.GenHeld", func(ctx context.Context, dir string, n int, yield func(int) error) error {
		for i := range n {
			if err := yield(i); err != nil {
				return err
			}
			if i == 2 {
				if err := awaitFile(ctx, filepath.Join(dir, "release")); err != nil {
					return err
				}
			}
		}
		return writeMark(dir, "finished", "")
	})
	// genBig yields two items over the inline limit, then waits for
	// dir/release.
	genBig = ray.Gen1("test.GenBig", func(ctx context.Context, dir string, yield func([]byte) error) error {
		for i := range 2 {
			b := make([]byte, ray.InlineLimit+1000)
			b[0] = byte(i + 1)
			if err := yield(b); err != nil {
				return err
			}
		}
		return awaitFile(ctx, filepath.Join(dir, "release"))
	})
	// genItems yields n items of size bytes (itemBytes).
	genItems = ray.Gen2("test.GenItems", func(ctx context.Context, n, size int, yield func([]byte) error) error {
		for i := range n {
			if err := yield(itemBytes(i, size)); err != nil {
				return err
			}
		}
		return nil
	})
	firstByte = ray.Func1("test.FirstByte", func(_ context.Context, b []byte) (int, error) { return len(b)*10 + int(b[0]), nil })
	// genCounted yields 0..n-1 and writes the number of yields that
	// returned to dir/yielded after each.
	genCounted = ray.Gen2("test.GenCounted", func(ctx context.Context, dir string, n int, yield func(int) error) error {
		for i := range n {
			if err := yield(i); err != nil {
				return err
			}
			if err := writeMark(dir, "yielded", strconv.Itoa(i+1)); err != nil {
				return err
			}
		}
		return nil
	})
	// genFail yields 0, 1, 2 and fails.
	genFail = ray.Gen0("test.GenFail", func(ctx context.Context, yield func(int) error) error {
		for i := range 3 {
			if err := yield(i); err != nil {
				return err
			}
		}
		return errors.New("boom after 3")
	})
	// genCrashy yields 0..9; after item 4 it writes its PID to dir/pid
	// and waits for dir/go (the test kills it meanwhile).
	genCrashy = ray.Gen1("test.GenCrashy", func(ctx context.Context, dir string, yield func(int) error) error {
		for i := range 10 {
			if err := yield(i); err != nil {
				return err
			}
			if i == 4 {
				if err := writeMark(dir, "pid", strconv.Itoa(os.Getpid())); err != nil {
					return err
				}
				if err := awaitFile(ctx, filepath.Join(dir, "go")); err != nil {
					return err
				}
			}
		}
		return nil
	})
	// genEndless yields until yield fails, then writes the error to
	// dir/stopped.
	genEndless = ray.Gen1("test.GenEndless", func(ctx context.Context, dir string, yield func(int) error) error {
		for i := 0; ; i++ {
			if err := yield(i); err != nil {
				_ = writeMark(dir, "stopped", err.Error())
				return err
			}
		}
	})

	counterClass = ray.Actor0("test.GenCounter", func(context.Context) (*genCounter, error) { return &genCounter{}, nil })
	// counterRun yields n successive values of the actor's counter.
	counterRun = ray.ActorGen1(counterClass, "Run", func(c *genCounter, _ context.Context, n int, yield func(int) error) error {
		for range n {
			c.n++
			if err := yield(c.n); err != nil {
				return err
			}
		}
		return nil
	})
)

type genCounter struct{ n int }

// drain takes the rest of a generator's items and their values.
func drain(ctx context.Context, t *testing.T, g *ray.ObjectRefGenerator[int]) ([]int, error) {
	t.Helper()
	var got []int
	for ref, err := range g.All(ctx) {
		if err != nil {
			return got, err
		}
		v, err := ray.Get(ctx, ref)
		if err != nil {
			t.Fatalf("item %d: %v", len(got), err)
		}
		got = append(got, v)
	}
	return got, nil
}

func next(ctx context.Context, t *testing.T, g *ray.ObjectRefGenerator[int]) int {
	t.Helper()
	ref, err := g.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := ray.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// itemBytes is item i of genItems.
func itemBytes(i, size int) []byte {
	b := bytesOf(size)
	b[0] = byte(i + 1)
	return b
}

func TestGenerator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	t.Run("items arrive while the producer runs", func(t *testing.T) {
		dir := t.TempDir()
		g := genHeld.Remote(ctx, ray.Val(dir), ray.Val(5))
		for i := range 3 {
			if v := next(ctx, t, g); v != i {
				t.Fatalf("item %d is %d", i, v)
			}
		}
		// The producer waits for release: it has not finished.
		if _, err := os.Stat(filepath.Join(dir, "finished")); err == nil {
			t.Fatal("the producer finished before it was released")
		}
		if err := writeMark(dir, "release", ""); err != nil {
			t.Fatal(err)
		}
		got, err := drain(ctx, t, g)
		if err != nil || !slices.Equal(got, []int{3, 4}) {
			t.Fatalf("the rest: %v, %v", got, err)
		}
		if n, err := ray.Get(ctx, g.Ref()); err != nil || n != 5 {
			t.Fatalf("the count: %d, %v", n, err)
		}
		if _, err := g.Next(ctx); !errors.Is(err, ray.ErrGeneratorDone) {
			t.Fatalf("Next after the end: %v", err)
		}
	})

	t.Run("large items pass to a task before the end", func(t *testing.T) {
		dir := t.TempDir()
		g := genBig.Remote(ctx, ray.Val(dir))
		var refs []ray.ObjectRef[[]byte]
		for i := range 2 {
			ref, err := g.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			refs = append(refs, ref)
			// The producer still waits for release.
			want := (ray.InlineLimit+1000)*10 + i + 1
			if v, err := ray.Get(ctx, firstByte.Remote(ctx, ref)); err != nil || v != want {
				t.Fatalf("item %d through a task: %d, %v; want %d", i, v, err, want)
			}
		}
		if err := writeMark(dir, "release", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Next(ctx); !errors.Is(err, ray.ErrGeneratorDone) {
			t.Fatalf("end: %v", err)
		}
		if b, err := ray.Get(ctx, refs[1]); err != nil || len(b) != ray.InlineLimit+1000 || b[0] != 2 {
			t.Fatalf("item 1 after the end: %d bytes, %v", len(b), err)
		}
	})

	t.Run("backpressure holds the producer", func(t *testing.T) {
		dir := t.TempDir()
		g := genCounted.Remote(ctx, ray.Val(dir), ray.Val(6), ray.GeneratorBackpressure(2))
		// Items 0 and 1 are registered; the report of item 2 is held.
		waitFor(t, 30*time.Second, func() error {
			if r, _, h := ray.GeneratorStats(g); r != 2 || h != 1 {
				return fmt.Errorf("reported %d, held %d", r, h)
			}
			return nil
		})
		if y := waitMark(t, dir, "yielded"); y != "2" {
			t.Fatalf("the producer got past %s yields while held at 2", y)
		}
		if v := next(ctx, t, g); v != 0 {
			t.Fatalf("item 0 is %d", v)
		}
		// Taking one lets exactly one more through.
		waitFor(t, 30*time.Second, func() error {
			if r, _, h := ray.GeneratorStats(g); r != 3 || h != 1 {
				return fmt.Errorf("reported %d, held %d", r, h)
			}
			return nil
		})
		got, err := drain(ctx, t, g)
		if err != nil || !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
			t.Fatalf("the rest: %v, %v", got, err)
		}
	})

	t.Run("a failing generator yields its items, then the error", func(t *testing.T) {
		g := genFail.Remote(ctx)
		got, err := drain(ctx, t, g)
		if !slices.Equal(got, []int{0, 1, 2}) {
			t.Fatalf("items %v", got)
		}
		var te *ray.TaskError
		if !errors.As(err, &te) || !strings.Contains(err.Error(), "boom after 3") {
			t.Fatalf("error %v; want the task's", err)
		}
		if _, err2 := g.Next(ctx); err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("Next after the error: %v", err2)
		}
	})

	t.Run("a worker killed mid-stream: each item once", func(t *testing.T) {
		dir := t.TempDir()
		g := genCrashy.Remote(ctx, ray.Val(dir), ray.MaxRetries(2))
		var got []int
		for range 5 {
			got = append(got, next(ctx, t, g))
		}
		pid, err := strconv.Atoi(waitMark(t, dir, "pid"))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, func() error {
			if syscall.Kill(pid, 0) == nil {
				return errors.New("the worker still runs")
			}
			return nil
		})
		// The retry yields 0..9 again; only 5..9 are new.
		if err := writeMark(dir, "go", ""); err != nil {
			t.Fatal(err)
		}
		rest, err := drain(ctx, t, g)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rest...)
		if !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
			t.Fatalf("items %v; want 0..9 once each", got)
		}
	})

	t.Run("cancel stops the producer", func(t *testing.T) {
		dir := t.TempDir()
		g := genEndless.Remote(ctx, ray.Val(dir), ray.GeneratorBackpressure(1))
		for i := range 2 {
			if v := next(ctx, t, g); v != i {
				t.Fatalf("item %d is %d", i, v)
			}
		}
		if err := ray.Cancel(ctx, g.Ref()); err != nil {
			t.Fatal(err)
		}
		_, err := drain(ctx, t, g)
		wantCancelled(t, err)
		if msg := waitMark(t, dir, "stopped"); !strings.Contains(msg, "context canceled") {
			t.Fatalf("the producer's yield failed with %q", msg)
		}
	})

	t.Run("actor method generator", func(t *testing.T) {
		h, err := counterClass.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := drain(ctx, t, counterRun.Remote(ctx, h, ray.Val(3)))
		if err != nil || !slices.Equal(got, []int{1, 2, 3}) {
			t.Fatalf("first run: %v, %v", got, err)
		}
		got, err = drain(ctx, t, counterRun.Remote(ctx, h, ray.Val(2)))
		if err != nil || !slices.Equal(got, []int{4, 5}) {
			t.Fatalf("second run (state kept): %v, %v", got, err)
		}
	})

	t.Run("bad options", func(t *testing.T) {
		if _, err := ray.Get(ctx, trivial.Remote(ctx, ray.Val(1), ray.GeneratorBackpressure(2))); !errors.Is(err, ray.ErrInvalidOption) {
			t.Fatalf("backpressure on a plain function: %v; want ErrInvalidOption", err)
		}
		g := genFail.Remote(ctx, ray.GeneratorBackpressure(-1))
		if _, err := g.Next(ctx); !errors.Is(err, ray.ErrInvalidOption) {
			t.Fatalf("negative backpressure: %v; want ErrInvalidOption", err)
		}
		for _, err := range g.All(ctx) {
			if !errors.Is(err, ray.ErrInvalidOption) {
				t.Fatalf("All of a failed call: %v", err)
			}
		}
	})
}
