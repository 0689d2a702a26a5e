package ray_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

var (
	// markAndWait writes dir/name when it starts, then waits for its
	// context (writing dir/name.cancelled when it ends) or for a minute.
	markAndWait = ray.Func2("test.MarkAndWait", func(ctx context.Context, dir, name string) (int, error) {
		if err := writeMark(dir, name, strconv.Itoa(os.Getpid())); err != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			_ = writeMark(dir, name+".cancelled", "")
			return 0, ctx.Err()
		case <-time.After(time.Minute):
			return 1, nil
		}
	})
	// ignoreCancel writes its PID and sleeps a minute whatever happens.
	ignoreCancel = ray.Func1("test.IgnoreCancel", func(_ context.Context, dir string) (int, error) {
		if err := writeMark(dir, "stubborn", strconv.Itoa(os.Getpid())); err != nil {
			return 0, err
		}
		time.Sleep(time.Minute)
		return 1, nil
	})
	// parentOf submits markAndWait(dir, "child") and waits for it.
	parentOf = ray.Func1("test.ParentOf", func(ctx context.Context, dir string) (int, error) {
		return ray.Get(ctx, markAndWait.Remote(ctx, ray.Val(dir), ray.Val("child")))
	})
)

func writeMark(dir, name, content string) error {
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f+".tmp", []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(f+".tmp", f)
}

func waitMark(t *testing.T, dir, name string) string {
	t.Helper()
	var b []byte
	waitFor(t, 30*time.Second, func() error {
		var err error
		b, err = os.ReadFile(filepath.Join(dir, name))
		return err
	})
	return string(b)
}

type blocker struct{ n int }

var (
	blockerClass = ray.Actor0("test.Blocker", func(context.Context) (*blocker, error) { return &blocker{}, nil })
	blockerWait  = ray.Method1(blockerClass, "Wait", func(b *blocker, ctx context.Context, dir string) (int, error) {
		b.n++
		if err := writeMark(dir, "actor-running", ""); err != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Minute):
			return b.n, nil
		}
	})
	blockerIncr = ray.Method0(blockerClass, "Incr", func(b *blocker, _ context.Context) (int, error) {
		b.n++
		return b.n, nil
	})
)

func wantCancelled(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ray.ErrTaskCancelled) {
		t.Fatalf("got %v; want ErrTaskCancelled", err)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One CPU: a second task waits in the queue behind a running one.
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 1})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	t.Run("queued and running", func(t *testing.T) {
		dir := t.TempDir()
		running := markAndWait.Remote(ctx, ray.Val(dir), ray.Val("first"))
		waitMark(t, dir, "first")
		queued := markAndWait.Remote(ctx, ray.Val(dir), ray.Val("second"))
		if err := ray.Cancel(ctx, queued); err != nil {
			t.Fatal(err)
		}
		_, err := ray.Get(ctx, queued)
		wantCancelled(t, err)
		if err := ray.Cancel(ctx, running); err != nil {
			t.Fatal(err)
		}
		_, err = ray.Get(ctx, running)
		wantCancelled(t, err)
		waitMark(t, dir, "first.cancelled") // the task saw ctx.Done()
		// The queued one never ran, even once the CPU was free.
		if v, err := ray.Get(ctx, trivial.Remote(ctx, ray.Val(1))); err != nil || v != 2 {
			t.Fatalf("a task after the cancels: %d, %v", v, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "second")); err == nil {
			t.Fatal("the cancelled queued task ran")
		}
	})

	t.Run("force kills the worker and frees its CPU", func(t *testing.T) {
		dir := t.TempDir()
		ref := ignoreCancel.Remote(ctx, ray.Val(dir))
		pid, _ := strconv.Atoi(waitMark(t, dir, "stubborn"))
		if err := ray.Cancel(ctx, ref, ray.Force()); err != nil {
			t.Fatal(err)
		}
		_, err := ray.Get(ctx, ref)
		wantCancelled(t, err)
		waitFor(t, 30*time.Second, func() error {
			if err := syscall.Kill(pid, 0); err == nil {
				return errors.New("the worker still runs")
			}
			return nil
		})
		// The node's one CPU came back: another task runs.
		if v, err := ray.Get(ctx, trivial.Remote(ctx, ray.Val(41))); err != nil || v != 42 {
			t.Fatalf("a task after the forced cancel: %d, %v", v, err)
		}
	})

	t.Run("recursive", func(t *testing.T) {
		dir := t.TempDir()
		ref := parentOf.Remote(ctx, ray.Val(dir))
		waitMark(t, dir, "child")
		if err := ray.Cancel(ctx, ref); err != nil {
			t.Fatal(err)
		}
		_, err := ray.Get(ctx, ref)
		wantCancelled(t, err)
		waitMark(t, dir, "child.cancelled") // the child's context ended too
	})

	t.Run("through the owner's RPC", func(t *testing.T) {
		// What a process holding a ref it does not own does.
		dir := t.TempDir()
		ref := markAndWait.Remote(ctx, ray.Val(dir), ray.Val("remote"))
		waitMark(t, dir, "remote")
		if err := ray.CancelThroughOwner(ctx, ref); err != nil {
			t.Fatal(err)
		}
		_, err := ray.Get(ctx, ref)
		wantCancelled(t, err)
		put, err := ray.Put(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := ray.CancelThroughOwner(ctx, put); !errors.Is(err, ray.ErrInvalidOption) {
			t.Fatalf("remote cancel of a Put: %v; want ErrInvalidOption", err)
		}
		put.Release()
		if err := ray.CancelThroughOwner(ctx, put); !errors.Is(err, ray.ErrObjectNotFound) {
			t.Fatalf("remote cancel of a released object: %v; want ErrObjectNotFound", err)
		}
	})

	t.Run("finished and bad refs", func(t *testing.T) {
		ref := trivial.Remote(ctx, ray.Val(1))
		if v, err := ray.Get(ctx, ref); err != nil || v != 2 {
			t.Fatalf("trivial: %d, %v", v, err)
		}
		if err := ray.Cancel(ctx, ref); err != nil {
			t.Fatalf("cancel of a finished task: %v", err)
		}
		if v, err := ray.Get(ctx, ref); err != nil || v != 2 {
			t.Fatalf("after cancelling a finished task: %d, %v", v, err)
		}
		put, err := ray.Put(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		if err := ray.Cancel(ctx, put); !errors.Is(err, ray.ErrInvalidOption) {
			t.Fatalf("cancel of a Put: %v; want ErrInvalidOption", err)
		}
		put.Release()
		if err := ray.Cancel(ctx, put); !errors.Is(err, ray.ErrObjectNotFound) {
			t.Fatalf("cancel of a released ref: %v; want ErrObjectNotFound", err)
		}
	})

	t.Run("actor calls", func(t *testing.T) {
		dir := t.TempDir()
		h, err := blockerClass.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		running := blockerWait.Remote(ctx, h, ray.Val(dir))
		waitMark(t, dir, "actor-running")
		queued := blockerIncr.Remote(ctx, h)
		if err := ray.Cancel(ctx, queued, ray.Force()); !errors.Is(err, ray.ErrInvalidOption) {
			t.Fatalf("Force on an actor call: %v; want ErrInvalidOption", err)
		}
		if err := ray.Cancel(ctx, queued); err != nil {
			t.Fatal(err)
		}
		if err := ray.Cancel(ctx, running); err != nil {
			t.Fatal(err)
		}
		_, err = ray.Get(ctx, running)
		wantCancelled(t, err)
		_, err = ray.Get(ctx, queued)
		wantCancelled(t, err)
		// The actor lives on with its state: Wait counted once, the
		// cancelled Incr never ran.
		if v, err := ray.Get(ctx, blockerIncr.Remote(ctx, h)); err != nil || v != 2 {
			t.Fatalf("the next call: %d, %v; want 2", v, err)
		}
	})
}
