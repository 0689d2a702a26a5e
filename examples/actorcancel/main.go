// Command actorcancel mirrors the seed's actor ray.cancel() example: an
// actor's long_task is cancelled while it runs; the actor lives on, keeps
// its state and serves the next call.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

type worker struct{ calls int }

var Worker = ray.Actor0("examples.Worker", func(context.Context) (*worker, error) { return &worker{}, nil })

var longTask = ray.Method0(Worker, "long_task", func(w *worker, ctx context.Context) (string, error) {
	w.calls++
	select {
	case <-time.After(10 * time.Second):
		return "done", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
})

var count = ray.Method0(Worker, "count", func(w *worker, _ context.Context) (int, error) {
	w.calls++
	return w.calls, nil
})

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		actor, err := Worker.Remote(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		ref := longTask.Remote(ctx, actor)
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[string]{ref}, 1, 300*time.Millisecond); err != nil {
			return err
		}
		if err := ray.Cancel(ctx, ref); err != nil {
			return err
		}
		_, err = ray.Get(ctx, ref)
		fmt.Println("long_task:", err)
		if !errors.Is(err, ray.ErrTaskCancelled) {
			return fmt.Errorf("long_task: got %v, want ErrTaskCancelled", err)
		}
		if d := time.Since(start); d > 9*time.Second {
			return fmt.Errorf("cancelling took %v", d)
		}
		// Force would kill the actor: refused.
		if err := ray.Cancel(ctx, count.Remote(ctx, actor), ray.Force()); !errors.Is(err, ray.ErrInvalidOption) {
			return fmt.Errorf("Force on an actor call: %v, want ErrInvalidOption", err)
		}
		// The actor lives on with its state: long_task and the count
		// before were its first two calls.
		n, err := ray.Get(ctx, count.Remote(ctx, actor))
		if err != nil {
			return err
		}
		fmt.Println("calls served, this one included:", n)
		if n != 3 {
			return fmt.Errorf("count = %d, want 3", n)
		}
		return nil
	})
}
