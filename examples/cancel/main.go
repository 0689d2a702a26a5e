// Command cancel mirrors the seed's ray.cancel() example: a long task is
// cancelled while it runs (its context ends), one still queued is removed
// before it runs, and cancelling a finished task does nothing.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

// longTask sleeps 10 s unless its context is cancelled first, as Go code
// that honours ctx does.
var longTask = ray.Func0("examples.long_task", func(ctx context.Context) (string, error) {
	select {
	case <-time.After(10 * time.Second):
		return "done", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
})

var quick = ray.Func1("examples.quick", func(_ context.Context, x int) (int, error) { return x * 2, nil })

func main() {
	ray.Main(func(ctx context.Context) error {
		// One CPU: the second long task waits in the queue behind the first.
		if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 1})); err != nil {
			return err
		}
		start := time.Now()
		running := longTask.Remote(ctx)
		queued := longTask.Remote(ctx)
		// Let the first one start.
		if _, _, err := ray.Wait(ctx, []ray.ObjectRef[string]{running}, 1, 300*time.Millisecond); err != nil {
			return err
		}
		if err := ray.Cancel(ctx, queued); err != nil {
			return err
		}
		if err := ray.Cancel(ctx, running); err != nil {
			return err
		}
		for name, ref := range map[string]ray.ObjectRef[string]{"running": running, "queued": queued} {
			_, err := ray.Get(ctx, ref)
			fmt.Printf("%s long_task: %v\n", name, err)
			if !errors.Is(err, ray.ErrTaskCancelled) {
				return fmt.Errorf("%s long_task: got %v, want ErrTaskCancelled", name, err)
			}
		}
		if d := time.Since(start); d > 9*time.Second {
			return fmt.Errorf("cancelling took %v: the task ran to its end", d)
		}
		// Cancelling a finished task does nothing: its value stays.
		done := quick.Remote(ctx, ray.Val(21))
		v, err := ray.Get(ctx, done)
		if err != nil {
			return err
		}
		if err := ray.Cancel(ctx, done); err != nil {
			return err
		}
		if v2, err := ray.Get(ctx, done); err != nil || v2 != v {
			return fmt.Errorf("after cancelling a finished task: %d, %v", v2, err)
		}
		fmt.Println("finished task kept its value:", v)
		return nil
	})
}
